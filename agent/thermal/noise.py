"""How loud the fans are, and how fast they may spin under a noise cap.

A fan's sound power grows with the fifth power of its speed (the fan laws), so its level
is `dba_at_max + 50·log10(rpm / rpm_max)`; fans are incoherent sources, so their levels
add as powers: `10·log10(Σ 10^(L/10))`. Below its stop duty a fan does not turn and is
silent; above it, its speed is proportional to the duty. The same physics as the
simulator's, written here so the agent never depends on the simulator.

Because every running fan gets the same duty, the total level is the level of all those
fans at full speed plus `50·log10(duty)`, which inverts in closed form: the highest duty
under a cap needs no search.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

SPEED_EXPONENT_DB = 50.0
"""dB per decade of speed: sound power ∝ rpm^5."""


class FanSpec(Protocol):
    """What the noise model needs to know about a fan (the `[[fan]]` config entry)."""

    @property
    def rpm_max(self) -> float: ...

    @property
    def dba_at_max(self) -> float: ...

    @property
    def stop_duty(self) -> float: ...


@dataclass(frozen=True)
class FanModel:
    rpm_max: float
    dba_at_max: float
    stop_duty: float = 0.0

    def __post_init__(self) -> None:
        if not self.rpm_max > 0 or not math.isfinite(self.dba_at_max):
            raise ValueError(f"fan model needs rpm_max > 0 and a finite level, got {self}")
        if not 0.0 <= self.stop_duty < 1.0:
            raise ValueError(f"stop_duty {self.stop_duty} must be in [0, 1)")

    def rpm_at(self, duty: float) -> float:
        """Speed the fan settles at for `duty` (0 below its stop duty)."""
        duty = min(1.0, max(0.0, duty))
        if duty <= 0.0 or duty < self.stop_duty:
            return 0.0
        return self.rpm_max * duty

    def level_dba(self, rpm: float) -> float:
        """This fan's level at `rpm`; -inf when it stands still."""
        if not 0 < rpm < math.inf:  # also NaN: a reading that says nothing is no sound
            return -math.inf
        return self.dba_at_max + SPEED_EXPONENT_DB * (math.log10(rpm) - math.log10(self.rpm_max))


def combine_dba(levels: Iterable[float]) -> float:
    """Level of incoherent sources together; -inf when all are silent (or none)."""
    audible = [level for level in levels if level > -math.inf]
    if not audible:
        return -math.inf
    loudest = max(audible)
    return loudest + 10.0 * math.log10(sum(10.0 ** ((lv - loudest) / 10.0) for lv in audible))


class NoiseModel:
    """The miner's fans as noise sources, in config order."""

    def __init__(self, fans: Sequence[FanModel]) -> None:
        if not fans:
            raise ValueError("a noise model needs at least one fan")
        self.fans = tuple(fans)

    @classmethod
    def of(cls, specs: Iterable[FanSpec]) -> NoiseModel:
        return cls([FanModel(s.rpm_max, s.dba_at_max, s.stop_duty) for s in specs])

    def level_dba(self, rpms: Sequence[float]) -> float:
        """Estimated total level from measured speeds, one per fan; -inf if all stand."""
        self._check_count(len(rpms))
        return combine_dba(fan.level_dba(rpm) for fan, rpm in zip(self.fans, rpms, strict=True))

    def level_at_duty(self, duty: float, running: Sequence[bool] | None = None) -> float:
        """Predicted total level with every running fan at `duty` (stalled fans are silent)."""
        return combine_dba(fan.level_dba(fan.rpm_at(duty)) for fan in self._running(running))

    def duty_for_cap(self, cap_dba: float, running: Sequence[bool] | None = None) -> float:
        """The highest common duty (at most 1) whose predicted level stays within `cap_dba`.

        Returns 0 when only standing fans meet the cap. Fans with different stop duties
        make the level a piecewise curve; each piece (a fixed set of turning fans) is
        inverted in closed form, from the loudest piece down.
        """
        if math.isnan(cap_dba):
            raise ValueError("noise cap must be a number")
        fans = self._running(running)
        starts = sorted({max(fan.stop_duty, 0.0) for fan in fans}, reverse=True)
        upper = 1.0
        for start in starts:
            turning = [fan for fan in fans if fan.stop_duty <= start]
            full_dba = combine_dba(fan.dba_at_max for fan in turning)
            duty = 10.0 ** ((cap_dba - full_dba) / SPEED_EXPONENT_DB)
            if duty >= start and duty > 0.0:
                # At `upper` the next fan starts and the level jumps: stay just below it.
                return duty if duty < upper else (1.0 if upper == 1.0 else math.nextafter(upper, 0))
            upper = start
        return 0.0

    def _running(self, running: Sequence[bool] | None) -> list[FanModel]:
        if running is None:
            return list(self.fans)
        self._check_count(len(running))
        return [fan for fan, on in zip(self.fans, running, strict=True) if on]

    def _check_count(self, count: int) -> None:
        if count != len(self.fans):
            raise ValueError(f"{count} values for {len(self.fans)} fans")


def finite_or_none(level_dba: float) -> float | None:
    """A level for JSON: silence (-inf) is published as null."""
    return level_dba if math.isfinite(level_dba) else None
