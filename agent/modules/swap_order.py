"""Which module to swap first: one rule for the CLI, the MQTT slot states and a farm view.

It works on a slot's status as published (MQTT `…/slot/N/state`, the control socket's
`slots`), so anything that reads those can order modules the same way:

1. faulted modules (state `fault`, or health level `fault`): off, they must come out;
2. modules with a predictive warning (`prediction.degrading`), soonest expected failure
   first;
3. every other module, lowest health score first;
4. empty slots last. Ties keep slot order.

A warned module comes before every module without a warning whatever their scores: a
dip from a noisy UART, throttling or a module just woken passes in minutes, a chip on its
way to failure does not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

FAULTED, WARNED, HASHING, EMPTY = range(4)


def swap_rank(slot: Mapping[str, Any]) -> tuple[int, float, float]:
    """Sort key of one slot's published status: smaller is swapped first."""
    health = _table(slot.get("health"))
    prediction = _table(slot.get("prediction"))
    score = _number(health.get("score"), 100.0)
    if slot.get("state") == "fault" or health.get("level") == "fault":
        return (FAULTED, 0.0, score)
    if prediction.get("degrading") is True:
        return (WARNED, _number(prediction.get("time_to_failure_s"), math.inf), score)
    if slot.get("state") in (None, "empty") or not slot.get("serial"):
        return (EMPTY, 0.0, 0.0)
    return (HASHING, score, 0.0)


def swap_order(slots: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The slots, the one to swap first first (a stable sort: ties keep their order)."""
    return sorted(slots, key=swap_rank)


def _table(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: Any, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return default
