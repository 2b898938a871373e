"""Event spool: durable, ordered, bounded, and never the reason the agent stops."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from hashbay.agent.core.events import Event, EventBus, EventKind
from hashbay.agent.interfaces.spool import EventSpool


def event(n: int) -> Event:
    return Event(
        EventKind.FAULT, n % 3, f"event {n}", serial=f"HB{n:04d}", details={"n": n}, at=1000.0 + n
    )


def numbers(spool: EventSpool, limit: int = 1000) -> list[int]:
    return [item.event["details"]["n"] for item in spool.pending(limit)]


def test_events_come_back_in_order_with_growing_sequence_numbers(tmp_path: Path) -> None:
    with EventSpool(tmp_path / "events.db", 100) as spool:
        seqs = [spool.append(event(n)) for n in range(5)]
        assert seqs == sorted(seqs) and len(set(seqs)) == 5
        assert [item.seq for item in spool.pending(10)] == seqs
        assert numbers(spool) == [0, 1, 2, 3, 4]
        assert spool.pending(1)[0].event == event(0).to_json()
        assert spool.pending_count == 5


def test_acknowledge_forgets_everything_up_to_that_sequence(tmp_path: Path) -> None:
    with EventSpool(tmp_path / "events.db", 100) as spool:
        seqs = [spool.append(event(n)) for n in range(5)]
        spool.acknowledge(seqs[2])
        assert numbers(spool) == [3, 4]
        assert spool.pending_count == 2
        spool.acknowledge(seqs[2])  # again: harmless
        assert numbers(spool) == [3, 4]


def test_pending_events_and_sequence_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with EventSpool(path, 100) as spool:
        seqs = [spool.append(event(n)) for n in range(4)]
        spool.acknowledge(seqs[1])
        stream = spool.stream
    with EventSpool(path, 100) as again:
        assert numbers(again) == [2, 3]
        assert again.stream == stream
        assert again.append(event(4)) == seqs[-1] + 1  # never reused, even after deletes
        assert again.durable


def test_a_crash_between_writes_loses_nothing_committed(tmp_path: Path) -> None:
    """The spool is never closed: like a killed agent, the WAL is all there is."""
    path = tmp_path / "events.db"
    spool = EventSpool(path, 100)
    for n in range(3):
        spool.append(event(n))
    # A second connection sees exactly the committed events without any close/checkpoint.
    with EventSpool(path, 100) as other:
        assert numbers(other) == [0, 1, 2]
    spool.close()


def test_full_spool_drops_the_oldest_and_counts_them_durably(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with EventSpool(path, 10) as spool:
        seqs = [spool.append(event(n)) for n in range(15)]
        assert numbers(spool) == list(range(5, 15))
        assert spool.dropped == 5
        assert spool.pending_count == 10
        assert spool.pending(1)[0].seq == seqs[5]  # the gap in seq shows the loss
    with EventSpool(path, 10) as again:
        assert again.dropped == 5


def test_lowering_the_bound_trims_an_existing_spool(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with EventSpool(path, 100) as spool:
        for n in range(20):
            spool.append(event(n))
    with EventSpool(path, 8) as smaller:
        assert numbers(smaller) == list(range(12, 20))
        assert smaller.dropped == 12


@pytest.mark.parametrize(
    "content",
    [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000],
    ids=["garbage", "damaged-header"],
)
def test_unreadable_spool_is_moved_aside_and_a_fresh_one_started(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "events.db"
    path.write_bytes(content)
    with EventSpool(path, 100) as spool:
        assert spool.durable
        assert spool.pending(10) == []
        spool.append(event(1))
        assert numbers(spool) == [1]
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("events.db.unreadable-")]
    assert len(aside) == 1
    assert aside[0].read_bytes() == content


def test_spool_with_a_foreign_table_layout_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, payload BLOB, extra TEXT)")
    db.commit()
    db.close()
    with EventSpool(path, 100) as spool:
        spool.append(event(7))
        assert numbers(spool) == [7]
    assert any(p.name.startswith("events.db.unreadable-") for p in tmp_path.iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_state_directory_falls_back_to_memory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with EventSpool(locked / "events.db", 100) as spool:
            assert not spool.durable
            spool.append(event(1))
            assert numbers(spool) == [1]
    finally:
        locked.chmod(0o700)


def test_spool_path_that_cannot_be_a_file_falls_back_to_memory(tmp_path: Path) -> None:
    (tmp_path / "events.db").mkdir()  # e.g. a botched provisioning step
    with EventSpool(tmp_path / "events.db", 100) as spool:
        assert not spool.durable
        spool.append(event(1))
        assert numbers(spool) == [1]
    assert (tmp_path / "events.db").is_dir()  # nothing was moved or deleted


def test_missing_state_directory_falls_back_to_memory(tmp_path: Path) -> None:
    with EventSpool(tmp_path / "no" / "such" / "dir" / "events.db", 100) as spool:
        assert not spool.durable
        first = spool.append(event(1))
        spool.append(event(2))
        spool.acknowledge(first)
        assert numbers(spool) == [2]


def test_failure_in_use_reopens_the_file_without_losing_events(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    spool = EventSpool(path, 100)
    first = spool.append(event(1))
    spool._db.close()  # the connection dies under it
    assert spool.append(event(2)) == first + 1  # must not raise
    assert numbers(spool) == [1, 2]
    assert spool.durable
    spool.close()
    assert not any(p.name.startswith("events.db.unreadable-") for p in tmp_path.iterdir())


def test_listeners_are_told_after_each_append(tmp_path: Path) -> None:
    calls: list[int] = []
    with EventSpool(tmp_path / "events.db", 100) as spool:
        spool.add_listener(lambda: calls.append(spool.pending_count))
        spool.append(event(1))
        spool.append(event(2))
        assert calls == [1, 2]


def test_event_bus_spools_before_anyone_hears(tmp_path: Path) -> None:
    with EventSpool(tmp_path / "events.db", 100) as spool:
        bus = EventBus(sink=spool)
        queue = bus.subscribe()
        bus.publish(event(9))
        assert numbers(spool) == [9]
        assert queue.get_nowait().message == "event 9"
