"""Stall detection on a monotonic clock days after boot, not near zero."""

from __future__ import annotations

from hashbay.agent.liveness import Liveness

BOOT = 5 * 86_400.0 + 0.125  # a controller up for five days


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_loop_that_stops_beating_is_a_stall_only_after_the_timeout() -> None:
    clock = Clock(BOOT)
    liveness = Liveness(10.0, clock=clock)
    clock.now = BOOT + 9.0
    liveness.poll_done()
    clock.now = BOOT + 10.0
    assert liveness.stalled() is None  # exactly the timeout: not yet
    clock.now = BOOT + 10.5
    assert liveness.stalled() == "event loop stalled for 10.5 s"
    liveness.loop_beat()
    assert liveness.stalled() is None


def test_a_poll_that_stops_completing_is_a_stall_even_while_the_loop_beats() -> None:
    clock = Clock(BOOT)
    liveness = Liveness(10.0, clock=clock)
    liveness.poll_done()
    for second in range(1, 12):
        clock.now = BOOT + second
        liveness.loop_beat()
    assert liveness.stalled() == "hardware poll stuck for 11.0 s"
    liveness.poll_done()
    assert liveness.stalled() is None and liveness.polls == 2
