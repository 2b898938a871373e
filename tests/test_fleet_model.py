"""The fleet model, message by message: what a farm of miners' MQTT topics add up to."""

from __future__ import annotations

import json
from typing import Any

from hashbay.tools.fleet.model import FleetModel

from .support import Clock

PREFIX = "farm"


def model(clock: Clock | None = None, **kwargs: Any) -> FleetModel:
    return FleetModel(PREFIX, clock=clock or Clock(), wall=lambda: 1_700_000_000.0, **kwargs)


def miner_state(name: str, *, hashrate_ths: float = 200.0, power_w: float = 3600.0) -> bytes:
    state = {
        "name": name,
        "hashrate_hs": hashrate_ths * 1e12,
        "psu_input_power_w": power_w,
        "thermal": {"hottest_c": 71.5},
    }
    return json.dumps(state).encode()


def slot_state(
    slot: int,
    state: str = "hashing",
    *,
    serial: str | None = "HB1",
    score: float = 100.0,
    level: str = "ok",
    degrading: bool = False,
    ttf_s: float | None = None,
    detail: str = "",
    since: float = 1000.0,
    reasons: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> bytes:
    status = {
        "slot": slot,
        "state": state,
        "serial": serial,
        "detail": detail,
        "since": since,
        "health": {"score": score, "level": level, "reasons": reasons or []},
        "prediction": {"degrading": degrading, "time_to_failure_s": ttf_s, "trend": "rising"},
        "temps_c": [60.0, 66.0],
        **extra,
    }
    return json.dumps(status).encode()


def event(seq: int, kind: str, slot: int | None = 0, stream: str = "s1", **extra: Any) -> bytes:
    body = {
        "seq": seq,
        "stream": stream,
        "kind": kind,
        "slot": slot,
        "serial": "HB1",
        "message": f"{kind} {seq}",
        "details": {},
        "at": 1000.0 + seq,
        **extra,
    }
    return json.dumps(body).encode()


def farm_of(m: FleetModel, names: list[str]) -> None:
    for name in names:
        m.ingest(f"{PREFIX}/{name}/status", b"online")
        m.ingest(f"{PREFIX}/{name}/state", miner_state(name))
        for slot in range(3):
            m.ingest(
                f"{PREFIX}/{name}/slot/{slot}/state", slot_state(slot, serial=f"{name}-{slot}")
            )


def test_a_fresh_consumer_adds_up_the_farm_from_retained_state() -> None:
    m = model()
    farm_of(m, ["a", "b", "c"])
    m.ingest(f"{PREFIX}/c/slot/2/state", slot_state(2, "fault", serial="c-2"))
    summary = m.summary()
    assert (summary.miners, summary.online, summary.offline, summary.stale) == (3, 3, 0, 0)
    assert summary.hashrate_hs == 600e12
    assert summary.power_w == 3 * 3600.0
    assert summary.j_per_th == 18.0
    assert summary.modules == {"fault": 1, "hashing": 8}
    assert summary.swap_queue == 1


def test_a_will_marks_the_miner_offline_and_it_no_longer_counts_in_the_totals() -> None:
    m = model()
    farm_of(m, ["a", "b"])
    m.ingest(f"{PREFIX}/b/status", b"offline")
    summary = m.summary()
    assert (summary.online, summary.offline) == (1, 1)
    assert summary.hashrate_hs == 200e12
    m.ingest(f"{PREFIX}/b/status", b"online")
    assert m.summary().online == 2


def test_a_miner_whose_state_stops_coming_goes_stale_and_fresh_state_revives_it() -> None:
    clock = Clock()
    m = model(clock, stale_after_s=90.0)
    farm_of(m, ["a", "b"])
    clock.now += 60
    m.ingest(f"{PREFIX}/a/state", miner_state("a"))
    clock.now += 40  # b's state is now 100 s old, a's 40 s
    summary = m.summary()
    assert (summary.online, summary.stale) == (1, 1)
    assert summary.hashrate_hs == 200e12  # a stale miner's numbers are not the farm's now
    m.ingest(f"{PREFIX}/b/state", miner_state("b"))
    assert m.summary().stale == 0


def test_events_delivered_twice_count_once_but_another_stream_is_another_event() -> None:
    m = model()
    calls: list[tuple[str, int, str]] = []
    m.on_queued = lambda miner, slot, category, _event: calls.append((miner, slot, category))
    topic = f"{PREFIX}/a/event"
    m.ingest(topic, event(1, "fault"))
    m.ingest(topic, event(1, "fault"))  # resent after a lost PUBACK
    m.ingest(topic, event(1, "fault", stream="s2"))  # a fresh spool starts a new stream
    assert len(m.events) == 2
    assert m.duplicates == 1
    assert calls == [("a", 0, "fault"), ("a", 0, "fault")]


def test_a_seq_far_below_the_streams_newest_is_taken_as_already_seen() -> None:
    m = model()
    topic = f"{PREFIX}/a/event"
    m.ingest(topic, event(10_000, "tuned"))
    m.ingest(topic, event(10, "tuned"))
    assert len(m.events) == 1


def test_queue_order_needs_service_fault_soonest_failure_then_lowest_health() -> None:
    m = model()
    farm_of(m, ["a", "b"])
    m.ingest(f"{PREFIX}/a/slot/0/state", slot_state(0, serial="a-0", score=55, level="degraded"))
    m.ingest(f"{PREFIX}/a/slot/1/state", slot_state(1, serial="a-1", degrading=True, ttf_s=7200))
    m.ingest(f"{PREFIX}/a/slot/2/state", slot_state(2, serial="a-2", score=40, level="degraded"))
    m.ingest(f"{PREFIX}/b/slot/0/state", slot_state(0, "fault", serial="b-0", detail="DC-DC trip"))
    m.ingest(f"{PREFIX}/b/slot/1/state", slot_state(1, serial="b-1", degrading=True, ttf_s=600))
    m.ingest(
        f"{PREFIX}/b/slot/2/state",
        slot_state(2, "fault", serial="b-2", detail="3 restarts in 1 h: needs service"),
    )
    queue = m.swap_queue()
    assert [(i.miner, i.slot, i.category) for i in queue] == [
        ("b", 2, "needs_service"),
        ("b", 0, "fault"),
        ("b", 1, "degrading"),
        ("a", 1, "degrading"),
        ("a", 2, "low_health"),
        ("a", 0, "low_health"),
    ]
    assert queue[1].reason == "DC-DC trip"
    assert queue[2].time_to_failure_s == 600
    assert all(item.serial == f"{item.miner}-{item.slot}" for item in queue)


def test_healthy_empty_and_sleeping_modules_stay_out_of_the_queue() -> None:
    m = model()
    farm_of(m, ["a"])
    m.ingest(f"{PREFIX}/a/slot/1/state", slot_state(1, "empty", serial=None))
    m.ingest(f"{PREFIX}/a/slot/2/state", slot_state(2, "sleeping", score=0))
    assert m.swap_queue() == []


def test_a_fault_event_queues_the_module_at_once_and_only_a_later_recovery_clears_it() -> None:
    m = model()
    farm_of(m, ["a"])
    m.ingest(f"{PREFIX}/a/event", event(5, "fault", details={"reason": "rail over-current"}))
    [item] = m.swap_queue()
    assert (item.slot, item.category, item.reason) == (0, "fault", "rail over-current")
    # The slot's retained state from before the fault (since 1000 < the event's 1005).
    m.ingest(f"{PREFIX}/a/slot/0/state", slot_state(0, serial="HB1", since=1000.0))
    assert [i.category for i in m.swap_queue()] == ["fault"]
    m.ingest(f"{PREFIX}/a/slot/0/state", slot_state(0, serial="HB1", since=1030.0))
    assert m.swap_queue() == []


def test_needs_service_and_a_swap_leave_the_queue_through_their_events() -> None:
    m = model()
    farm_of(m, ["a"])
    m.ingest(f"{PREFIX}/a/event", event(1, "needs_service"))
    assert [i.category for i in m.swap_queue()] == ["needs_service"]
    m.ingest(f"{PREFIX}/a/event", event(2, "removed"))
    assert m.swap_queue() == []
    m.ingest(f"{PREFIX}/a/event", event(3, "degrading", details={"time_to_failure_s": 900.0}))
    assert [i.category for i in m.swap_queue()] == ["degrading"]
    m.ingest(f"{PREFIX}/a/slot/0/state", slot_state(0, serial="HB-new", since=2000.0))
    assert m.swap_queue() == []  # another module is in the slot now


def test_the_fault_code_is_shown_when_the_agent_sends_one_and_left_empty_when_not() -> None:
    m = model()
    farm_of(m, ["a", "b", "c"])
    m.ingest(f"{PREFIX}/a/event", event(1, "fault", code=2101))
    m.ingest(f"{PREFIX}/b/event", event(1, "fault", details={"code": "E_RAIL"}))
    m.ingest(f"{PREFIX}/c/event", event(1, "fault"))
    codes = {item.miner: item.code for item in m.swap_queue()}
    assert codes == {"a": 2101, "b": "E_RAIL", "c": None}
    m.ingest(f"{PREFIX}/c/slot/0/state", slot_state(0, "fault", since=1001.0, code=3001))
    assert {i.miner: i.code for i in m.swap_queue()}["c"] == 3001


def test_a_low_health_module_is_queued_with_its_reasons() -> None:
    m = model()
    farm_of(m, ["a"])
    reasons = [{"code": "chip_errors", "text": "chip 17 errs on 4 % of nonces", "penalty": 40}]
    m.ingest(f"{PREFIX}/a/slot/1/state", slot_state(1, score=60, level="ok", reasons=reasons))
    [item] = m.swap_queue()
    assert (item.category, item.code, item.reason) == (
        "low_health",
        "chip_errors",
        "chip 17 errs on 4 % of nonces",
    )


def test_the_time_to_failure_counts_down_between_states() -> None:
    clock = Clock()
    m = model(clock)
    farm_of(m, ["a"])
    m.ingest(f"{PREFIX}/a/slot/0/state", slot_state(0, degrading=True, ttf_s=3600))
    clock.now += 600
    assert m.swap_queue()[0].time_to_failure_s == 3000


def test_unreadable_messages_are_counted_and_change_nothing() -> None:
    m = model()
    farm_of(m, ["a"])
    before = m.summary()
    bad = [
        (f"{PREFIX}/a/state", b"{not json"),
        (f"{PREFIX}/a/state", b"[1, 2]"),
        (f"{PREFIX}/a/status", b"maybe"),
        (f"{PREFIX}/a/slot/99/state", slot_state(0)),
        (f"{PREFIX}/a/slot/x/state", slot_state(0)),
        (f"{PREFIX}/a/slot/1/state", b'{"state": 5}'),
        (f"{PREFIX}/a/event", b'{"seq": "1", "stream": "s", "kind": "fault"}'),
        (f"{PREFIX}/a/event", b"\xff\xfe"),
        (f"{PREFIX}/a/state", b'{"x": "' + b"y" * 70_000 + b'"}'),
        ("elsewhere/a/state", miner_state("a")),
        (f"{PREFIX}//state", miner_state("a")),
    ]
    for topic, payload in bad:
        assert m.ingest(topic, payload) is False
    after = m.summary()
    assert after.rejected == len(bad)
    assert (after.miners, after.hashrate_hs, after.modules) == (
        before.miners,
        before.hashrate_hs,
        before.modules,
    )


def test_numbers_of_the_wrong_kind_are_ignored_not_summed() -> None:
    m = model()
    m.ingest(f"{PREFIX}/a/status", b"online")
    m.ingest(f"{PREFIX}/a/state", b'{"hashrate_hs": "lots", "psu_input_power_w": true}')
    m.ingest(f"{PREFIX}/a/slot/0/state", b'{"state": "hashing", "health": [1], "prediction": 3}')
    summary = m.summary()
    assert (summary.hashrate_hs, summary.power_w, summary.j_per_th) == (0.0, 0.0, None)
    assert m.swap_queue() == []


def test_a_cleared_retained_topic_forgets_the_slot() -> None:
    m = model()
    farm_of(m, ["a"])
    m.ingest(f"{PREFIX}/a/slot/2/state", b"")
    assert m.summary().modules == {"hashing": 2}


def test_a_miners_detail_lists_its_slots_and_recent_events() -> None:
    m = model()
    farm_of(m, ["a", "b"])
    m.ingest(f"{PREFIX}/a/event", event(1, "inserted"))
    m.ingest(f"{PREFIX}/b/event", event(1, "removed"))
    detail = m.miner_detail("a")
    assert detail is not None
    assert detail["status"] == "online"
    assert [s["serial"] for s in detail["slots"]] == ["a-0", "a-1", "a-2"]
    assert [e["kind"] for e in detail["events"]] == ["inserted"]
    assert detail["hottest_c"] == 71.5
    assert m.miner_detail("nobody") is None
