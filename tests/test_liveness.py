"""Stalled or only slow: the stall guard's judgment, on a clock days after boot.

A loaded controller runs everything late; that is not a reason to cut the boards and
exit 70. Only no progress at all is: no loop heartbeat, or a hardware call that never
returns.
"""

from __future__ import annotations

import threading
import time

from hashbay.agent.daemon.liveness import BusProgress, Liveness, StallGuard

from .support import Clock

DAYS_AFTER_BOOT = 5 * 86400.0


def test_a_loop_beating_at_a_tenth_of_its_pace_is_slow_not_stalled() -> None:
    clock = Clock(DAYS_AFTER_BOOT)
    liveness = Liveness(5.0, clock)
    for _ in range(40):
        clock.now += 2.5  # ten times the heartbeat period
        assert liveness.stalled() is None
        liveness.loop_beat()


def test_a_loop_silent_past_the_timeout_is_stalled() -> None:
    clock = Clock(DAYS_AFTER_BOOT)
    liveness = Liveness(5.0, clock)
    clock.now += 5.01
    assert liveness.stalled() == "event loop stalled for 5.0 s"


def test_hardware_calls_that_return_late_are_slow_not_stuck() -> None:
    clock = Clock(DAYS_AFTER_BOOT)
    bus = BusProgress(clock)
    liveness = Liveness(5.0, clock, bus=bus)
    for _ in range(20):  # each call takes 2 s: a poll behind a queue of sweeps
        bus.begin()
        clock.now += 2.0
        liveness.loop_beat()
        assert liveness.stalled() is None
        bus.end()


def test_a_hardware_call_that_never_returns_is_a_stuck_bus() -> None:
    clock = Clock(DAYS_AFTER_BOOT)
    bus = BusProgress(clock)
    liveness = Liveness(5.0, clock, bus=bus)
    clock.now += 60.0  # idle for a minute: nothing is owed
    liveness.loop_beat()
    assert liveness.stalled() is None
    bus.begin()
    clock.now += 4.9
    liveness.loop_beat()
    assert liveness.stalled() is None
    clock.now += 0.2
    liveness.loop_beat()
    assert liveness.stalled() == "hardware bus stuck for 5.1 s (a call has not returned)"
    bus.end()
    assert liveness.stalled() is None


def test_the_guard_thread_trips_once_on_a_stuck_call() -> None:
    bus = BusProgress()
    liveness = Liveness(0.3, bus=bus)
    tripped: list[str] = []
    done = threading.Event()

    def on_stall(reason: str) -> None:
        tripped.append(reason)
        done.set()

    guard = StallGuard(liveness, on_stall, check_period_s=0.02)
    guard.start()
    try:
        bus.begin()  # and never end: a device holding the bus
        deadline = time.monotonic() + 5
        while not done.is_set() and time.monotonic() < deadline:
            liveness.loop_beat()  # the loop itself is fine
            time.sleep(0.02)
    finally:
        guard.stop()
    assert len(tripped) == 1
    assert tripped[0].startswith("hardware bus stuck")


def test_a_silent_loop_is_a_stall_only_after_the_timeout_itself() -> None:
    clock = Clock(DAYS_AFTER_BOOT + 0.125)
    liveness = Liveness(10.0, clock)
    clock.now += 10.0
    assert liveness.stalled() is None  # exactly the timeout: not yet
    clock.now += 0.5
    assert liveness.stalled() == "event loop stalled for 10.5 s"
    liveness.loop_beat()
    assert liveness.stalled() is None
