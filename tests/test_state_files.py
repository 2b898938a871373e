"""Damaged state files: a bad entry is dropped with one log line and a `state_dropped`
event, and nothing stops the agent from powering its modules or delivering events."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from structlog.testing import capture_logs

from hashbay.agent.core.events import Event, EventKind
from hashbay.agent.core.status import SlotState
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.agent.interfaces.spool import EventSpool
from hashbay.agent.power.controls import Controls, ControlStore

from .support import rig_config
from .test_lifecycle import until


def event(n: int) -> Event:
    return Event(EventKind.INSERTED, 0, f"event {n}", details={"n": n}, at=1000.0 + n)


def damage_row(path: Path, seq: int, body: bytes | str) -> None:
    db = sqlite3.connect(path)
    db.execute("UPDATE events SET body = ? WHERE seq = ?", (body, seq))
    db.commit()
    db.close()


def test_a_damaged_event_is_dropped_and_the_others_still_come_in_order(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with EventSpool(path, 100) as spool:
        seqs = [spool.append(event(n)) for n in range(4)]
    damage_row(path, seqs[1], "{not json")
    damage_row(path, seqs[2], b"\xff\xfe not utf-8")
    told: list[str] = []
    with EventSpool(path, 100) as spool, capture_logs() as logs:
        spool.report_to(told.append)
        assert [item.event["details"]["n"] for item in spool.pending(10)] == [0, 3]
        assert spool.pending_count == 2
        assert [item.seq for item in spool.pending(10)] == [seqs[0], seqs[3]]
    assert [entry["event"] for entry in logs] == ["damaged events in the spool dropped"]
    assert len(told) == 1 and "2 damaged event(s) dropped" in told[0]


def test_damaged_spool_counters_are_repaired_and_reported_once_someone_listens(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    with EventSpool(path, 100) as spool:
        spool.append(event(1))
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = 'lots' WHERE key = 'dropped'")
    db.execute("UPDATE meta SET value = 42 WHERE key = 'stream'")
    db.commit()
    db.close()
    with EventSpool(path, 100) as spool:
        told: list[str] = []
        spool.report_to(told.append)
        assert spool.dropped == 0
        assert len(spool.stream) == 8
        assert [item.event["details"]["n"] for item in spool.pending(10)] == [1]
    assert len(told) == 2
    assert any("dropped count" in t for t in told) and any("stream id" in t for t in told)
    with EventSpool(path, 100) as spool:  # repaired for good: nothing more to say
        again: list[str] = []
        spool.report_to(again.append)
        assert again == []


def test_controls_file_values_left_out_are_listed(tmp_path: Path) -> None:
    path = tmp_path / "controls.json"
    path.write_text(json.dumps({"schema": 1, "curtail": "sleep", "fan_override": 7.0}))
    store = ControlStore(path)
    assert store.current == Controls(curtail="sleep")
    assert len(store.problems) == 1 and "fan_override" in store.problems[0]
    path.write_text("[1, 2")
    assert ControlStore(path).problems and "unreadable" in ControlStore(path).problems[0]


async def test_damaged_state_files_raise_events_and_the_modules_still_hash(tmp_path: Path) -> None:
    config = rig_config(tmp_path, modules=(0,))
    state = Path(config.agent.state_dir)
    (state / "controls.json").write_text(json.dumps({"schema": 1, "power_target_w": "max"}))
    (state / "events.db").write_bytes(b"SQLite format 3\x00" + b"\x13" * 4000)
    agent = Agent(config, notifier=SystemdNotifier({}))
    task = asyncio.create_task(agent.run())
    try:
        await until(lambda: agent.controllers[0].state is SlotState.HASHING, what="hashing")
        dropped = [e for e in agent.events.recent(50) if e.kind is EventKind.STATE_DROPPED]
        assert len(dropped) == 2
        assert {e.details["file"] for e in dropped} == {"controls", "event spool"}
        assert any("power_target_w" in e.message for e in dropped)
    finally:
        agent.supervisor.request_stop("test over")
        assert await asyncio.wait_for(task, 15) == 0
