"""How health reasons are told: shares, durations, hashrates and chip lists in words."""

from __future__ import annotations

FAULT_PENALTY = 100.0
"""A fault condition takes the whole score: the module must come out whatever else holds."""

CHIPS_LISTED = 8


def others_mean(total_c: float, count: int, reading: float | None) -> float | None:
    if reading is None:
        return total_c / count if count else None
    return (total_c - reading) / (count - 1) if count > 1 else None


def hashrate_words(hashrate_hs: float) -> str:
    for scale, unit in ((1e15, "PH/s"), (1e12, "TH/s"), (1e9, "GH/s"), (1e6, "MH/s")):
        if hashrate_hs >= scale:
            return f"{hashrate_hs / scale:.1f} {unit}"
    return f"{hashrate_hs:.0f} H/s"


def pct(share: float) -> str:
    """A share in words: two significant digits, so 0.0012 reads 0.12 %, not 0 %."""
    percent = share * 100
    if percent == 0 or percent >= 10:
        return f"{percent:.0f} %"
    return f"{percent:.2g} %"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def chip_list(chips: set[int] | list[int]) -> str:
    ordered = sorted(chips)
    shown = ", ".join(str(chip) for chip in ordered[:CHIPS_LISTED])
    return shown + ("…" if len(ordered) > CHIPS_LISTED else "")
