"""The safe envelope: the one place that knows how far hardware may be driven.

Every driver setter that can hurt hardware (fan duty, voltage, frequency, power) asks the
envelope first and writes only the value it returns; a value outside the limits raises
SafetyViolation before anything reaches a bus. Drivers keep their devices private, so
there is no path to the hardware that skips this check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hashbay.drivers.errors import SafetyViolation


@dataclass(frozen=True)
class FanLimits:
    duty_min: float
    duty_max: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.duty_min <= self.duty_max <= 1.0:
            raise ValueError(f"fan duty limits must satisfy 0 <= min <= max <= 1, got {self}")


class SafetyEnvelope:
    """Checks requested settings against the configured limits."""

    def __init__(self, fans: FanLimits) -> None:
        self.fans = fans

    def fan_duty(self, duty: float, *, what: str = "fan") -> float:
        """The duty to write, or SafetyViolation if it lies outside the limits."""
        _require_finite(duty, f"{what} duty")
        if not self.fans.duty_min <= duty <= self.fans.duty_max:
            raise SafetyViolation(
                f"{what} duty {duty:.3f} refused: allowed {self.fans.duty_min:.2f} to "
                f"{self.fans.duty_max:.2f} (limits.fan_duty_min/max)"
            )
        return duty


def _require_finite(value: float, what: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise SafetyViolation(f"{what} {value!r} refused: not a finite number")
