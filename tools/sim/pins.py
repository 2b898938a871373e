"""gpiozero's MockFactory, with pins that can run for weeks and lines the outside world holds.

MockPin records every state change for test assertions; a tachometer toggling hundreds
of times a second would grow that list without end, so the history here is bounded.

A line held by something on the board (a seated module grounding its presence contact)
keeps its level when a program claims it and sets its pull resistor, as on real
hardware, where a driven line beats a pull-up; a plain MockPin jumps to the pull's level
until the simulator drives it again.

Moving an input pin runs the host's edge callbacks right there, on the simulator's
thread; each pin keeps the CPU time those callbacks took (and only that: the mock pin's
own bookkeeping is the simulator's work), for benchmarks to count as the host's.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections import deque
from time import monotonic
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPWMPin, PinState

HISTORY = 256


class SimPin(MockPWMPin):  # type: ignore[misc]
    """A MockPWMPin whose state history keeps only the last HISTORY changes."""

    _held: bool | None = None  # the level the outside world holds the line at, if any
    callbacks_cpu_s = 0.0  # thread CPU time the host's edge callbacks on this pin took

    def clear_states(self) -> None:
        self._last_change = monotonic()
        self.states = deque([PinState(0.0, self._state)], maxlen=HISTORY)

    def hold(self, level: bool) -> None:
        """The board holds this input at `level` (until held at another one)."""
        self._held = level
        if self.function == "input" and bool(self.state) != level:
            if level:
                self.drive_high()
            else:
                self.drive_low()

    def _set_pull(self, value: str) -> None:
        super()._set_pull(value)
        held = self._held
        if held is not None and bool(self._state) != held:
            self._change_state(held)  # the pull resistor loses against the driver

    def _call_when_changed(self) -> None:
        # The thread CPU clock, not a wall clock: in the agent's process a callback waits
        # for the GIL, and that wait is other threads' time. Reading the clock takes about
        # a quarter of a callback, so what two back-to-back reads show is taken off.
        started = time.thread_time()
        try:
            super()._call_when_changed()
        finally:
            took = time.thread_time() - started - clock_read_s()
            self.callbacks_cpu_s += max(took, 0.0)


@functools.cache
def clock_read_s() -> float:
    """What two back-to-back reads of the thread CPU clock show: the clock's own cost in
    a timed span (the median of many, so a preempted pair does not count)."""
    spans = []
    for _ in range(1001):
        started = time.thread_time()
        spans.append(time.thread_time() - started)
    return statistics.median(spans)


def sim_pin_factory() -> Any:
    """A fresh MockFactory handing out SimPins (PWM-capable, bounded history)."""
    return MockFactory(pin_class=SimPin)
