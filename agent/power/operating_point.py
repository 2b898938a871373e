"""From a watt budget to clocks and a voltage for one board.

With a tuned profile the board has measured points (a voltage and a clock per chip,
with the power and good hashrate they gave); the planner picks the most efficient point
that fits the budget. Without one it runs the module's nominal voltage and scales the
common clock, using a power model learned from the board's own readings. Throttling
(protection) scales the chosen clocks down. Every value is clamped to the module's
limits here, and checked again by the envelope when it is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from hashbay.agent.power.governor import CurvePoint, Mode
from hashbay.drivers.envelope import BoardLimits

STATIC_SHARE = 0.15  # leakage share of a board's power at nominal clock (S19/S21 class)
CURVE_STEPS = 8
LEARN_WEIGHT = 0.2  # how much one power reading moves the learned model


class TunedPoint(Protocol):
    """One point of an autotuned profile."""

    @property
    def board_v(self) -> float: ...
    @property
    def freqs_mhz(self) -> tuple[float, ...]: ...
    @property
    def power_w(self) -> float: ...
    @property
    def hashrate_hs(self) -> float: ...


@dataclass(frozen=True)
class OperatingPoint:
    board_v: float
    freqs_mhz: tuple[float, ...]
    why: str = ""

    def close_to(
        self, other: OperatingPoint | None, *, mhz: float = 1.0, volts: float = 0.005
    ) -> bool:
        if other is None or len(other.freqs_mhz) != len(self.freqs_mhz):
            return False
        return abs(self.board_v - other.board_v) <= volts and all(
            abs(a - b) <= mhz for a, b in zip(self.freqs_mhz, other.freqs_mhz, strict=True)
        )

    @property
    def mean_freq_mhz(self) -> float:
        return sum(self.freqs_mhz) / len(self.freqs_mhz) if self.freqs_mhz else 0.0


class PointPlanner:
    """One per identified module; lives as long as the module stays in its slot."""

    def __init__(
        self,
        limits: BoardLimits,
        *,
        chip_count: int,
        nominal_v: float,
        nominal_freq_mhz: float,
        hashes_per_mhz: float,
        profile: Sequence[TunedPoint] = (),
    ) -> None:
        self.limits = limits
        self.chip_count = chip_count
        self.nominal_v = self._volts(nominal_v)
        self.nominal_freq_mhz = self._mhz(nominal_freq_mhz)
        self.hashes_per_mhz = hashes_per_mhz  # per chip
        # Until the board reports its power, assume its declared maximum: the safe side.
        self.nominal_power_w = limits.power_max_w
        self.profile = sorted(profile, key=lambda p: p.power_w)

    def use_profile(self, profile: Sequence[TunedPoint]) -> None:
        """A fresh tuning result: plan on it from now on."""
        self.profile = sorted(profile, key=lambda p: p.power_w)

    # -- learning and describing -----------------------------------------------------------

    def learn(self, power_w: float, point: OperatingPoint) -> None:
        """Refine the untuned power model from a reading taken at `point`."""
        share = point.mean_freq_mhz / self.nominal_freq_mhz if self.nominal_freq_mhz else 0.0
        if power_w <= 0 or share <= 0 or abs(point.board_v - self.nominal_v) > 0.01:
            return
        estimate = power_w / (STATIC_SHARE + (1 - STATIC_SHARE) * share)
        self.nominal_power_w += LEARN_WEIGHT * (estimate - self.nominal_power_w)

    def curve(self) -> list[CurvePoint]:
        """What this board can do, lowest power first (for the governor)."""
        if self.profile:
            return [CurvePoint(p.power_w, p.hashrate_hs) for p in self.profile]
        points = []
        low, high = self.limits.freq_min_mhz, self.nominal_freq_mhz
        for n in range(CURVE_STEPS):
            freq = low + (high - low) * n / (CURVE_STEPS - 1)
            points.append(CurvePoint(self._untuned_power(freq), self._hashrate(freq)))
        return points

    def power_w(self, point: OperatingPoint) -> float:
        """Estimated board power at `point` (for the PSU budget before a board speeds up)."""
        same_v = [p for p in self.profile if abs(p.board_v - point.board_v) <= 0.01]
        if same_v:
            tuned = max(same_v, key=lambda p: p.power_w)
            mean = sum(tuned.freqs_mhz) / len(tuned.freqs_mhz) if tuned.freqs_mhz else 0.0
            share = point.mean_freq_mhz / mean if mean else 1.0
            return tuned.power_w * (STATIC_SHARE + (1 - STATIC_SHARE) * share)
        return self._untuned_power(point.mean_freq_mhz)

    # -- choosing ------------------------------------------------------------------------

    def point_for(
        self, mode: Mode, budget_w: float | None, throttle: float = 1.0
    ) -> OperatingPoint:
        if mode is Mode.MIN:
            volts = self.profile[0].board_v if self.profile else self.nominal_v
            return self._finish(
                volts, [self.limits.freq_min_mhz] * self.chip_count, 1.0, "minimum power"
            )
        if self.profile:
            return self._tuned(budget_w, throttle)
        freq = self.nominal_freq_mhz
        why = "nominal"
        if budget_w is not None and budget_w < self._untuned_power(freq):
            share = (budget_w / self.nominal_power_w - STATIC_SHARE) / (1 - STATIC_SHARE)
            freq = self.nominal_freq_mhz * share
            why = f"budget {budget_w:.0f} W"
        return self._finish(self.nominal_v, [freq] * self.chip_count, throttle, why)

    def _tuned(self, budget_w: float | None, throttle: float) -> OperatingPoint:
        fitting = [p for p in self.profile if budget_w is None or p.power_w <= budget_w]
        if fitting:
            best = max(fitting, key=lambda p: p.hashrate_hs / p.power_w if p.power_w > 0 else 0.0)
            why = "tuned, most efficient" + (
                f" within {budget_w:.0f} W" if budget_w is not None else ""
            )
            return self._finish(best.board_v, list(best.freqs_mhz), throttle, why)
        lowest = self.profile[0]
        assert budget_w is not None  # with no budget every point fits
        dynamic = (
            (budget_w / lowest.power_w - STATIC_SHARE) / (1 - STATIC_SHARE) if lowest.power_w else 0
        )
        freqs = [f * dynamic for f in lowest.freqs_mhz]
        return self._finish(lowest.board_v, freqs, throttle, f"tuned, scaled to {budget_w:.0f} W")

    def _finish(
        self, volts: float, freqs: Sequence[float], throttle: float, why: str
    ) -> OperatingPoint:
        scale = max(0.0, min(1.0, throttle))
        if scale < 1.0:
            why += f", throttled to {scale:.0%}"
        clocks = tuple(round(self._mhz(f * scale), 2) for f in freqs)
        return OperatingPoint(round(self._volts(volts), 4), clocks, why)

    # -- the untuned model -------------------------------------------------------------------

    def _untuned_power(self, freq_mhz: float) -> float:
        share = freq_mhz / self.nominal_freq_mhz if self.nominal_freq_mhz else 0.0
        return self.nominal_power_w * (STATIC_SHARE + (1 - STATIC_SHARE) * share)

    def _hashrate(self, freq_mhz: float) -> float:
        return freq_mhz * self.hashes_per_mhz * self.chip_count

    def _mhz(self, freq: float) -> float:
        return min(self.limits.freq_max_mhz, max(self.limits.freq_min_mhz, freq))

    def _volts(self, volts: float) -> float:
        return min(self.limits.vout_max_v, max(self.limits.vout_min_v, volts))
