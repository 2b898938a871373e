"""gpiozero's MockFactory, with pins that can run for weeks and lines the outside world holds.

MockPin records every state change for test assertions; a tachometer toggling hundreds
of times a second would grow that list without end, so the history here is bounded.

A line held by something on the board (a seated module grounding its presence contact)
keeps its level when a program claims it and sets its pull resistor, as on real
hardware, where a driven line beats a pull-up; a plain MockPin jumps to the pull's level
until the simulator drives it again.
"""

from __future__ import annotations

from collections import deque
from time import monotonic
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPWMPin, PinState

HISTORY = 256


class SimPin(MockPWMPin):  # type: ignore[misc]
    """A MockPWMPin whose state history keeps only the last HISTORY changes."""

    _held: bool | None = None  # the level the outside world holds the line at, if any

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


def sim_pin_factory() -> Any:
    """A fresh MockFactory handing out SimPins (PWM-capable, bounded history)."""
    return MockFactory(pin_class=SimPin)
