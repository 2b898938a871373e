"""The technician control socket: a Unix socket in the runtime directory (`hashbay` CLI).

Who may do what is decided by the kernel's word on the peer (SO_PEERCRED), never by
anything the client says: anyone who can open the socket (mode 0660, group
`control.group`) may read; root and members of `control.admin_group` may also change
things (prepare a swap, power target, fans, quiet mode, curtailment, tuning, reset).

Every client is served by its own task and nothing a client does can hold up the agent:
frames are size-limited and must arrive in time once begun, replies and events wait at
most `control.send_timeout_s` for a client that does not read (then it is disconnected),
and each event subscription is a bounded queue that drops its oldest and says so. See
`hashbay.agent.interfaces.control_protocol` for the wire format and the ops.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from hashbay import __version__
from hashbay.agent.core.events import EventBus, Subscription
from hashbay.agent.core.quoting import quote
from hashbay.agent.interfaces.commands import (
    COMMANDS,
    CommandError,
    CommandHandler,
    parse_command_mapping,
)
from hashbay.agent.interfaces.control_protocol import (
    COMMAND_OP,
    HEADER,
    MAX_REQUEST_BYTES,
    OPS,
    PROTOCOL_VERSION,
    ControlProtocolError,
    ErrorCode,
    Request,
    decode_body,
    encode_frame,
    error_reply,
    event_message,
    frame_length,
    ok_reply,
    parse_request,
)

if TYPE_CHECKING:
    from hashbay.agent.core.state import AgentState
    from hashbay.drivers.bm13xx.chain import Bm13xxChain
from hashbay.agent.interfaces.control_settings import ControlSettings

log = structlog.get_logger("hashbay.control")

DEFAULT_EVENTS = 20
FANS_KEYS = ("fans", "psu", "psu_problems", "fan_noise_dba", "thermal", "power")
LINGER_S = 1.0  # after a fatal error, unread input is drained this long so the reply arrives
LINGER_BYTES = 1 << 20
MAX_UNIX_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


@dataclass(frozen=True)
class Peer:
    """The connecting process as the kernel saw it at connect()."""

    pid: int
    uid: int
    gid: int


def peer_of(sock: socket.socket) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


class Authorizer:
    """May this peer change things? Root, or a member of the admin group.

    Membership is the peer's primary gid or a supplementary group of its user name as
    the system's group database lists it (SO_PEERCRED carries no supplementary groups).
    """

    def __init__(self, admin_group: str) -> None:
        self.admin_group = admin_group

    def may_change(self, peer: Peer) -> bool:
        if peer.uid == 0:
            return True
        try:
            admin_gid = grp.getgrnam(self.admin_group).gr_gid
        except KeyError:
            return False
        if peer.gid == admin_gid:
            return True
        try:
            user = pwd.getpwuid(peer.uid).pw_name
        except KeyError:
            return False
        return admin_gid in os.getgrouplist(user, peer.gid)


def chip_rows(chain: Bm13xxChain | None) -> list[dict[str, Any]]:
    """Per-chip counters of an enumerated chain (in memory; no bus traffic)."""
    if chain is None or chain.info is None:
        return []
    freqs = chain.freq_mhz
    return [
        {
            "chip": n,
            "freq_mhz": freqs[n] if n < len(freqs) else None,
            "nonces": c.nonces,
            "hw_errors": c.hw_errors,
            "timeouts": c.timeouts,
        }
        for n, c in enumerate(chain.counters.chips)
    ]


@dataclass
class ServerStats:
    connections: int = 0
    requests: int = 0
    errors: int = 0
    denied: int = 0
    busy: int = 0
    slow_disconnects: int = 0


class ControlServer:
    """Serves the control socket at `path` until cancelled; `run` is the supervised service."""

    def __init__(
        self,
        settings: ControlSettings,
        path: Path,
        *,
        state: AgentState,
        events: EventBus,
        handle: CommandHandler,
        slots: int,
        authorizer: Authorizer | None = None,
        chips: Callable[[int], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.settings = settings
        self.path = path
        self._state = state
        self._events = events
        self._handle = handle
        self.slots = slots
        self.authorizer = authorizer or Authorizer(settings.admin_group)
        self._chips = chips
        self._clients: set[asyncio.Task[None]] = set()
        self._per_uid: dict[int, int] = {}
        self.stats = ServerStats()
        self.ready = asyncio.Event()

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def run(self) -> None:
        sock = self._bind()
        try:
            server = await asyncio.start_unix_server(self._serve_client, sock=sock)
        except BaseException:
            sock.close()
            raise
        log.info("control socket listening", path=str(self.path))
        self.ready.set()
        try:
            async with server:
                await server.serve_forever()
        finally:
            self.ready.clear()
            for task in list(self._clients):
                task.cancel()
            for task in list(self._clients):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(OSError):
                self.path.unlink()

    def _bind(self) -> socket.socket:
        """Bound, permissions set, then listening: nobody can connect before 0660 holds."""
        if len(os.fsencode(self.path)) > MAX_UNIX_PATH:
            raise OSError(
                f"{self.path}: too long for a Unix socket ({MAX_UNIX_PATH} bytes at most); "
                "choose a shorter agent.runtime_dir"
            )
        if _in_use(self.path):
            raise OSError(f"{self.path}: another agent is serving this control socket")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
            os.chmod(self.path, 0o660)
            self._set_group()
            sock.listen(min(self.settings.max_clients, socket.SOMAXCONN))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _set_group(self) -> None:
        try:
            gid = grp.getgrnam(self.settings.group).gr_gid
        except KeyError:
            log.info("control socket group does not exist; keeping ours", group=self.settings.group)
            return
        try:
            os.chown(self.path, -1, gid)
        except OSError as exc:
            log.warning(
                "control socket group not set (is the agent's user in the group?)",
                group=self.settings.group,
                error=str(exc),
            )

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        self.stats.connections += 1
        client = _Client(self, reader, writer)
        counted = False
        try:
            await client.identify()
            refusal = self._admission(client)
            if refusal is not None:
                self.stats.busy += 1
                await client.fail(ControlProtocolError(ErrorCode.BUSY, refusal))
                return
            self._per_uid[client.peer.uid] = self._per_uid.get(client.peer.uid, 0) + 1
            counted = True
            await client.serve()
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            client.close()
            self._clients.discard(task)
            if counted:
                self._release(client.peer.uid)

    def _admission(self, client: _Client) -> str | None:
        """Why this connection is turned away, or None. One user cannot take every
        connection, and the last `reserved_for_admins` are kept for those who may change."""
        settings = self.settings
        served = sum(self._per_uid.values())  # admitted and not yet gone
        if served >= settings.max_clients:
            return f"the agent already serves {settings.max_clients} clients; try again shortly"
        if not client.may_change:
            if served >= settings.max_clients - settings.reserved_for_admins:
                return "the remaining connections are kept for administrators; try again shortly"
            if self._per_uid.get(client.peer.uid, 0) >= settings.max_clients_per_user:
                return (
                    f"uid {client.peer.uid} already holds {settings.max_clients_per_user} "
                    "connections; close one and try again"
                )
        return None

    def _release(self, uid: int) -> None:
        left = self._per_uid.get(uid, 0) - 1
        if left > 0:
            self._per_uid[uid] = left
        else:
            self._per_uid.pop(uid, None)

    # -- answers ----------------------------------------------------------------------------

    async def answer(self, request: Request, client: _Client) -> Any:
        op = request.op
        if op == "hello":
            return {
                "protocol": PROTOCOL_VERSION,
                "agent_version": __version__,
                "name": self._state.name,
                "slots": self.slots,
                "may_change": client.may_change,
                "peer": {"uid": client.peer.uid, "gid": client.peer.gid, "pid": client.peer.pid},
                "admin_group": self.settings.admin_group,
                "ops": list(OPS),
                "commands": list(COMMANDS),
            }
        if op == "status":
            return {"miner": self._state.miner_json(), "slots": self._slot_list()}
        if op == "slots":
            return {"slots": self._slot_list()}
        if op == "slot":
            return self._slot_detail(int(request.args["slot"]))
        if op == "fans":
            return self._fans()
        if op == "events":
            limit = int(request.args.get("limit", DEFAULT_EVENTS))
            return {"events": [e.to_json() for e in self._events.recent(limit)]}
        if op == "subscribe":
            client.subscribe(self._events)
            return {"subscribed": True}
        if op == COMMAND_OP:
            return await self._command(request, client)
        raise ControlProtocolError(ErrorCode.UNKNOWN_OP, f"op {op!r} is not served", request.id)

    def _slot_list(self) -> list[dict[str, Any]]:
        return [s.to_json() for s in self._state.slot_statuses()]

    def _slot_detail(self, slot: int) -> dict[str, Any]:
        statuses = {s.slot: s for s in self._state.slot_statuses()}
        status = statuses.get(slot)
        detail: dict[str, Any] = {"status": status.to_json() if status else None}
        detail["chips"] = self._chips(slot) if self._chips is not None else []
        return detail

    def _fans(self) -> dict[str, Any]:
        miner = self._state.miner_json()
        return {key: miner.get(key) for key in FANS_KEYS}

    async def _command(self, request: Request, client: _Client) -> Any:
        peer = client.peer
        if not client.may_change:
            self.stats.denied += 1
            log.warning(
                "control change denied", uid=peer.uid, pid=peer.pid, args=quote(request.args, 200)
            )
            raise ControlProtocolError(
                ErrorCode.DENIED,
                f"changing needs root or membership of group '{self.settings.admin_group}' "
                f"(you are uid {peer.uid}, gid {peer.gid}); reading is allowed",
                request.id,
            )
        try:
            command = parse_command_mapping(request.args, slots=self.slots)
        except CommandError as exc:
            raise ControlProtocolError(ErrorCode.INVALID, str(exc), request.id) from None
        bound = log.bind(command=command.name, uid=peer.uid, pid=peer.pid, **command.args)
        bound.info("control command")
        try:
            return await self._handle(command)
        except CommandError as exc:
            bound.warning("control command refused", error=str(exc))
            raise ControlProtocolError(ErrorCode.REFUSED, str(exc), request.id) from None
        except Exception as exc:
            bound.exception("control command failed")
            raise ControlProtocolError(
                ErrorCode.FAILED, f"{command.name} failed inside the agent: {exc}", request.id
            ) from None


class _Client:
    """One connection: requests in order, replies and streamed events out."""

    def __init__(
        self, server: ControlServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._server = server
        self._settings = server.settings
        self._reader = reader
        self._writer = writer
        self._write_lock = asyncio.Lock()
        self._subscription: Subscription | None = None
        self._events: EventBus | None = None
        self._forwarder: asyncio.Task[None] | None = None
        self.peer = Peer(0, -1, -1)
        self.may_change = False

    async def identify(self) -> None:
        """Who connected, as the kernel says, and whether they may change things."""
        sock = self._writer.get_extra_info("socket")
        self.peer = peer_of(sock)
        self.may_change = await asyncio.to_thread(self._server.authorizer.may_change, self.peer)

    async def serve(self) -> None:
        while True:
            try:
                message = await self._read_frame()
                if message is None:
                    return
                request = parse_request(message, slots=self._server.slots)
            except ControlProtocolError as exc:
                await self.fail(exc)
                if exc.fatal:
                    return
                continue
            self._server.stats.requests += 1
            try:
                result = await self._server.answer(request, self)
            except ControlProtocolError as exc:
                await self.fail(exc)
                continue
            except Exception as exc:
                log.exception("control request failed", op=request.op)
                text = quote(exc, 200)
                await self.fail(ControlProtocolError(ErrorCode.FAILED, text, request.id))
                continue
            await self._send_result(request.id, result)

    async def _read_frame(self) -> dict[str, Any] | None:
        """The next frame's map; None at a clean end of the stream.

        A client may sit idle between requests for as long as it likes (a subscriber
        does), but once a frame's first byte is in, the rest of it, length prefix
        included, must follow within `request_timeout_s`."""
        first = await self._reader.read(1)
        if not first:
            return None
        try:
            async with asyncio.timeout(self._settings.request_timeout_s):
                header = first + await self._reader.readexactly(HEADER.size - 1)
                length = frame_length(header, MAX_REQUEST_BYTES)
                body = await self._reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise ControlProtocolError(ErrorCode.BAD_FRAME, "stream ended inside a frame") from None
        except TimeoutError:
            raise ControlProtocolError(
                ErrorCode.BAD_FRAME,
                f"frame incomplete after {self._settings.request_timeout_s:g} s",
            ) from None
        return decode_body(body)

    async def _send_result(self, rid: int, result: Any) -> None:
        try:
            frame = encode_frame(ok_reply(rid, result))
        except ControlProtocolError as exc:
            log.error("control reply not encodable", error=str(exc))
            await self.fail(ControlProtocolError(ErrorCode.FAILED, str(exc), rid))
            return
        await self._send(frame)

    async def fail(self, exc: ControlProtocolError) -> None:
        self._server.stats.errors += 1
        await self._send(encode_frame(error_reply(exc.request_id, exc.code, str(exc))))
        if exc.fatal or exc.code is ErrorCode.BUSY:
            await self._linger()

    async def _send(self, frame: bytes) -> None:
        async with self._write_lock:
            self._writer.write(frame)
            try:
                async with asyncio.timeout(self._settings.send_timeout_s):
                    await self._writer.drain()
            except TimeoutError:
                self._server.stats.slow_disconnects += 1
                log.warning("control client not reading; disconnected", pid=self.peer.pid)
                self._writer.transport.abort()
                raise

    async def _linger(self) -> None:
        """Say no more, then swallow what the client is still sending, briefly, so the
        error reply is not destroyed by a reset before the client reads it."""
        with contextlib.suppress(OSError, RuntimeError):
            if self._writer.can_write_eof():
                self._writer.write_eof()
        drained = 0
        with contextlib.suppress(TimeoutError, OSError, asyncio.IncompleteReadError):
            async with asyncio.timeout(LINGER_S):
                while drained < LINGER_BYTES:
                    chunk = await self._reader.read(65536)
                    if not chunk:
                        break
                    drained += len(chunk)

    def subscribe(self, events: EventBus) -> None:
        if self._subscription is not None:
            return
        self._events = events
        self._subscription = events.subscribe()
        self._forwarder = asyncio.create_task(self._forward(self._subscription))

    async def _forward(self, subscription: Subscription) -> None:
        try:
            while True:
                event = await subscription.get()
                try:
                    frame = encode_frame(event_message(event.to_json(), subscription.dropped))
                except ControlProtocolError as exc:  # one odd event must not end the stream
                    log.error("event not encodable for the control socket", error=str(exc))
                    continue
                await self._send(frame)
        except (ConnectionError, TimeoutError, OSError):
            self._writer.transport.abort()  # the reading side notices and ends the client

    def close(self) -> None:
        if self._forwarder is not None:
            self._forwarder.cancel()
        if self._events is not None and self._subscription is not None:
            self._events.unsubscribe(self._subscription)
        self._writer.close()


def _in_use(path: Path) -> bool:
    """Whether something is listening on the socket file already."""
    if not path.exists():
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True
