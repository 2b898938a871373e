"""Alarm events: one per condition and slot per interval, the newest always told, and a
count of what was folded in."""

from __future__ import annotations

from hashbay.agent.core.alarms import AlarmGate
from hashbay.agent.core.events import Event, EventBus, EventKind

from .support import Clock


def alarm(kind: EventKind, slot: int = 0, n: int = 0) -> Event:
    return Event(kind, slot, f"{kind.value} {n}", details={"n": n})


def told(bus: EventBus) -> list[tuple[str, int | None, int, int]]:
    return [
        (e.kind.value, e.slot, e.details["n"], e.details.get("folded", 0)) for e in bus.recent(100)
    ]


def test_a_flapping_condition_is_told_once_per_interval_with_the_count_folded_in() -> None:
    bus, clock = EventBus(), Clock(0.0)
    gate = AlarmGate(bus, clock, repeat_s=300.0)
    for n in range(400):  # overheat, recovered, overheat... every 2 s for 800 s
        kind = EventKind.OVERHEAT if n % 2 == 0 else EventKind.RECOVERED
        gate.raise_event("temperature", alarm(kind, n=n))
        clock.now += 2.0
        gate.flush()
    clock.now = 900.0
    gate.flush()
    assert told(bus) == [
        ("overheat", 0, 0, 0),
        ("recovered", 0, 149, 148),  # the newest when the first interval ended
        ("recovered", 0, 299, 149),
        ("recovered", 0, 399, 99),  # the last word, when its interval ended
    ]


def test_the_last_word_arrives_when_the_interval_ends_even_if_nothing_follows() -> None:
    bus, clock = EventBus(), Clock(0.0)
    gate = AlarmGate(bus, clock, repeat_s=60.0)
    gate.raise_event("sensors", alarm(EventKind.SENSOR_UNREADABLE, n=1))
    clock.now = 5.0
    gate.raise_event("sensors", alarm(EventKind.RECOVERED, n=2))
    gate.flush()
    assert [k for k, *_ in told(bus)] == ["sensor_unreadable"]
    clock.now = 60.0
    gate.flush()
    assert told(bus) == [("sensor_unreadable", 0, 1, 0), ("recovered", 0, 2, 0)]
    gate.flush()
    assert len(told(bus)) == 2


def test_conditions_and_slots_are_independent() -> None:
    bus, clock = EventBus(), Clock(0.0)
    gate = AlarmGate(bus, clock, repeat_s=300.0)
    assert gate.raise_event("temperature", alarm(EventKind.OVERHEAT, slot=0))
    assert gate.raise_event("temperature", alarm(EventKind.OVERHEAT, slot=1))
    assert gate.raise_event("sensors", alarm(EventKind.SENSOR_UNREADABLE, slot=0))
    assert not gate.raise_event("temperature", alarm(EventKind.RECOVERED, slot=0))
    assert len(bus.recent(10)) == 3


def test_a_new_event_after_the_interval_counts_the_one_it_supersedes() -> None:
    bus, clock = EventBus(), Clock(0.0)
    gate = AlarmGate(bus, clock, repeat_s=10.0)
    gate.raise_event("temperature", alarm(EventKind.OVERHEAT, n=0))
    gate.raise_event("temperature", alarm(EventKind.RECOVERED, n=1))  # folded, not flushed
    clock.now = 11.0
    gate.raise_event("temperature", alarm(EventKind.OVERHEAT, n=2))
    assert told(bus) == [("overheat", 0, 0, 0), ("overheat", 0, 2, 1)]
    assert "1 more folded in" in bus.recent(1)[0].message


def test_an_interval_of_zero_tells_everything() -> None:
    bus = EventBus()
    gate = AlarmGate(bus, Clock(0.0), repeat_s=0.0)
    for n in range(5):
        assert gate.raise_event("temperature", alarm(EventKind.OVERHEAT, n=n))
    assert len(bus.recent(10)) == 5


def test_an_escalation_is_never_held_back_but_a_flap_back_is() -> None:
    bus, clock = EventBus(), Clock(0.0)
    gate = AlarmGate(bus, clock, repeat_s=300.0)
    assert gate.raise_event("temperature", alarm(EventKind.OVERHEAT, n=0), severity=1)
    clock.now = 5.0
    assert gate.raise_event("temperature", alarm(EventKind.THROTTLED, n=1), severity=2)
    assert not gate.raise_event("temperature", alarm(EventKind.OVERHEAT, n=2), severity=1)
    assert not gate.raise_event("temperature", alarm(EventKind.THROTTLED, n=3), severity=2)
    clock.now = 299.0
    gate.flush()
    assert [n for _, _, n, _ in told(bus)] == [0, 1]
    clock.now = 300.0
    gate.flush()
    assert told(bus)[-1] == ("throttled", 0, 3, 1)
