"""gpiozero's MockFactory, with pins that can run for weeks.

MockPin records every state change for test assertions; a tachometer toggling hundreds
of times a second would grow that list without end, so the history here is bounded.
"""

from __future__ import annotations

from collections import deque
from time import monotonic
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPWMPin, PinState

HISTORY = 256


class SimPin(MockPWMPin):  # type: ignore[misc]
    """A MockPWMPin whose state history keeps only the last HISTORY changes."""

    def clear_states(self) -> None:
        self._last_change = monotonic()
        self.states = deque([PinState(0.0, self._state)], maxlen=HISTORY)


def sim_pin_factory() -> Any:
    """A fresh MockFactory handing out SimPins (PWM-capable, bounded history)."""
    return MockFactory(pin_class=SimPin)
