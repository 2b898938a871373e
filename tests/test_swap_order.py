"""The swap order: faulted modules, then predicted failures, then the rest by health."""

from __future__ import annotations

from typing import Any

from hashbay.agent.modules.swap_order import swap_order, swap_rank


def slot(
    n: int,
    score: float,
    *,
    state: str = "hashing",
    level: str = "ok",
    ttf_s: float | None = None,
) -> dict[str, Any]:
    return {
        "slot": n,
        "state": state,
        "serial": f"HB{n:04d}",
        "health": {"score": score, "level": level},
        "prediction": {"degrading": ttf_s is not None, "time_to_failure_s": ttf_s},
    }


def test_a_warned_module_comes_before_every_healthy_one_whatever_their_dips() -> None:
    slots = [
        slot(0, 72.0),  # a noisy UART
        slot(1, 85.0),  # throttled
        slot(2, 40.0, level="degraded"),  # just woken, or a fan stalled
        slot(3, 100.0, ttf_s=5 * 3600),  # a chip on its way to failure, still scoring 100
    ]
    assert [s["slot"] for s in swap_order(slots)] == [3, 2, 0, 1]


def test_faulted_modules_first_then_sooner_failures_then_empty_slots_last() -> None:
    slots = [
        {"slot": 0, "state": "empty", "serial": None, "health": None, "prediction": None},
        slot(1, 65.0, ttf_s=9 * 3600),
        slot(2, 65.0, ttf_s=2 * 3600),
        slot(3, 0.0, state="fault", level="fault"),
        slot(4, 90.0),
    ]
    assert [s["slot"] for s in swap_order(slots)] == [3, 2, 1, 4, 0]


def test_missing_or_odd_fields_still_rank() -> None:
    odd = {"slot": 5, "state": "hashing", "serial": "X", "health": {"score": "n/a"}}
    assert swap_rank(odd) == swap_rank(slot(5, 100.0))
    assert swap_rank({}) == swap_rank({"state": "empty"})
