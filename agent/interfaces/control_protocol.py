"""The control socket's wire format, shared by the agent (server) and `hashbay` (client).

Pure functions over bytes and decoded values, no I/O, so every rule here is fuzzed on its
own. A frame is a 4-byte big-endian length followed by that many bytes of one msgpack map.

Requests (client to agent):

    {"v": 1, "id": 7, "op": "slot", "args": {"slot": 1}}

Replies carry the request's id:

    {"v": 1, "id": 7, "ok": true, "result": {...}}
    {"v": 1, "id": 7, "ok": false, "error": {"code": "denied", "message": "..."}}

After `subscribe`, events arrive between replies, without an id:

    {"v": 1, "event": {...Event.to_json()...}, "dropped": 0}

`dropped` counts the events this connection lost because it read too slowly.

A frame that cannot be a request (bad length, not msgpack, not a map, no usable `v`/`id`)
is answered with an error and the connection is closed: after garbage the byte stream
cannot be trusted to be in step. A well-formed request that asks for something wrong
(unknown op, bad argument, not allowed) only gets an error reply.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import msgpack  # type: ignore[import-untyped]

from hashbay.agent.core.rules import SLOT, Arg
from hashbay.drivers.errors import ProtocolError

PROTOCOL_VERSION = 1
HEADER = struct.Struct(">I")
MAX_REQUEST_BYTES = 64 * 1024  # what the agent accepts from a client
MAX_REPLY_BYTES = 8 * 1024 * 1024  # what a client accepts from the agent
MAX_ID = 2**53  # ids survive a JSON round trip in scripts
_CONTAINER_ITEMS = 4096  # per msgpack array or map: bounds memory before validation
MAX_DEPTH = 8  # maps and arrays inside each other; a request needs 3


class ErrorCode(enum.StrEnum):
    BAD_FRAME = "bad_frame"  # not a length-prefixed msgpack map: connection closed
    TOO_LARGE = "too_large"  # frame longer than allowed: connection closed
    VERSION = "version"  # protocol version not spoken: connection closed
    BAD_REQUEST = "bad_request"  # a map, but not a request; connection closed
    UNKNOWN_OP = "unknown_op"
    BAD_ARGS = "bad_args"
    DENIED = "denied"  # peer credentials do not allow changes
    INVALID = "invalid"  # the command is not a valid command
    REFUSED = "refused"  # a valid command the agent cannot carry out now
    FAILED = "failed"  # the agent failed while carrying it out
    BUSY = "busy"  # too many clients


FATAL = frozenset(
    {ErrorCode.BAD_FRAME, ErrorCode.TOO_LARGE, ErrorCode.VERSION, ErrorCode.BAD_REQUEST}
)


class ControlProtocolError(ProtocolError):
    """A frame or request broke the protocol; `code` goes back to the client."""

    def __init__(self, code: ErrorCode, message: str, request_id: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id

    @property
    def fatal(self) -> bool:
        """Whether the connection must be closed after the error reply."""
        return self.code in FATAL


@dataclass(frozen=True)
class Count:
    """A whole number in a range (how many events to list)."""

    min: int
    max: int

    def describe(self, slots: int) -> str:
        return f"an integer from {self.min} to {self.max}"

    def accepts(self, value: Any, slots: int) -> bool:
        return type(value) is int and self.min <= value <= self.max


@dataclass(frozen=True)
class OpSpec:
    name: str
    doc: str
    args: Mapping[str, Arg] = field(default_factory=dict, hash=False)
    optional: frozenset[str] = frozenset()
    changes: bool = False  # needs root or the admin group


COMMAND_OP = "command"
OPS: Mapping[str, OpSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            OpSpec("hello", "Protocol and agent version; whether this connection may change."),
            OpSpec("status", "The miner summary and every slot's status."),
            OpSpec("slots", "Every slot's status."),
            OpSpec(
                "slot",
                "One slot in detail: state, health and its reasons, prediction, rails, chips.",
                {"slot": SLOT},
            ),
            OpSpec("fans", "Fans, PSU and the operator controls in force."),
            OpSpec(
                "events",
                "The most recent events, oldest first (default 20).",
                {"limit": Count(1, 1000)},
                optional=frozenset({"limit"}),
            ),
            OpSpec("subscribe", "Stream every new event on this connection from now on."),
            OpSpec(
                COMMAND_OP,
                'Carry out a command: args is the command, e.g. {"command": "locate", '
                '"slot": 1, "mode": "blink"} (see the command table).',
                changes=True,
            ),
        )
    }
)


@dataclass(frozen=True)
class Request:
    id: int
    op: str
    args: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Reply:
    id: int | None
    ok: bool
    result: Any = None
    error_code: str = ""
    error_message: str = ""


@dataclass(frozen=True)
class EventFrame:
    event: Mapping[str, Any]
    dropped: int = 0


# -- frames -------------------------------------------------------------------------------


def encode_frame(message: Mapping[str, Any], limit: int = MAX_REPLY_BYTES) -> bytes:
    """Length prefix + msgpack; raises ControlProtocolError(TOO_LARGE) beyond `limit`."""
    try:
        body: bytes = msgpack.packb(message, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ControlProtocolError(ErrorCode.FAILED, f"cannot encode message: {exc}") from None
    if len(body) > limit:
        raise ControlProtocolError(
            ErrorCode.TOO_LARGE, f"message is {len(body)} bytes; at most {limit} allowed"
        )
    return HEADER.pack(len(body)) + body


def frame_length(header: bytes, limit: int = MAX_REQUEST_BYTES) -> int:
    """The body length a 4-byte header announces, checked against `limit`."""
    if len(header) != HEADER.size:
        raise ControlProtocolError(ErrorCode.BAD_FRAME, "frame header must be 4 bytes")
    (length,) = HEADER.unpack(header)
    if length > limit:
        raise ControlProtocolError(
            ErrorCode.TOO_LARGE, f"frame of {length} bytes; at most {limit} are accepted"
        )
    if length == 0:
        raise ControlProtocolError(ErrorCode.BAD_FRAME, "empty frame")
    return int(length)


def decode_body(body: bytes) -> dict[str, Any]:
    """One msgpack map with text keys, strictly: no trailing bytes, no extension types."""
    try:
        value = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=len(body),
            max_bin_len=len(body),
            max_array_len=_CONTAINER_ITEMS,
            max_map_len=_CONTAINER_ITEMS,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises a zoo of types on bad input
        raise ControlProtocolError(
            ErrorCode.BAD_FRAME, f"frame is not valid msgpack: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(value, dict):
        raise ControlProtocolError(
            ErrorCode.BAD_FRAME, f"frame must hold a msgpack map, got {_kind(value)}"
        )
    if not all(isinstance(key, str) for key in value):
        raise ControlProtocolError(ErrorCode.BAD_FRAME, "frame map keys must be text")
    if _nested_deeper_than(value, MAX_DEPTH):
        raise ControlProtocolError(
            ErrorCode.BAD_FRAME, f"frame nests maps and arrays deeper than {MAX_DEPTH} levels"
        )
    return value


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether containers nest more than `limit` deep; iterative, so any depth is safe."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


class FrameDecoder:
    """Splits a byte stream into decoded frames, however the bytes were chunked."""

    def __init__(self, limit: int = MAX_REPLY_BYTES) -> None:
        self._limit = limit
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        self._buffer += data
        while len(self._buffer) >= HEADER.size:
            length = frame_length(bytes(self._buffer[: HEADER.size]), self._limit)
            end = HEADER.size + length
            if len(self._buffer) < end:
                return
            body = bytes(self._buffer[HEADER.size : end])
            del self._buffer[:end]
            yield decode_body(body)

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buffer)


# -- requests (server side) ---------------------------------------------------------------


def request_id(message: Mapping[str, Any]) -> int | None:
    """The request's id if it is usable, so even an error reply can be matched."""
    value = message.get("id")
    return value if type(value) is int and 0 <= value <= MAX_ID else None


def parse_request(message: Mapping[str, Any], *, slots: int) -> Request:
    """Validate a decoded request map; the `command` op's args are checked by the caller."""
    rid = request_id(message)
    extra = sorted(set(message) - {"v", "id", "op", "args"})
    if extra:
        raise ControlProtocolError(
            ErrorCode.BAD_REQUEST, f"unexpected request key {extra[0]!r}", rid
        )
    version = message.get("v")
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise ControlProtocolError(
            ErrorCode.VERSION,
            f"protocol version {version!r} is not spoken here; this agent speaks "
            f"version {PROTOCOL_VERSION}",
            rid,
        )
    if rid is None:
        raise ControlProtocolError(
            ErrorCode.BAD_REQUEST, f"request id must be an integer from 0 to {MAX_ID}"
        )
    op = message.get("op")
    spec = OPS.get(op) if isinstance(op, str) else None
    if spec is None:
        raise ControlProtocolError(
            ErrorCode.UNKNOWN_OP, f"unknown op {_short(op)}; known ops: {', '.join(OPS)}", rid
        )
    args = message.get("args", {})
    if not isinstance(args, dict):
        raise ControlProtocolError(
            ErrorCode.BAD_ARGS, f"{op}: args must be a map, got {_kind(args)}", rid
        )
    if spec.name != COMMAND_OP:
        _check_args(spec, args, slots, rid)
    return Request(rid, spec.name, MappingProxyType(args))


def _check_args(spec: OpSpec, args: Mapping[str, Any], slots: int, rid: int) -> None:
    for key in args:
        if key not in spec.args:
            takes = ", ".join(spec.args) or "no arguments"
            raise ControlProtocolError(
                ErrorCode.BAD_ARGS,
                f"{spec.name}: unexpected argument {_short(key)}; takes {takes}",
                rid,
            )
    for key, rule in spec.args.items():
        if key not in args:
            if key in spec.optional:
                continue
            raise ControlProtocolError(
                ErrorCode.BAD_ARGS, f"{spec.name}: missing {key} ({rule.describe(slots)})", rid
            )
        if not rule.accepts(args[key], slots):
            raise ControlProtocolError(
                ErrorCode.BAD_ARGS,
                f"{spec.name}: {key} must be {rule.describe(slots)}, got {_short(args[key])}",
                rid,
            )


def to_wire(value: Any, depth: int = 0) -> Any:
    """What any agent value becomes on the wire: maps with text keys, arrays, scalars; an
    unknown type as its text. Clients decode strictly, so the agent must send plainly."""
    if value is None or isinstance(value, bool | str | bytes | float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if depth > 32:
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_wire(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_wire(v, depth + 1) for v in value]
    return str(value)


def ok_reply(rid: int, result: Any) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "id": rid, "ok": True, "result": to_wire(result)}


def error_reply(rid: int | None, code: ErrorCode, message: str) -> dict[str, Any]:
    error = {"code": code.value, "message": message}
    return {"v": PROTOCOL_VERSION, "id": rid, "ok": False, "error": error}


def event_message(event: Mapping[str, Any], dropped: int) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "event": to_wire(event), "dropped": dropped}


# -- requests and replies (client side) ---------------------------------------------------


def request_message(rid: int, op: str, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "id": rid, "op": op, "args": dict(args or {})}


def parse_server_message(message: Mapping[str, Any]) -> Reply | EventFrame:
    """A message from the agent, checked: a client must not crash on a confused server."""
    if message.get("v") != PROTOCOL_VERSION:
        raise ControlProtocolError(
            ErrorCode.VERSION, f"agent speaks protocol version {message.get('v')!r}"
        )
    if "event" in message:
        event = message["event"]
        dropped = message.get("dropped", 0)
        if not isinstance(event, dict) or type(dropped) is not int:
            raise ControlProtocolError(ErrorCode.BAD_FRAME, "malformed event message")
        return EventFrame(event, dropped)
    ok = message.get("ok")
    if not isinstance(ok, bool):
        raise ControlProtocolError(ErrorCode.BAD_FRAME, "reply without a boolean 'ok'")
    rid = request_id(message)
    if ok:
        return Reply(rid, True, message.get("result"))
    error = message.get("error")
    if not isinstance(error, dict):
        raise ControlProtocolError(ErrorCode.BAD_FRAME, "error reply without an error map")
    return Reply(rid, False, None, str(error.get("code", "")), str(error.get("message", "")))


def _kind(value: Any) -> str:
    kinds = {list: "an array", str: "text", bytes: "binary data", bool: "a boolean"}
    kinds |= {type(None): "nil", int: "an integer", float: "a number", dict: "a map"}
    return kinds.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
