"""Per-chip counters for health and prediction: totals that only grow across re-enumerations
of the chain, and snapshots of them that bound a window."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

from hashbay.agent.core.status import ChipSample


@dataclass(frozen=True, slots=True)
class _Counts:
    """The four per-chip counters of one sample, as lists indexed by chip."""

    nonces: list[int]
    errors: list[int]
    timeouts: list[int]
    work: list[float]

    @classmethod
    def of(cls, chips: Sequence[ChipSample]) -> _Counts:
        return cls(
            [c.nonces for c in chips],
            [c.hw_errors for c in chips],
            [c.timeouts for c in chips],
            [c.work for c in chips],
        )

    @classmethod
    def zeros(cls, chip_count: int) -> _Counts:
        return cls([0] * chip_count, [0] * chip_count, [0] * chip_count, [0.0] * chip_count)

    def went_down(self, before: _Counts) -> bool:
        lt = operator.lt
        return (
            any(map(lt, self.nonces, before.nonces))
            or any(map(lt, self.errors, before.errors))
            or any(map(lt, self.timeouts, before.timeouts))
            or any(map(lt, self.work, before.work))
        )

    def chip_went_down(self, chip: int, before: _Counts) -> bool:
        return (
            self.nonces[chip] < before.nonces[chip]
            or self.errors[chip] < before.errors[chip]
            or self.timeouts[chip] < before.timeouts[chip]
            or self.work[chip] < before.work[chip]
        )

    def completed(self, before: _Counts, chip_count: int) -> _Counts:
        """These counters for exactly `chip_count` chips: absent ones keep `before`."""
        have = len(self.nonces)
        return _Counts(
            (self.nonces + before.nonces[have:])[:chip_count],
            (self.errors + before.errors[have:])[:chip_count],
            (self.timeouts + before.timeouts[have:])[:chip_count],
            (self.work + before.work[have:])[:chip_count],
        )

    def plus(self, other: _Counts) -> _Counts:
        add = operator.add
        return _Counts(
            list(map(add, self.nonces, other.nonces)),
            list(map(add, self.errors, other.errors)),
            list(map(add, self.timeouts, other.timeouts)),
            list(map(add, self.work, other.work)),
        )


class ChipCounters:
    """Per-chip totals that only grow, across re-enumerations of the chain.

    The driver's counters restart at zero when the chain is enumerated again. A counter
    that goes down is taken as such a restart and what was counted before is carried as
    an offset, so windows and trends that span the restart stay right. A sample with fewer
    chips than expected leaves the absent chips' totals where they were.
    """

    __slots__ = ("_last", "_offsets", "_totals", "chip_count", "resets")

    def __init__(self, chip_count: int) -> None:
        if chip_count < 1:
            raise ValueError(f"chip_count {chip_count} must be at least 1")
        self.chip_count = chip_count
        self.resets = 0
        self._totals = _Counts.zeros(chip_count)
        self._last: _Counts | None = None
        self._offsets: _Counts | None = None

    @property
    def nonces(self) -> list[int]:
        return self._totals.nonces

    @property
    def errors(self) -> list[int]:
        return self._totals.errors

    @property
    def timeouts(self) -> list[int]:
        return self._totals.timeouts

    @property
    def work(self) -> list[float]:
        return self._totals.work

    def absorb(self, chips: Sequence[ChipSample]) -> None:
        """Take one sample's cumulative counters. The lists are replaced, never mutated,
        so a caller may keep references to earlier ones as snapshots."""
        raw = _Counts.of(chips)
        last = self._last
        if len(chips) != self.chip_count:
            raw = raw.completed(last or _Counts.zeros(self.chip_count), self.chip_count)
        if last is not None and raw.went_down(last):
            self._carry_offsets(raw, last)
        self._last = raw
        self._totals = raw if self._offsets is None else raw.plus(self._offsets)

    def _carry_offsets(self, raw: _Counts, last: _Counts) -> None:
        self.resets += 1
        if self._offsets is None:
            self._offsets = _Counts.zeros(self.chip_count)
        offsets = self._offsets
        for chip in range(self.chip_count):
            if raw.chip_went_down(chip, last):
                offsets.nonces[chip] += last.nonces[chip]
                offsets.errors[chip] += last.errors[chip]
                offsets.timeouts[chip] += last.timeouts[chip]
                offsets.work[chip] += last.work[chip]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Totals at one moment: the window's far end is the oldest snapshot kept."""

    at_s: float  # hashing time: how long the module had hashed by then
    nonces: list[int]
    errors: list[int]
    timeouts: list[int]
    reported: int
    work: float
    expected_work: float
