"""The control socket over a real Unix socket: permissions, peer credentials (from a real
process running as nobody), malformed and oversized frames, slow and many clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import stat
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hashbay.agent.core.events import Event, EventBus, EventKind
from hashbay.agent.core.state import AgentState
from hashbay.agent.core.status import Health, HealthLevel, Reason, SlotState, SlotStatus
from hashbay.agent.interfaces.commands import Command, CommandError
from hashbay.agent.interfaces.control_protocol import (
    MAX_REQUEST_BYTES,
    FrameDecoder,
    encode_frame,
    request_message,
)
from hashbay.agent.interfaces.control_settings import ControlSettings
from hashbay.agent.interfaces.control_socket import ControlServer

NOBODY = 65534  # uid and gid of nobody / nogroup
NOGROUP = "nogroup"


def statuses() -> list[SlotStatus]:
    health = Health(
        score=88.0,
        level=HealthLevel.OK,
        reasons=(Reason("chip_errors", "chip 17 errs 2.0 % of its nonces", 12.0),),
        hashrate_hs=80e12,
        expected_hs=81e12,
        hw_error_rate=0.001,
        chips_answering=126,
        chips_total=126,
        worst_chips=((17, 0.02),),
    )
    return [
        SlotStatus(0, SlotState.HASHING, serial="HB1", model="M", health=health, temps_c=(60.5,)),
        SlotStatus(1, SlotState.DEGRADED, serial="HB2", model="M", health=health),
        SlotStatus(2, SlotState.EMPTY, detail="no module"),
    ]


class FakeAgent:
    """The parts of the agent the control socket reads and calls."""

    def __init__(self) -> None:
        self.state = AgentState("m1")
        self.state.slot_statuses = statuses
        self.events = EventBus()
        self.calls: list[Command] = []
        self.refuse: str | None = None

    async def handle(self, command: Command) -> dict[str, Any]:
        self.calls.append(command)
        if self.refuse:
            raise CommandError(self.refuse)
        return {"slot": command.args.get("slot"), "state": "draining"}


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A short directory that nobody may traverse (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="hb-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def serving(
    directory: Path, agent: FakeAgent, **changes: Any
) -> AsyncIterator[ControlServer]:
    settings = replace(ControlSettings(group=NOGROUP), **changes)
    server = ControlServer(
        settings,
        directory / "control.sock",
        state=agent.state,
        events=agent.events,
        handle=agent.handle,
        slots=3,
        chips=lambda n: [{"chip": 0, "freq_mhz": 490.0, "nonces": 5, "hw_errors": n}],
    )
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.ready.wait(), 5)
    try:
        yield server
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Client:
    """A test client speaking the protocol over a real connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder()
        self.pending: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.next_id = 1

    @classmethod
    async def connect(cls, path: Path) -> Client:
        reader, writer = await asyncio.open_unix_connection(str(path))
        return cls(reader, writer)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def message(self, timeout_s: float = 10) -> dict[str, Any] | None:
        """The next message, or None at the end of the stream."""
        async with asyncio.timeout(timeout_s):
            while not self.pending:
                data = await self.reader.read(65536)
                if not data:
                    return None
                self.pending += self.decoder.feed(data)
        return self.pending.pop(0)

    async def call(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        rid = self.next_id
        self.next_id += 1
        await self.send_raw(encode_frame(request_message(rid, op, args)))
        while True:
            message = await self.message()
            assert message is not None, "connection closed instead of a reply"
            if "event" in message:
                self.events.append(message)
                continue
            assert message["id"] == rid
            return message

    async def closed(self, timeout_s: float = 10) -> bool:
        """Whether the server ends the stream (after any messages still in flight)."""
        with contextlib.suppress(ConnectionError):
            while await self.message(timeout_s) is not None:
                pass
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def run_as_nobody(work: Callable[[], int]) -> tuple[int, str]:
    """Run `work` in a forked child that has dropped to nobody:nogroup (a real peer with
    other credentials); returns its exit code and what it printed."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest, no event loop, only plain calls
        code = 99
        try:
            os.close(read_end)
            out = os.fdopen(write_end, "w", buffering=1)
            sys.stdout = sys.stderr = out
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            code = work()
            out.flush()
        except BaseException as exc:  # report anything, never return into pytest
            with contextlib.suppress(Exception):
                os.write(write_end, f"child failed: {exc!r}".encode())
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode()


def blocking_exchange(path: Path, requests: list[tuple[str, dict[str, Any]]]) -> int:
    """In the child: send requests on one connection, print each reply as JSON."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        try:
            sock.connect(str(path))
        except PermissionError:
            print("EACCES")
            return 0
        decoder = FrameDecoder()
        for n, (op, args) in enumerate(requests, start=1):
            sock.sendall(encode_frame(request_message(n, op, args)))
            replies: list[dict[str, Any]] = []
            while not replies:
                replies += decoder.feed(sock.recv(65536))
            print(json.dumps(replies[0]))
    return 0


async def as_nobody(path: Path, requests: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    code, output = await asyncio.to_thread(run_as_nobody, lambda: blocking_exchange(path, requests))
    assert code == 0, output
    return [line if line == "EACCES" else json.loads(line) for line in output.splitlines()]


# -- permissions ----------------------------------------------------------------------------


async def test_socket_is_mode_0660_and_owned_by_the_configured_group(shared_dir: Path) -> None:
    async with serving(shared_dir, FakeAgent()) as server:
        info = server.path.stat()
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert info.st_gid == NOBODY
    assert not server.path.exists()  # removed on shutdown


async def test_reader_without_the_admin_group_may_read_but_never_change(shared_dir: Path) -> None:
    agent = FakeAgent()
    async with serving(shared_dir, agent, admin_group="root") as server:
        hello, status, change = await as_nobody(
            server.path,
            [
                ("hello", {}),
                ("status", {}),
                ("command", {"command": "prepare_swap", "slot": 1}),
            ],
        )
    assert hello["result"]["may_change"] is False
    assert hello["result"]["peer"]["uid"] == NOBODY
    assert [s["state"] for s in status["result"]["slots"]] == ["hashing", "degraded", "empty"]
    assert change["ok"] is False
    assert change["error"]["code"] == "denied"
    assert "root or membership of group 'root'" in change["error"]["message"]
    assert agent.calls == []  # nothing reached the slot controllers
    assert server.stats.denied == 1


async def test_a_member_of_the_admin_group_may_change(shared_dir: Path) -> None:
    agent = FakeAgent()
    async with serving(shared_dir, agent, admin_group=NOGROUP) as server:
        hello, change = await as_nobody(
            server.path,
            [("hello", {}), ("command", {"command": "locate", "slot": 2, "mode": "blink"})],
        )
    assert hello["result"]["may_change"] is True
    assert change["ok"] is True
    assert agent.calls == [Command("locate", {"slot": 2, "mode": "blink"})]


async def test_a_process_outside_the_socket_group_cannot_even_connect(shared_dir: Path) -> None:
    async with serving(shared_dir, FakeAgent(), group="root") as server:
        assert server.path.stat().st_gid == 0
        assert await as_nobody(server.path, [("status", {})]) == ["EACCES"]


async def test_root_may_change_and_the_reply_is_the_handlers(shared_dir: Path) -> None:
    agent = FakeAgent()
    async with serving(shared_dir, agent) as server:
        client = await Client.connect(server.path)
        hello = await client.call("hello")
        assert hello["result"]["may_change"] is True
        reply = await client.call("command", {"command": "prepare_swap", "slot": 1})
        assert reply == {"v": 1, "id": 2, "ok": True, "result": {"slot": 1, "state": "draining"}}
        assert agent.calls == [Command("prepare_swap", {"slot": 1})]
        await client.close()


async def test_invalid_and_refused_commands_say_why_and_keep_the_connection(
    shared_dir: Path,
) -> None:
    agent = FakeAgent()
    async with serving(shared_dir, agent) as server:
        client = await Client.connect(server.path)
        invalid = await client.call("command", {"command": "locate", "slot": 1, "mode": "disco"})
        assert invalid["error"]["code"] == "invalid"
        assert 'mode must be one of "on", "off", "blink"' in invalid["error"]["message"]
        binary = await client.call("command", {"command": "locate", "slot": 1, "mode": b"on"})
        assert binary["error"]["code"] == "invalid"
        assert agent.calls == []
        agent.refuse = "slot 2 is empty"
        refused = await client.call("command", {"command": "prepare_swap", "slot": 2})
        assert refused["error"] == {"code": "refused", "message": "slot 2 is empty"}
        unknown = await client.call("reboot")
        assert unknown["error"]["code"] == "unknown_op"
        assert (await client.call("slots"))["ok"] is True  # still connected
        await client.close()


# -- reads and events -----------------------------------------------------------------------


async def test_reads_come_from_the_agents_state(shared_dir: Path) -> None:
    agent = FakeAgent()
    for n in range(3):
        agent.events.publish(Event(EventKind.INSERTED, n, f"module inserted in slot {n}"))
    async with serving(shared_dir, agent) as server:
        client = await Client.connect(server.path)
        slot = (await client.call("slot", {"slot": 1}))["result"]
        assert slot["status"]["serial"] == "HB2"
        assert slot["status"]["health"]["reasons"][0]["code"] == "chip_errors"
        assert slot["chips"] == [{"chip": 0, "freq_mhz": 490.0, "nonces": 5, "hw_errors": 1}]
        fans = (await client.call("fans"))["result"]
        assert set(fans) >= {"fans", "psu", "fan_noise_dba"}
        events = (await client.call("events", {"limit": 2}))["result"]["events"]
        assert [e["slot"] for e in events] == [1, 2]  # the latest two, oldest first
        status = (await client.call("status"))["result"]
        assert status["miner"]["name"] == "m1"
        await client.close()


async def test_subscribers_receive_new_events_as_they_happen(shared_dir: Path) -> None:
    agent = FakeAgent()
    async with serving(shared_dir, agent) as server:
        client = await Client.connect(server.path)
        assert (await client.call("subscribe"))["result"] == {"subscribed": True}
        agent.events.publish(Event(EventKind.SAFE_TO_REMOVE, 1, "slot 1: safe to remove"))
        message = await client.message()
        assert message is not None
        assert message["event"]["kind"] == "safe_to_remove"
        assert message["event"]["slot"] == 1
        assert message["dropped"] == 0
        await client.close()


# -- bad input and bad clients -------------------------------------------------------------


async def test_a_garbage_frame_is_answered_and_closed_without_disturbing_others(
    shared_dir: Path,
) -> None:
    agent = FakeAgent()
    async with serving(shared_dir, agent) as server:
        bystander = await Client.connect(server.path)
        await bystander.call("subscribe")
        rogue = await Client.connect(server.path)
        await rogue.send_raw(struct.pack(">I", 3) + b"\xc1\xc1\xc1")
        reply = await rogue.message()
        assert reply is not None
        assert reply["ok"] is False
        assert reply["error"]["code"] == "bad_frame"
        assert await rogue.closed()
        assert (await bystander.call("status"))["ok"] is True
        agent.events.publish(Event(EventKind.FAULT, 0, "boom"))
        assert (await bystander.message()) is not None  # the stream still flows
        late = await Client.connect(server.path)
        assert (await late.call("hello"))["ok"] is True
        for client in (bystander, late):
            await client.close()


async def test_an_oversized_frame_is_refused_from_its_header(shared_dir: Path) -> None:
    async with serving(shared_dir, FakeAgent()) as server:
        rogue = await Client.connect(server.path)
        await rogue.send_raw(struct.pack(">I", 1 << 30) + b"x" * 100_000)
        reply = await rogue.message()
        assert reply is not None
        assert reply["error"]["code"] == "too_large"
        assert f"at most {MAX_REQUEST_BYTES}" in reply["error"]["message"]
        assert await rogue.closed()


async def test_a_frame_that_never_completes_is_given_up(shared_dir: Path) -> None:
    async with serving(shared_dir, FakeAgent(), request_timeout_s=0.2) as server:
        rogue = await Client.connect(server.path)
        await rogue.send_raw(struct.pack(">I", 100) + b"\x80")
        reply = await rogue.message()
        assert reply is not None
        assert reply["error"]["code"] == "bad_frame"
        assert "incomplete" in reply["error"]["message"]
        assert await rogue.closed()


async def test_a_frame_stalled_inside_its_length_prefix_is_given_up(shared_dir: Path) -> None:
    async with serving(shared_dir, FakeAgent(), request_timeout_s=0.2) as server:
        rogue = await Client.connect(server.path)
        await rogue.send_raw(b"\x00")  # one byte of the four-byte prefix, then nothing
        reply = await rogue.message()
        assert reply is not None
        assert reply["error"]["code"] == "bad_frame"
        assert "incomplete" in reply["error"]["message"]
        assert await rogue.closed()


async def test_an_idle_connection_between_requests_is_kept(shared_dir: Path) -> None:
    async with serving(shared_dir, FakeAgent(), request_timeout_s=0.2) as server:
        client = await Client.connect(server.path)
        await asyncio.sleep(0.5)  # longer than the frame deadline, but no frame begun
        assert (await client.call("hello"))["ok"] is True
        await client.close()


async def test_deeply_nested_arguments_are_a_bad_frame(shared_dir: Path) -> None:
    agent = FakeAgent()
    async with serving(shared_dir, agent) as server:
        deep: Any = 1
        for _ in range(500):
            deep = [deep]
        rogue = await Client.connect(server.path)
        await rogue.send_raw(
            encode_frame(request_message(1, "command", {"command": "locate", "slot": deep}))
        )
        reply = await rogue.message()
        assert reply is not None
        assert reply["error"]["code"] == "bad_frame"
        assert await rogue.closed()
        assert agent.calls == []


async def test_a_client_that_stops_reading_is_dropped_and_nobody_waits_for_it(
    shared_dir: Path,
) -> None:
    agent = FakeAgent()
    async with serving(shared_dir, agent, send_timeout_s=0.3) as server:
        sleeper = await Client.connect(server.path)
        await sleeper.call("subscribe")  # then never reads again
        reader = await Client.connect(server.path)
        padding = "x" * 4000
        deadline = time.monotonic() + 30
        while server.stats.slow_disconnects == 0:
            assert time.monotonic() < deadline, "the slow client was never dropped"
            for _ in range(50):
                agent.events.publish(Event(EventKind.DEGRADING, 0, "noise", details={"p": padding}))
            assert (await reader.call("hello"))["ok"] is True  # served all along
            await asyncio.sleep(0.05)
        assert agent.events.dropped > 0  # its queue stayed bounded: the oldest went
        assert (await reader.call("status"))["ok"] is True
        await reader.close()
        await sleeper.close()


async def test_many_clients_are_served_at_once(shared_dir: Path) -> None:
    async with serving(shared_dir, FakeAgent()) as server:

        async def session() -> list[bool]:
            client = await Client.connect(server.path)
            results = [(await client.call(op))["ok"] for op in ("hello", "status", "slots")]
            await client.close()
            return results

        results = await asyncio.gather(*(session() for _ in range(30)))
        assert all(all(r) for r in results)
        assert server.stats.connections == 30


async def test_clients_beyond_the_limit_are_told_the_agent_is_busy(shared_dir: Path) -> None:
    async with serving(shared_dir, FakeAgent(), max_clients=2, reserved_for_admins=0) as server:
        first, second = [await Client.connect(server.path) for _ in range(2)]
        assert (await first.call("hello"))["ok"] and (await second.call("hello"))["ok"]
        third = await Client.connect(server.path)
        reply = await third.message()
        assert reply is not None
        assert reply["error"]["code"] == "busy"
        assert await third.closed()
        for client in (first, second):
            await client.close()


async def test_a_second_server_does_not_take_over_a_live_socket(shared_dir: Path) -> None:
    agent = FakeAgent()
    async with serving(shared_dir, agent) as server:
        intruder = ControlServer(
            ControlSettings(),
            server.path,
            state=agent.state,
            events=agent.events,
            handle=agent.handle,
            slots=3,
        )
        with pytest.raises(OSError, match="another agent"):
            await intruder.run()
        client = await Client.connect(server.path)
        assert (await client.call("hello"))["ok"] is True
        await client.close()


async def test_stopping_the_server_ends_its_clients(shared_dir: Path) -> None:
    agent = FakeAgent()
    async with serving(shared_dir, agent) as server:
        client = await Client.connect(server.path)
        await client.call("subscribe")
    assert await client.closed()
    assert not server.path.exists()
