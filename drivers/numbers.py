"""One rule for every number that comes from outside: a real, finite number, maybe in a range.

NaN compares false with everything, so a check written `value < low or value > high`
lets it through; an infinity, or an integer too large for a float, breaks the arithmetic
later. The config, commands, stored controls, tune profiles, MQTT, Stratum and the safety
envelope all ask here instead of writing the check again.
"""

from __future__ import annotations

import math
from typing import TypeGuard


def finite(value: object) -> float | None:
    """`value` as a float if it is an int or float (never a bool) with a finite float value."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        return None
    return number if math.isfinite(number) else None


def is_finite(value: object) -> TypeGuard[int | float]:
    """Whether `value` is a real, finite number (see `finite`)."""
    return finite(value) is not None


def finite_in(value: object, low: float | None, high: float | None) -> float | None:
    """`value` as a float if it is finite and within low..high (None: unbounded), else None."""
    number = finite(value)
    if number is None:
        return None
    if (low is not None and number < low) or (high is not None and number > high):
        return None
    return number
