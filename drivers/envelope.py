"""The safe envelope: the one place that knows how far hardware may be driven.

Every driver setter that can hurt hardware (fan duty, board voltage, chip frequency,
power) asks the envelope first and writes only the value it returns; a value outside the
limits raises SafetyViolation before anything reaches a bus. Drivers keep their devices
private, so there is no path to the hardware that skips this check.

Board limits are the intersection of the site's caps (config) and what the module itself
declares in its EEPROM. A slot whose module has no trusted identity has no limits at all:
it can be neither powered nor tuned.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from hashbay.drivers.errors import SafetyViolation
from hashbay.drivers.numbers import is_finite


@dataclass(frozen=True)
class FanLimits:
    duty_min: float
    duty_max: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.duty_min <= self.duty_max <= 1.0:
            raise ValueError(f"fan duty limits must satisfy 0 <= min <= max <= 1, got {self}")


@dataclass(frozen=True)
class BoardLimits:
    """What one module may be driven to: board rail volts, chip MHz, board watts."""

    vout_min_v: float
    vout_max_v: float
    freq_min_mhz: float
    freq_max_mhz: float
    power_max_w: float

    def __post_init__(self) -> None:
        ordered = (
            0 < self.vout_min_v <= self.vout_max_v
            and 0 < self.freq_min_mhz <= self.freq_max_mhz
            and self.power_max_w > 0
        )
        if not ordered:
            raise ValueError(f"board limits are not ordered: {self}")

    def within(self, caps: BoardLimits) -> BoardLimits:
        """The intersection with the site caps; ValueError if nothing is left."""
        return BoardLimits(
            vout_min_v=max(self.vout_min_v, caps.vout_min_v),
            vout_max_v=min(self.vout_max_v, caps.vout_max_v),
            freq_min_mhz=max(self.freq_min_mhz, caps.freq_min_mhz),
            freq_max_mhz=min(self.freq_max_mhz, caps.freq_max_mhz),
            power_max_w=min(self.power_max_w, caps.power_max_w),
        )


class SafetyEnvelope:
    """Checks requested settings against fan limits, site caps and per-slot board limits."""

    def __init__(self, fans: FanLimits, board_caps: BoardLimits, psu_power_max_w: float) -> None:
        self.fans = fans
        self.board_caps = board_caps
        self.psu_power_max_w = psu_power_max_w
        self._boards: dict[int, BoardLimits] = {}
        self._lock = threading.Lock()

    # -- which module is in which slot -------------------------------------------------

    def admit_board(self, slot: int, declared: BoardLimits) -> BoardLimits:
        """Register a module's declared limits for a slot; returns the effective limits."""
        try:
            effective = declared.within(self.board_caps)
        except ValueError:
            raise SafetyViolation(
                f"slot {slot}: module limits {declared} do not overlap the site caps "
                f"{self.board_caps}; it will not be powered"
            ) from None
        with self._lock:
            self._boards[slot] = effective
        return effective

    def forget_board(self, slot: int) -> None:
        """The module left (or is untrusted): nothing more may be driven in this slot."""
        with self._lock:
            self._boards.pop(slot, None)

    def board(self, slot: int) -> BoardLimits:
        with self._lock:
            limits = self._boards.get(slot)
        if limits is None:
            raise SafetyViolation(
                f"slot {slot}: no trusted module identity, so no limits; "
                "read its EEPROM first (a blank or corrupt EEPROM needs service)"
            )
        return limits

    # -- the checks ------------------------------------------------------------------

    def fan_duty(self, duty: float, *, what: str = "fan") -> float:
        """The duty to write, or SafetyViolation if it lies outside the limits."""
        _require_finite(duty, f"{what} duty")
        if not self.fans.duty_min <= duty <= self.fans.duty_max:
            raise SafetyViolation(
                f"{what} duty {duty:.3f} refused: allowed {self.fans.duty_min:.2f} to "
                f"{self.fans.duty_max:.2f} (limits.fan_duty_min/max)"
            )
        return duty

    def power_on(self, slot: int) -> BoardLimits:
        """Powering a slot needs a trusted identity; returns its limits."""
        return self.board(slot)

    def board_voltage(self, slot: int, volts: float) -> float:
        limits = self.board(slot)
        what = f"slot {slot} voltage"
        return _within(what, volts, limits.vout_min_v, limits.vout_max_v, "V", 3, "this module")

    def chip_frequency(self, slot: int, mhz: float) -> float:
        limits = self.board(slot)
        what = f"slot {slot} frequency"
        return _within(what, mhz, limits.freq_min_mhz, limits.freq_max_mhz, "MHz", 1, "this module")

    def power_budget(self, slot: int, budget_w: float | None) -> float:
        """The most this board may be planned to draw: the budget asked for (None: no
        budget), never above the board's cap (its declared maximum within the site's
        limits.board_power_max_w). Clocks are chosen to fit it, so a board that draws more
        than its model says is slowed down rather than run past its cap."""
        cap_w = self.board(slot).power_max_w
        if budget_w is None:
            return cap_w
        _require_finite(budget_w, f"slot {slot} power budget")
        return min(max(budget_w, 0.0), cap_w)

    def power_target(self, watts: float) -> float:
        """The whole-miner input power the governor may hold: whatever a command, the
        config or the controls file asked for, never above what the miner may draw at the
        PSU input (limits.psu_power_max_w) and never below nothing."""
        _require_finite(watts, "power target")
        return min(max(watts, 0.0), self.psu_power_max_w)


def _within(  # noqa: PLR0917 - one call shape for every limit
    what: str, value: float, low: float, high: float, unit: str, decimals: int, source: str
) -> float:
    """The value if low <= value <= high, else SafetyViolation saying what is allowed."""
    _require_finite(value, what)
    if not low <= value <= high:
        raise SafetyViolation(
            f"{what} {value:.{decimals}f} {unit} refused: allowed {low:.{decimals}f} to "
            f"{high:.{decimals}f} {unit} ({source})"
        )
    return value


def _require_finite(value: float, what: str) -> None:
    if not is_finite(value):
        raise SafetyViolation(f"{what} {value!r} refused: not a finite number")
