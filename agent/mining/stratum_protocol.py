"""Stratum V1 messages as pure functions: one JSON line in, a typed, checked value out.

Everything a pool sends is untrusted. Each parser either returns a value whose every
field has been checked (types, hex, lengths, ranges) or raises StratumProtocolError
with a message that says what was wrong, so the connection can be dropped and counted
instead of a bad value reaching the chips or a `KeyError` reaching the event loop.
No I/O here: the client, the test pool and the fuzz tests share it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from hashbay.drivers.errors import ProtocolError
from hashbay.drivers.numbers import finite_in

MAX_JOB_ID_CHARS = 64
MAX_MERKLE_BRANCHES = 32  # 2^32 transactions: far more than any block holds
MAX_COINBASE_PART_BYTES = 64 * 1024
MAX_EXTRANONCE1_BYTES = 16
MAX_EXTRANONCE2_SIZE = 16
MAX_TEXT_CHARS = 200  # pool-supplied text we keep (error reasons, messages)
DIFF1_TARGET = 0xFFFF << 208  # difficulty 1: the "pool difficulty" convention
MAX_TARGET = (1 << 256) - 1
DEFAULT_VERSION_MASK = 0x1FFF_E000

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
_JOB_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_JOB_ID_CHARS}}}")


class StratumProtocolError(ProtocolError):
    """The pool sent something that is not valid Stratum V1."""


@dataclass(frozen=True, slots=True)
class Response:
    """The answer to one of our requests."""

    id: int | str
    result: Any
    error: str | None  # the pool's reason, in words, when it refused


@dataclass(frozen=True, slots=True)
class Call:
    """A notification (id None) or a request the pool sends us."""

    id: int | str | None
    method: str
    params: list[Any]


Message = Response | Call


@dataclass(frozen=True, slots=True)
class Notify:
    """mining.notify: a job template, with every field decoded to header byte orders."""

    job_id: str
    prev_hash: bytes  # 32 bytes, internal (header) order
    coinb1: bytes
    coinb2: bytes
    merkle_branches: tuple[bytes, ...]
    version: int
    nbits: int
    ntime: int
    clean: bool


@dataclass(frozen=True, slots=True)
class Subscription:
    extranonce1: bytes
    extranonce2_size: int


@dataclass(frozen=True, slots=True)
class Reconnect:
    """client.reconnect: where and when the pool asks us to come back."""

    host: str | None
    port: int | None
    wait_s: float


# -- framing ----------------------------------------------------------------------------


def decode_line(line: bytes) -> Message:
    """One line from the pool (without or with its newline) as a Response or a Call."""
    try:
        data = json.loads(line, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise StratumProtocolError(f"not JSON: {_short(str(exc))}") from None
    if not isinstance(data, dict):
        raise StratumProtocolError(f"not a JSON object: {_short(repr(data))}")
    message_id = data.get("id")
    if message_id is not None and not _is_id(message_id):
        raise StratumProtocolError(f"bad message id {_short(repr(message_id))}")
    method = data.get("method")
    if method is not None:
        if not isinstance(method, str) or not method or len(method) > 64:
            raise StratumProtocolError(f"bad method {_short(repr(method))}")
        params = data.get("params", [])
        if params is None:
            params = []
        if not isinstance(params, list):
            raise StratumProtocolError(f"{method}: params must be a list")
        return Call(message_id, method, params)
    if message_id is None:
        raise StratumProtocolError("message has neither a method nor an id")
    if "result" not in data and "error" not in data:
        raise StratumProtocolError("response has neither result nor error")
    error = data.get("error")
    return Response(message_id, data.get("result"), None if error is None else error_text(error))


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def request(message_id: int, method: str, params: list[Any]) -> bytes:
    return encode({"id": message_id, "method": method, "params": params})


def response(message_id: int | str | None, result: Any, error: Any = None) -> bytes:
    return encode({"id": message_id, "result": result, "error": error})


def error_text(error: Any) -> str:
    """A pool's error in words: `[code, "message", data]`, `{"code", "message"}` or a string."""
    if isinstance(error, list) and len(error) >= 2:
        code, text = error[0], error[1]
        if isinstance(text, str):
            return _short(f"{text} ({code})" if _is_int(code) else text)
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        code = error.get("code")
        text = error["message"]
        return _short(f"{text} ({code})" if _is_int(code) else text)
    if isinstance(error, str) and error:
        return _short(error)
    return _short(f"refused: {error!r}")


# -- what the pool sends -----------------------------------------------------------------


def parse_subscribe(result: Any) -> Subscription:
    """mining.subscribe result: `[subscriptions, extranonce1 hex, extranonce2 size]`."""
    if not isinstance(result, list) or len(result) < 3:
        raise StratumProtocolError("subscribe result must be [subscriptions, extranonce1, size]")
    return _extranonce(result[1], result[2], "subscribe")


def parse_set_extranonce(params: list[Any]) -> Subscription:
    if len(params) < 2:
        raise StratumProtocolError("mining.set_extranonce needs [extranonce1, size]")
    return _extranonce(params[0], params[1], "mining.set_extranonce")


def _extranonce(extranonce1: Any, size: Any, where: str) -> Subscription:
    en1 = _hex(extranonce1, f"{where} extranonce1", max_bytes=MAX_EXTRANONCE1_BYTES)
    if not _is_int(size) or not 1 <= size <= MAX_EXTRANONCE2_SIZE:
        raise StratumProtocolError(
            f"{where}: extranonce2 size must be 1..{MAX_EXTRANONCE2_SIZE}, got {_short(repr(size))}"
        )
    return Subscription(en1, size)


def parse_notify(params: list[Any]) -> Notify:
    """mining.notify: job id, prevhash, coinb1, coinb2, branches, version, nbits, ntime,
    clean_jobs."""
    if len(params) < 9:
        raise StratumProtocolError(f"mining.notify needs 9 params, got {len(params)}")
    job_id, prev, coinb1, coinb2, branches, version, nbits, ntime, clean = params[:9]
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise StratumProtocolError(f"mining.notify: bad job id {_short(repr(job_id))}")
    if not isinstance(branches, list) or len(branches) > MAX_MERKLE_BRANCHES:
        raise StratumProtocolError(
            f"mining.notify: merkle branches must be a list of at most {MAX_MERKLE_BRANCHES}"
        )
    if not isinstance(clean, bool):
        raise StratumProtocolError("mining.notify: clean_jobs must be true or false")
    return Notify(
        job_id=job_id,
        prev_hash=swap_words(_hex(prev, "mining.notify prevhash", exact_bytes=32)),
        coinb1=_hex(coinb1, "mining.notify coinb1", max_bytes=MAX_COINBASE_PART_BYTES),
        coinb2=_hex(coinb2, "mining.notify coinb2", max_bytes=MAX_COINBASE_PART_BYTES),
        merkle_branches=tuple(
            _hex(b, f"mining.notify merkle branch {i}", exact_bytes=32)
            for i, b in enumerate(branches)
        ),
        version=_u32(version, "mining.notify version"),
        nbits=_u32(nbits, "mining.notify nbits"),
        ntime=_u32(ntime, "mining.notify ntime"),
        clean=clean,
    )


def parse_difficulty(params: list[Any]) -> float:
    """mining.set_difficulty `[difficulty]`: a positive finite number (fractions allowed)."""
    if not params:
        raise StratumProtocolError("mining.set_difficulty needs a difficulty")
    value = params[0]
    difficulty = finite_in(value, 0, 2.0**128)
    if difficulty is None or difficulty == 0:
        raise StratumProtocolError(
            "mining.set_difficulty: difficulty must be a positive number, "
            f"got {_short(repr(value))}"
        )
    return difficulty


def parse_configure(result: Any) -> int:
    """mining.configure result: the version-rolling mask granted (0 if refused)."""
    if not isinstance(result, dict) or result.get("version-rolling") is not True:
        return 0
    return _u32(result.get("version-rolling.mask"), "mining.configure version-rolling.mask")


def parse_version_mask(params: list[Any]) -> int:
    """mining.set_version_mask `[mask hex]` (BIP 310)."""
    if not params:
        raise StratumProtocolError("mining.set_version_mask needs a mask")
    return _u32(params[0], "mining.set_version_mask")


def parse_reconnect(params: list[Any]) -> Reconnect:
    """client.reconnect `[host, port, wait_s]`, each optional."""
    host = params[0] if len(params) > 0 else None
    port = params[1] if len(params) > 1 else None
    wait = params[2] if len(params) > 2 else 0
    if host is not None and (not isinstance(host, str) or not 0 < len(host) <= 253):
        raise StratumProtocolError(f"client.reconnect: bad host {_short(repr(host))}")
    if isinstance(port, str) and port.isdigit() and len(port) <= 5:
        port = int(port)
    if port is not None and (not _is_int(port) or not 1 <= port <= 65535):
        raise StratumProtocolError(f"client.reconnect: bad port {_short(repr(port))}")
    wait_s = finite_in(wait, 0, 86400)
    if wait_s is None:
        raise StratumProtocolError(f"client.reconnect: bad wait {_short(repr(wait))}")
    return Reconnect(host or None, port, wait_s)


# -- what we send ----------------------------------------------------------------------


def submit_params(
    user: str,
    *,
    job_id: str,
    extranonce2: bytes,
    ntime: int,
    nonce: int,
    version_bits: int | None,
) -> list[Any]:
    """mining.submit params; version_bits (the rolled bits, BIP 310) only when rolling."""
    params: list[Any] = [user, job_id, extranonce2.hex(), f"{ntime:08x}", f"{nonce:08x}"]
    if version_bits is not None:
        params.append(f"{version_bits:08x}")
    return params


def configure_params(mask: int = DEFAULT_VERSION_MASK) -> list[Any]:
    return [
        ["version-rolling"],
        {"version-rolling.mask": f"{mask:08x}", "version-rolling.min-bit-count": 2},
    ]


# -- difficulty and byte orders --------------------------------------------------------


def target_of(difficulty: float) -> int:
    """The largest hash value a share of this pool difficulty may have."""
    if not math.isfinite(difficulty) or difficulty <= 0:
        raise ValueError(f"difficulty must be positive and finite, got {difficulty}")
    return min(MAX_TARGET, int(Fraction(DIFF1_TARGET) / Fraction(difficulty)))


def difficulty_of(hash_value: int) -> float:
    """The pool difficulty a hash meets (how share difficulty is reported)."""
    return DIFF1_TARGET / max(hash_value, 1)


def swap_words(data: bytes) -> bytes:
    """Reverse the bytes of each 32-bit word: Stratum's prevhash ↔ header order."""
    return b"".join(data[i : i + 4][::-1] for i in range(0, len(data), 4))


# -- helpers ---------------------------------------------------------------------------


def _hex(value: Any, what: str, *, exact_bytes: int | None = None, max_bytes: int = 0) -> bytes:
    limit = exact_bytes if exact_bytes is not None else max_bytes
    if not isinstance(value, str) or len(value) > 2 * limit or not _HEX.fullmatch(value):
        raise StratumProtocolError(f"{what}: must be hex of at most {limit} bytes")
    data = bytes.fromhex(value)
    if exact_bytes is not None and len(data) != exact_bytes:
        raise StratumProtocolError(f"{what}: must be {exact_bytes} bytes, got {len(data)}")
    return data


def _u32(value: Any, what: str) -> int:
    """A 32-bit field sent as 8 hex digits (big-endian text of the number)."""
    if not isinstance(value, str) or len(value) != 8 or not _HEX.fullmatch(value):
        raise StratumProtocolError(f"{what}: must be 8 hex digits, got {_short(repr(value))}")
    return int(value, 16)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _is_id(value: Any) -> bool:
    return (_is_int(value) and abs(value) < 2**53) or (isinstance(value, str) and len(value) <= 64)


def _short(text: str) -> str:
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 3] + "..."
