"""The miner API on TCP 4028, cgminer-compatible, so fleet tools read hashbay unchanged.

One request per connection, as cgminer does: the client sends a JSON request
(`{"command": "summary", "parameter": ""}`, or `"summary+devs"` for several at once) or a
plain-text one (`summary`, `asc|0`), the agent answers with one NUL-terminated reply and
closes. Replies are built from the agent's state only (`miner_api_replies`); a request
never waits for hardware.

Read-only by default. With `api.allow_changes`, clients from `api.allowed_addresses` may
also send `ascdisable|N` (prepare slot N's module for removal: drain and power off),
`ascenable|N` (cancel that) and `ascidentify|N` (blink its locate LED); each goes through
the same command validation and handler as the control socket and MQTT. Everyone else
gets cgminer's "Access denied" reply. Malformed, unknown, oversized or too slow requests
get a STATUS=E reply (when there is still a connection to send it on).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from hashbay import __version__
from hashbay.agent.interfaces import miner_api_fleet as fleet
from hashbay.agent.interfaces import miner_api_pools as pool_edits
from hashbay.agent.interfaces import miner_api_replies as replies
from hashbay.agent.interfaces.commands import (
    Command,
    CommandError,
    CommandHandler,
    parse_command_mapping,
)
from hashbay.agent.interfaces.miner_api_replies import (
    MAX_REQUEST_BYTES,
    ApiReply,
    ApiRequest,
    Code,
    DeviceCounters,
    FanView,
    MinerView,
    PoolView,
    RequestError,
    Severity,
    WorkMeter,
)

if TYPE_CHECKING:
    from hashbay.agent.core.state import AgentState
    from hashbay.agent.mining.pool_settings import PoolSettings
    from hashbay.drivers.bm13xx.chain import Bm13xxChain
from hashbay.agent.interfaces.api_settings import ApiSettings

log = structlog.get_logger("hashbay.api")

METER_PERIOD_S = 5.0  # work counters are looked at at least this often
LISTEN_RETRY_S = 30.0


# API command -> (hashbay command builder, success code, success message)
_CHANGES: dict[str, tuple[Callable[[int], dict[str, Any]], int, str]] = {
    "ascdisable": (
        lambda slot: {"command": "prepare_swap", "slot": slot},
        Code.ASC_DISABLED,
        "ASC {slot} set disable flag",
    ),
    "ascenable": (
        lambda slot: {"command": "cancel_swap", "slot": slot},
        Code.ASC_ENABLED,
        "ASC {slot} sent enable message",
    ),
    "ascidentify": (
        lambda slot: {"command": "locate", "slot": slot, "mode": "blink"},
        Code.ASC_IDENTIFY,
        "Identify command sent to ASC{slot}",
    ),
}
_SPECIAL = frozenset({"check", "privileged"})
_READS = {**replies.READS, **fleet.READS}
_EDITS = frozenset(fleet.CHANGES) | frozenset(pool_edits.EDITS)
KNOWN = frozenset(_READS) | frozenset(_CHANGES) | _EDITS | _SPECIAL
BUILD = time.strftime(  # when the agent's code was installed: bmminer's CompileTime
    "%a %b %d %H:%M:%S UTC %Y", time.gmtime(Path(__file__).resolve().stat().st_mtime)
)


def device_counters(chain: Bm13xxChain | None) -> DeviceCounters | None:
    """A chain's cumulative counters (in memory; no bus traffic), None if not enumerated."""
    if chain is None or chain.info is None:
        return None
    counters = chain.counters
    freqs = [f for f in chain.freq_mhz if f > 0]
    return DeviceCounters(
        nonces=counters.nonces,
        hw_errors=counters.hw_errors,
        work_hashes=sum(c.work for c in counters.chips),
        chips=len(counters.chips),
        freq_mhz=sum(freqs) / len(freqs) if freqs else 0.0,
    )


class MinerApiServer:
    """Serves the API until cancelled; `run` is the supervised service. `port` is the bound
    port once `ready` is set (useful with `api.port = 0`)."""

    def __init__(
        self,
        settings: ApiSettings,
        *,
        state: AgentState,
        handle: CommandHandler,
        slots: int,
        devices: Callable[[], Sequence[DeviceCounters | None]] = list,
        pools: Callable[[], Sequence[PoolView]] = list,
        governed: Callable[[], tuple[str, float | None]] = lambda: ("run", None),
        clock: Callable[[], float] = time.time,
        pool_list: Callable[[], tuple[PoolSettings, ...]] = tuple,
    ) -> None:
        self.settings = settings
        self._state = state
        self._handle = handle
        self._slots = slots
        self._devices = devices
        self._pools = pools
        self._governed = governed
        self._clock = clock
        self._pool_list = pool_list
        self._meter = WorkMeter()
        self._allowed = [ipaddress.ip_network(a, strict=False) for a in settings.allowed_addresses]
        self._clients: set[asyncio.Task[None]] = set()
        self.port: int | None = None
        self.ready = asyncio.Event()
        self.requests = 0

    async def run(self) -> None:
        settings = self.settings
        while True:
            try:
                server = await asyncio.start_server(
                    self._serve_client,
                    host=settings.bind,
                    port=settings.port,
                    reuse_address=True,
                    limit=MAX_REQUEST_BYTES,
                )
                break
            except OSError as exc:  # address in use or not ours: not worth a restart storm
                log.error(
                    "miner API cannot listen; retrying",
                    bind=settings.bind,
                    port=settings.port,
                    error=str(exc),
                    retry_in_s=LISTEN_RETRY_S,
                )
                await asyncio.sleep(LISTEN_RETRY_S)
        self.port = int(server.sockets[0].getsockname()[1])
        log.info("miner API listening", bind=settings.bind, port=self.port)
        self.ready.set()
        try:
            async with server:
                while True:
                    self._observe()
                    await asyncio.sleep(METER_PERIOD_S)
        finally:
            self.ready.clear()
            for task in list(self._clients):
                task.cancel()
            for task in list(self._clients):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _observe(self) -> None:
        self._meter.observe(self._clock(), list(self._devices()))

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            if len(self._clients) > self.settings.max_clients:
                return
            async with asyncio.timeout(self.settings.timeout_s):
                raw = await _read_request(reader, self.settings.timeout_s / 2)
                if not raw:  # a connection probe: nothing asked, nothing to answer
                    return
                host = _host(writer.get_extra_info("peername"))
                reply = await self.answer(raw, host)
                writer.write(reply)
                await writer.drain()
        except (ConnectionError, TimeoutError, OSError):
            pass
        except Exception:
            log.exception("miner API request failed")
        finally:
            writer.close()
            self._clients.discard(task)

    async def answer(self, raw: bytes, host: str | None) -> bytes:
        """The complete reply (NUL-terminated) to one request's bytes."""
        self.requests += 1
        view = self.view()
        description = view.description
        try:
            request = replies.parse_request(raw)
        except RequestError as exc:
            if exc.json:
                return replies.render_json([("", exc.reply)], view.now, description, joined=False)
            return replies.render_text(exc.reply, view.now, description)
        joined = len(request.commands) > 1
        answered = []
        for name in request.commands:
            answered.append((name, await self._one(name, request, view, host, joined=joined)))
        if request.json:
            return replies.render_json(answered, view.now, description, joined=joined)
        return replies.render_text(answered[0][1], view.now, description)

    async def _one(
        self, name: str, request: ApiRequest, view: MinerView, host: str | None, *, joined: bool
    ) -> ApiReply:
        reader = _READS.get(name)
        if reader is not None:
            return reader(view, request.parameter)
        if name == "check":
            target = (request.parameter or "").strip().lower()
            exists = target in KNOWN
            changes = target in _CHANGES or target in _EDITS
            allowed = not changes or self._may_change(host)
            return replies.check(target or None, exists=exists, allowed=allowed)
        if name == "privileged":
            if self._may_change(host):
                return ApiReply(Severity.SUCCESS, Code.ACCESS_OK, "Privileged access OK")
            return replies.error(Code.ACCESS_DENIED, "Access denied to 'privileged' command")
        if name in _CHANGES:
            if joined or not self._may_change(host):
                return replies.error(Code.ACCESS_DENIED, f"Access denied to '{name}' command")
            return await self._change(name, request.parameter, view, host)
        if name in _EDITS:
            if joined or not self._may_change(host):
                return replies.error(Code.ACCESS_DENIED, f"Access denied to '{name}' command")
            if name in pool_edits.EDITS:
                return await self._edit_pools(name, request.parameter or "", host)
            return await self._control(name, request.parameter or "", view, host)
        return replies.error(Code.INVALID_COMMAND, "Invalid command")

    def _may_change(self, host: str | None) -> bool:
        if not self.settings.allow_changes or host is None:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._allowed)

    async def _change(
        self, name: str, parameter: str | None, view: MinerView, host: str | None
    ) -> ApiReply:
        slot = replies.device_id(view, parameter)
        if isinstance(slot, ApiReply):
            return slot
        build, code, message = _CHANGES[name]
        bound = log.bind(api_command=name, slot=slot, client=host)
        try:
            command = parse_command_mapping(build(slot), slots=self._slots)
            bound.info("miner API command")
            await self._handle(command)
        except CommandError as exc:
            bound.warning("miner API command refused", error=str(exc))
            return replies.error(Code.REFUSED, str(exc))
        except Exception as exc:
            bound.exception("miner API command failed")
            return replies.error(Code.REFUSED, f"failed inside the agent: {exc}")
        return ApiReply(Severity.SUCCESS, code, message.format(slot=slot))

    async def _control(
        self, name: str, parameter: str, view: MinerView, host: str | None
    ) -> ApiReply:
        """A fleet control: its agent commands in order; the first refusal ends it."""
        control = fleet.CHANGES[name]
        bound = log.bind(api_command=name, parameter=parameter[:64], client=host)
        try:
            built = control.build(parameter, view)
            commands = [parse_command_mapping(c, slots=self._slots) for c in built]
        except (fleet.ParameterError, CommandError) as exc:
            bound.warning("miner API command refused", error=str(exc))
            return replies.error(fleet.FleetCode.BAD_PARAMETER, str(exc))
        bound.info("miner API command")
        refused = await self._carry_out(commands, bound)
        if refused is not None:
            return refused
        message = control.message.format(parameter=parameter.strip())
        return ApiReply(Severity.SUCCESS, control.code, message)

    async def _edit_pools(self, name: str, parameter: str, host: str | None) -> ApiReply:
        """A pool command: the list in force edited, then sent whole as `pools`."""
        bound = log.bind(api_command=name, client=host)
        try:
            built, message = pool_edits.command(name, parameter, self._pool_list())
            command = parse_command_mapping(built, slots=self._slots)
        except (fleet.ParameterError, CommandError) as exc:
            bound.warning("miner API command refused", error=str(exc))
            return replies.error(fleet.FleetCode.BAD_PARAMETER, str(exc))
        bound.info("miner API command")
        refused = await self._carry_out([command], bound)
        if refused is not None:
            return refused
        return ApiReply(Severity.SUCCESS, pool_edits.EDITS[name].code, message)

    async def _carry_out(self, commands: list[Command], bound: Any) -> ApiReply | None:
        """Hand the commands to the agent in order; the error reply of the first refused."""
        for command in commands:
            try:
                await self._handle(command)
            except CommandError as exc:
                return replies.error(Code.REFUSED, str(exc))
            except Exception as exc:
                bound.exception("miner API command failed")
                return replies.error(Code.REFUSED, f"failed inside the agent: {exc}")
        return None

    def view(self) -> MinerView:
        """Everything the replies need, taken now from the agent's state."""
        now = self._clock()
        devices = tuple(self._devices())
        self._meter.observe(now, devices)
        snapshot = self._state.snapshot
        fans = tuple(FanView(f.duty, f.rpm, f.stalled) for f in snapshot.fans) if snapshot else ()
        psu = snapshot.psu.pin_w if snapshot and snapshot.psu else None
        slots = tuple(self._state.slot_statuses())
        mode, limit_w = self._governed()
        return MinerView(
            now=now,
            started_at=self._state.started_at,
            version=__version__,
            name=self._state.name,
            slots=slots,
            devices=devices,
            device_since=tuple(self._meter.since(s.slot) for s in slots),
            totals=self._meter.totals(),
            fans=fans,
            psu_input_w=psu,
            pools=tuple(self._pools()),
            mode=mode,
            power_limit_w=limit_w,
            hostname=socket.gethostname(),
            psu_problems=tuple(snapshot.psu_problems) if snapshot else (),
            build=BUILD,
        )


async def _read_request(reader: asyncio.StreamReader, wait_s: float) -> bytes:
    """The request's bytes: complete when its JSON is whole (or surely broken), at a NUL or
    newline, or at the end of the stream; plain text as it first arrives (cgminer reads
    once). Whatever has come after `wait_s` is taken as the request (and answered)."""
    data = b""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait_s):
            while len(data) <= MAX_REQUEST_BYTES:
                chunk = await reader.read(MAX_REQUEST_BYTES + 1 - len(data))
                if not chunk:
                    break
                data += chunk
                stripped = data.strip()
                if not stripped.startswith((b"{", b"[")) or data.endswith((b"\0", b"\n")):
                    break
                if not _json_incomplete(stripped):
                    break
    return data


def _json_incomplete(data: bytes) -> bool:
    """Whether more bytes could still make this JSON text valid."""
    try:
        json.loads(data)
    except json.JSONDecodeError as exc:
        return exc.pos >= len(exc.doc) or exc.msg.startswith("Unterminated string")
    except (ValueError, RecursionError):
        return False
    return False


def _host(peername: Any) -> str | None:
    if isinstance(peername, tuple) and peername and isinstance(peername[0], str):
        return peername[0]
    return None
