"""Reading a stored record (tune profile, predictor state) back as untrusted input.

The state directory survives power cuts, downgrades and hands: a file may be truncated,
written by another version, or edited. Every field is checked with the same rules the
agent applies to anything from outside (drivers/numbers.py); the first wrong one raises
RecordError saying which and why, and the store drops the whole record.
"""

from __future__ import annotations

from typing import Any

from hashbay.drivers.numbers import finite


class RecordError(ValueError):
    """A stored record is not one the agent can trust; the message says why."""


def number(
    raw: dict[str, Any],
    key: str,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    where: str = "",
) -> float:
    """`raw[key]` as a float within low..high (low excluded with `low_open`)."""
    value = finite(raw.get(key))
    name = f"{where}.{key}" if where else key
    if value is None:
        raise RecordError(f"{name} is missing or not a finite number")
    inside = (low < value if low_open else low <= value) and value <= high
    if not inside:
        raise RecordError(f"{name} {value!r} outside {low:g}..{high:g}")
    return value
