"""The agent killed with `kill -9` again and again while events wait in its spool (the
broker is down): nothing is lost, the order holds, the operator's controls survive; then
started on damaged state files, it drops what is damaged, says so, and hashes."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hashbay.tools.broker import Broker, mosquitto_available
from hashbay.tools.sim.control import request

from ..support import AGENT, write_config
from .test_broker_kills import Consumer

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
]
KILLS = 3


class AgentProcess:
    """`hashbay-agent` on the simulated rig, its log in a file (a pipe nobody reads would
    fill up and stop it)."""

    def __init__(self, config: Path, scratch: Path) -> None:
        self.state, self.runtime = scratch / "state", scratch / "run"
        self.log = scratch / "agent.log"
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [
                    *AGENT,
                    *("--config", str(config), "--log-format", "json"),
                    *("--state-dir", str(self.state), "--runtime-dir", str(self.runtime)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)  # no shutdown, whatever it was doing
        self.process.wait(10)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(15)

    def sim(self, line: str, timeout_s: float = 30.0) -> str:
        """A request to its simulated rig, once the socket answers."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return request(self.runtime / "sim.sock", line)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "hashbay.tools.cli", "--socket"]
        return subprocess.run(
            [*command, str(self.runtime / "control.sock"), *args],
            capture_output=True,
            text=True,
            timeout=20,
        )

    def until_hashing(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = self.cli("--json", "slots")
            slots = json.loads(done.stdout)["slots"] if done.returncode == 0 else []
            if slots and all(s["state"] == "hashing" for s in slots):
                return
            time.sleep(0.2)
        raise AssertionError(f"the slots did not all come up to hashing; see {self.log}")


def spooled(state: Path) -> list[tuple[int, str]]:
    db = sqlite3.connect(state / "events.db")
    try:
        rows = db.execute("SELECT seq, body FROM events ORDER BY seq").fetchall()
    finally:
        db.close()
    return [(seq, json.loads(body)["kind"]) for seq, body in rows]


def kill_while_busy(config: Path, scratch: Path) -> None:
    """KILLS runs of the agent, each killed while modules come and go (and so events)."""
    for kill in range(KILLS):
        agent = AgentProcess(config, scratch)
        try:
            if kill == 0:
                agent.until_hashing()
                assert agent.cli("quiet", "on").returncode == 0  # an operator's control
            for _ in range(2):
                assert agent.sim("inject pull 2").startswith("ok")
                time.sleep(0.3)
                assert agent.sim("inject insert 2").startswith("ok")
                time.sleep(0.3)
        finally:
            agent.kill()
        controls = json.loads((agent.state / "controls.json").read_text())
        assert controls["quiet"] == "on"  # written whole, every time


def damage(state: Path) -> None:
    """Half a controls file, a tune profile from year 1, a spooled event garbled."""
    controls = state / "controls.json"
    controls.write_bytes(controls.read_bytes()[: len(controls.read_bytes()) // 2])
    tune = state / "tune"
    tune.mkdir(exist_ok=True)
    profile = {"schema": 1, "serial": "HB0100001", "tuned_at": "0001-01-01T00:00:00+01:00"}
    (tune / "HB0100001.json").write_text(json.dumps(profile))
    db = sqlite3.connect(state / "events.db")
    db.execute("INSERT INTO events (body) VALUES ('{\"kind\": ')")
    db.commit()
    db.close()


async def received(consumer: Consumer, check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_kill_9_with_a_backlog_loses_nothing_and_damaged_files_stop_nothing(
    tmp_path: Path,
) -> None:
    broker = Broker(tmp_path / "broker", persistent=True)  # down for now: events pile up
    config = write_config(
        tmp_path / "agent.toml",
        extra=f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\ntopic_prefix = "chaos"\n'
        "reconnect_min_s = 0.1\nreconnect_max_s = 1.0\ndiscovery = false\n",
    )
    await asyncio.to_thread(kill_while_busy, config, tmp_path)
    backlog = spooled(tmp_path / "state")
    assert len(backlog) >= 4 * KILLS  # every removal and insertion, none delivered yet

    broker.start()
    consumer = Consumer(broker)
    consuming = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(consumer.connected.wait(), 10)
        agent = AgentProcess(config, tmp_path)
        try:
            await received(
                consumer,
                lambda: len({e["seq"] for e in consumer.events}) >= len(backlog),
                30,
                "the backlog did not arrive",
            )
            first = list(dict.fromkeys((e["seq"], e["kind"]) for e in consumer.events))
            assert first[: len(backlog)] == backlog  # every one, in order
            await asyncio.to_thread(agent.until_hashing)
            fans = json.loads(agent.cli("--json", "fans").stdout)
            assert fans["thermal"]["quiet_mode"] == "on"  # the control came back with it
        finally:
            agent.kill()

        damage(tmp_path / "state")
        seen = len(consumer.events)
        agent = AgentProcess(config, tmp_path)
        await asyncio.to_thread(agent.until_hashing)

        def dropped() -> list[str]:
            kinds = [e for e in consumer.events[seen:] if e["kind"] == "state_dropped"]
            return sorted(e["details"].get("file", "") for e in kinds)

        await received(consumer, lambda: len(dropped()) >= 3, 20, "state_dropped events")
        assert dropped() == ["controls", "event spool", "tune profile"]
        assert await asyncio.to_thread(agent.stop) == 0
        assert "Traceback" not in agent.log.read_text()
    finally:
        consuming.cancel()
        await asyncio.gather(consuming, return_exceptions=True)
        broker.stop()
