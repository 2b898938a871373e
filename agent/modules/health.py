"""Module health: a score 0..100 with the reasons behind it, and the level the slot acts on.

A hashboard can only be judged on statistics: a chip reports a nonce every second or two,
so one poll says almost nothing. Every rate here is taken over a sliding window of the
cumulative counters the chain driver keeps, and a rate is believed only once enough nonces
stand behind it (or, for the hashrate, once the shortfall exceeds its Poisson noise).

Cheap by construction: the window is a short queue of snapshots taken every
`window_s / window_slices` seconds, so one update costs a few C-level passes over the
chips (map, sum, compress) whatever the window length, and Python-level loops run only
over the chips that erred, went quiet or were reported missing.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from hashbay.agent.core.status import (
    ChipSample,
    Health,
    HealthLevel,
    ModuleSample,
    Prediction,
    Reason,
)
from hashbay.agent.modules.health_settings import HealthSettings

"""A chip erring on this share of its nonces has failed: shared with the predictor."""

FAULT_PENALTY = 100.0
"""A fault condition takes the whole score: the module must come out whatever else holds."""

WORST_CHIPS_SHOWN = 5
CHIPS_LISTED = 8


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
class _Snapshot:
    """Totals at one moment: the window's far end is the oldest snapshot kept."""

    at_s: float  # hashing time: how long the module had hashed by then
    nonces: list[int]
    errors: list[int]
    timeouts: list[int]
    reported: int
    work: float
    expected_work: float


class _SensorWatch:
    """What one temperature sensor has been saying, to tell lost and stuck ones apart."""

    __slots__ = (
        "others_then_c",
        "power_moved_s",
        "power_then_w",
        "since_s",
        "unreadable_since_s",
        "value_c",
    )

    def __init__(self, now_s: float) -> None:
        self.value_c: float | None = None
        self.since_s = now_s
        self.power_then_w: float | None = None
        self.others_then_c: float | None = None
        self.power_moved_s: float | None = None
        self.unreadable_since_s: float | None = now_s

    def see(
        self,
        reading_c: float | None,
        now_s: float,
        power_w: float | None,
        others_c: float | None,
        power_change: float,
    ) -> None:
        if reading_c is None:
            if self.unreadable_since_s is None:
                self.unreadable_since_s = now_s
            return
        self.unreadable_since_s = None
        if reading_c != self.value_c:
            self.value_c = reading_c
            self.since_s = now_s
            self.power_then_w = power_w
            self.others_then_c = others_c
            self.power_moved_s = None
        elif (
            self.power_moved_s is None
            and power_w is not None
            and self.power_then_w
            and abs(power_w - self.power_then_w) >= power_change * self.power_then_w
        ):
            self.power_moved_s = now_s

    def stuck(self, now_s: float, others_c: float | None, settings: HealthSettings) -> bool:
        if self.unreadable_since_s is not None or now_s - self.since_s < settings.stuck_after_s:
            return False
        if self.power_moved_s is not None and now_s - self.power_moved_s >= settings.stuck_settle_s:
            return True
        return (
            others_c is not None
            and self.others_then_c is not None
            and abs(others_c - self.others_then_c) >= settings.stuck_others_moved_c
        )


class HealthModel:
    """Health of one hashing module, fed every poll. Pure logic: no I/O, no clock.

    Rates are taken over hashing time: a module that slept (curtailed, unprofitable,
    restarted) is judged on the time it hashed, so waking never reads as a shortfall.
    """

    def __init__(
        self,
        settings: HealthSettings,
        chip_count: int,
        *,
        board_v_target: float | None = None,
    ) -> None:
        self.settings = settings
        self.chip_count = chip_count
        self.board_v_target = board_v_target
        self._counters = ChipCounters(chip_count)
        self._snapshots: deque[_Snapshot] = deque()
        self._slice_s = settings.window_s / settings.window_slices
        self._expected_work = 0.0
        self._hashing_s = 0.0
        self._last_at_s: float | None = None
        self._last_expected_hs = 0.0
        self._answered_timeouts = [0] * chip_count  # each chip's timeouts when it last answered
        self._sensors: list[_SensorWatch] = []
        self._blind_since_s: float | None = None
        self._rail_v: deque[float] = deque(maxlen=5)
        self._rail_unreadable_since_s: float | None = None
        self._level = HealthLevel.OK

    def set_board_v_target(self, board_v: float | None) -> None:
        """The rail voltage the agent now asks for: the autotuner moves it, and the rail
        is judged against what was asked, not against a fixed nominal."""
        self.board_v_target = board_v
        self._rail_v.clear()

    def update(self, sample: ModuleSample, prediction: Prediction | None = None) -> Health:
        """Score one poll; `prediction` (the predictor's word on this module) counts too."""
        counters = self._counters
        counters.absorb(sample.chips)
        if self._last_at_s is not None:
            if sample.at_s < self._last_at_s:
                self._snapshots.clear()  # the clock jumped back: start a fresh window
            else:
                hashed_s = sample.at_s - self._last_at_s
                if sample.hashing_for_s is not None:  # the chain restarted since the last poll
                    hashed_s = max(0.0, min(hashed_s, sample.hashing_for_s))
                self._hashing_s += hashed_s
                self._expected_work += self._last_expected_hs * hashed_s
        self._last_at_s = sample.at_s
        self._last_expected_hs = max(0.0, sample.expected_hs)
        now = self._hashing_s
        nonces, errors = counters.nonces, counters.errors
        reported = sum(nonces) + sum(errors)
        work = sum(counters.work)
        snapshots = self._snapshots
        if not snapshots or now - snapshots[-1].at_s >= self._slice_s:
            snapshots.append(
                _Snapshot(
                    now, nonces, errors, counters.timeouts, reported, work, self._expected_work
                )
            )
        while len(snapshots) >= 2 and snapshots[1].at_s <= now - self.settings.window_s:
            snapshots.popleft()
        base = snapshots[0]
        span_s = now - base.at_s

        reasons: list[Reason] = []
        faults: list[Reason] = []
        hashrate_hs = max(0.0, work - base.work) / span_s if span_s > 0 else 0.0
        expected_work = self._expected_work - base.expected_work
        expected_hs = expected_work / span_s if expected_work > 0 else sample.expected_hs
        window_reported = reported - base.reported
        self._judge_hashrate(hashrate_hs, expected_hs, window_reported, span_s, reasons)

        d_errors = list(map(operator.sub, errors, base.errors))
        total_errors = sum(d_errors)
        hw_error_rate = total_errors / window_reported if window_reported > 0 else 0.0
        self._judge_module_errors(hw_error_rate, total_errors, window_reported, reasons)
        worst = self._judge_chip_errors(
            d_errors, nonces, base, span_s, reasons=reasons, faults=faults
        )
        missing = self._missing_chips(sample, counters.timeouts, nonces, errors, reported)
        self._judge_missing(missing, reasons, faults)
        self._judge_timeouts(counters.timeouts, base, missing, span_s, reasons)
        self._judge_temperatures(sample, reasons, faults)
        self._judge_rail(sample, reasons, faults)
        self._judge_prediction(prediction, reasons)
        self._judge_bus(sample, reasons)
        if sample.fans_stalled > 0:
            s = self.settings
            reasons.append(
                Reason(
                    "fans_stalled",
                    f"{sample.fans_stalled} fan{'s' if sample.fans_stalled > 1 else ''} "
                    "stalled: the board loses airflow",
                    min(s.fan_penalty_max, s.fan_penalty_each * sample.fans_stalled),
                )
            )

        every = sorted([*faults, *reasons], key=lambda r: (-r.penalty, r.code))
        score = max(0.0, min(100.0, 100.0 - sum(r.penalty for r in every)))
        self._level = self._next_level(score, bool(faults))
        return Health(
            score=round(score, 1),
            level=self._level,
            reasons=tuple(every),
            hashrate_hs=hashrate_hs,
            expected_hs=expected_hs,
            hw_error_rate=hw_error_rate,
            chips_answering=self.chip_count - len(missing),
            chips_total=self.chip_count,
            worst_chips=worst,
        )

    def _next_level(self, score: float, faulted: bool) -> HealthLevel:
        s = self.settings
        if faulted:
            return HealthLevel.FAULT
        if score < s.degraded_below:
            return HealthLevel.DEGRADED
        if self._level is not HealthLevel.OK and score < s.recovered_at:
            return HealthLevel.DEGRADED
        return HealthLevel.OK

    # -- hashing -------------------------------------------------------------------------

    def _judge_hashrate(
        self,
        hashrate_hs: float,
        expected_hs: float,
        reported: int,
        span_s: float,
        reasons: list[Reason],
    ) -> None:
        s = self.settings
        if expected_hs <= 0 or reported < s.min_rate_nonces:
            return
        deficit = 1.0 - hashrate_hs / expected_hs
        noise = 3.0 / math.sqrt(reported)  # the window's hashrate is a Poisson count
        excess = deficit - s.hashrate_deficit_start - noise
        if excess <= 0:
            return
        penalty = min(s.hashrate_penalty_max, s.hashrate_penalty_per_pct * excess * 100)
        reasons.append(
            Reason(
                "hashrate_low",
                f"hashrate {_hs(hashrate_hs)} is {_pct(deficit)} below expected "
                f"{_hs(expected_hs)} over the last {_duration(span_s)}",
                penalty,
            )
        )

    def _judge_module_errors(
        self, rate: float, errors: int, reported: int, reasons: list[Reason]
    ) -> None:
        s = self.settings
        if reported < s.min_rate_nonces or rate <= s.module_error_start:
            return
        penalty = min(
            s.module_error_penalty_max,
            s.module_error_penalty_per_pct * (rate - s.module_error_start) * 100,
        )
        reasons.append(
            Reason(
                "hw_errors",
                f"{_pct(rate)} of the module's {reported} nonces failed verification "
                f"({errors} hardware errors)",
                penalty,
            )
        )

    def _judge_chip_errors(
        self,
        d_errors: list[int],
        nonces: list[int],
        base: _Snapshot,
        span_s: float,
        *,
        reasons: list[Reason],
        faults: list[Reason],
    ) -> tuple[tuple[int, float], ...]:
        s = self.settings
        rates: list[tuple[float, int, int]] = []
        for chip in itertools.compress(range(self.chip_count), d_errors):
            errs = d_errors[chip]
            total = errs + nonces[chip] - base.nonces[chip]
            if total >= s.min_rate_nonces:
                rates.append((errs / total, chip, total))
        if not rates:
            return ()
        rates.sort(reverse=True)
        failed = [(rate, chip, n) for rate, chip, n in rates if rate >= s.chip_fault_error_rate]
        if failed:
            rate, chip, n = failed[0]
            more = f"; {len(failed) - 1} more chips too" if len(failed) > 1 else ""
            faults.append(
                Reason(
                    "chip_failed",
                    f"chip {chip} errs on {_pct(rate)} of its {n} nonces over the last "
                    f"{_duration(span_s)} (fault at {_pct(s.chip_fault_error_rate)}){more}",
                    FAULT_PENALTY,
                )
            )
        erring = [(rate, chip, n) for rate, chip, n in rates if rate >= s.chip_error_warn]
        if erring:
            penalty = sum(
                s.chip_error_penalty_each * min(1.0, rate / s.chip_fault_error_rate)
                for rate, _, _ in erring
            )
            listed = ", ".join(
                f"{chip} ({_pct(rate)} of {n})" for rate, chip, n in erring[:CHIPS_LISTED]
            )
            extra = "…" if len(erring) > CHIPS_LISTED else ""
            reasons.append(
                Reason(
                    "chip_errors",
                    f"{len(erring)} chip{'s' if len(erring) > 1 else ''} err on "
                    f"≥{_pct(s.chip_error_warn)} of their nonces: {listed}{extra}",
                    min(s.chip_error_penalty_max, penalty),
                )
            )
        return tuple((chip, rate) for rate, chip, _ in rates[:WORST_CHIPS_SHOWN])

    # -- chips answering -----------------------------------------------------------------

    def _missing_chips(
        self,
        sample: ModuleSample,
        timeouts: list[int],
        nonces: list[int],
        errors: list[int],
        reported: int,
    ) -> set[int]:
        """Chips the driver could not reach in `missing_confirm_polls` polls in a row, and
        chips that went quiet while their peers kept finding nonces: silence is judged
        since the newest snapshot far enough back for the peers to have averaged
        `silent_after_nonces` each."""
        missing = self._confirmed_missing(sample, timeouts)
        needed = self.settings.silent_after_nonces * self.chip_count
        for snap in reversed(self._snapshots):
            if reported - snap.reported >= needed:
                since = list(map(operator.sub, map(operator.add, nonces, errors), snap.nonces))
                since = list(map(operator.sub, since, snap.errors))
                if 0 in since:
                    missing.update(chip for chip, count in enumerate(since) if count == 0)
                break
        return missing

    def _confirmed_missing(self, sample: ModuleSample, timeouts: list[int]) -> set[int]:
        """Each missed poll adds a timeout: a chip has missed as many polls in a row as it
        has timeouts since the last poll it answered."""
        absent = {chip for chip in sample.missing_chips if 0 <= chip < self.chip_count}
        answered = self._answered_timeouts
        if not absent:
            self._answered_timeouts = timeouts  # never mutated: a reference is a snapshot
            return set()
        self._answered_timeouts = [
            answered[chip] if chip in absent else count for chip, count in enumerate(timeouts)
        ]
        need = self.settings.missing_confirm_polls
        return {chip for chip in absent if timeouts[chip] - answered[chip] >= need}

    def _judge_missing(
        self, missing: set[int], reasons: list[Reason], faults: list[Reason]
    ) -> None:
        if not missing:
            return
        s = self.settings
        share = len(missing) / self.chip_count
        listed = _chip_list(missing)
        text = f"{len(missing)} of {self.chip_count} chips not answering: {listed}"
        if share >= s.missing_fault_share:
            faults.append(
                Reason(
                    "chips_lost",
                    f"{text} (fault at {_pct(s.missing_fault_share)} of the chain)",
                    FAULT_PENALTY,
                )
            )
            return
        penalty = min(s.missing_penalty_max, s.missing_penalty_per_pct * share * 100)
        reasons.append(Reason("chips_missing", text, penalty))

    def _judge_timeouts(
        self,
        timeouts: list[int],
        base: _Snapshot,
        missing: set[int],
        span_s: float,
        reasons: list[Reason],
    ) -> None:
        s = self.settings
        d_timeouts = list(map(operator.sub, timeouts, base.timeouts))
        if max(d_timeouts, default=0) < s.chip_timeouts_warn:
            return
        flaky = [
            chip
            for chip, count in enumerate(d_timeouts)
            if count >= s.chip_timeouts_warn and chip not in missing
        ]
        if not flaky:
            return
        worst = max(d_timeouts[chip] for chip in flaky)
        reasons.append(
            Reason(
                "chip_timeouts",
                f"{len(flaky)} chip{'s' if len(flaky) > 1 else ''} missed polls but still "
                f"hash: {_chip_list(flaky)} (up to {worst} timeouts in {_duration(span_s)})",
                min(s.chip_timeout_penalty_max, s.chip_timeout_penalty_each * len(flaky)),
            )
        )

    # -- what the predictor says ----------------------------------------------------------

    def _judge_prediction(self, prediction: Prediction | None, reasons: list[Reason]) -> None:
        if prediction is None:
            return
        s = self.settings
        if prediction.degrading:
            reasons.append(
                Reason("degrading", f"expected to fail: {prediction.trend}", s.degrading_penalty)
            )
        steps = prediction.steps
        if steps:
            listed = ", ".join(
                f"{st.chip} ({_pct(st.rate_before)} → {_pct(st.rate_after)})"
                for st in steps[:CHIPS_LISTED]
            )
            extra = "…" if len(steps) > CHIPS_LISTED else ""
            plural = len(steps) > 1
            reasons.append(
                Reason(
                    "chip_error_step",
                    f"{len(steps)} chip{'s' if plural else ''} whose error rate stepped up "
                    f"and stayed (a change, not aging): {listed}{extra}",
                    min(s.step_penalty_max, s.step_penalty_each * len(steps)),
                )
            )

    # -- heat and power ------------------------------------------------------------------

    def _judge_temperatures(
        self, sample: ModuleSample, reasons: list[Reason], faults: list[Reason]
    ) -> None:
        s = self.settings
        now = sample.at_s
        temps = sample.temps_c
        while len(self._sensors) < len(temps):
            self._sensors.append(_SensorWatch(now))
        power_w = (
            sample.board_v * sample.board_a
            if sample.board_v is not None and sample.board_a is not None
            else None
        )
        readable = [t for t in temps if t is not None]
        total_c, count = sum(readable), len(readable)
        usable: list[tuple[float, int]] = []
        for index, (watch, reading) in enumerate(zip(self._sensors, temps, strict=False)):
            others = _others_mean(total_c, count, reading)
            watch.see(reading, now, power_w, others, s.stuck_power_change)
            if reading is None:
                lost_s = now - (watch.unreadable_since_s or now)
                if lost_s >= s.sensor_lost_after_s:
                    reasons.append(
                        Reason(
                            "sensor_unreadable",
                            f"temperature sensor {index} unreadable for {_duration(lost_s)}",
                            s.sensor_penalty,
                        )
                    )
            elif watch.stuck(now, others, s):
                reasons.append(
                    Reason(
                        "sensor_stuck",
                        f"temperature sensor {index} has read exactly {reading:.2f} °C for "
                        f"{_duration(now - watch.since_s)} while the board's power or its "
                        "other sensors moved",
                        s.sensor_penalty,
                    )
                )
            else:
                usable.append((reading, index))
        if temps:
            self._judge_blind(bool(usable), now, faults)
        if usable:
            hottest_c, sensor = max(usable)
            if hottest_c >= s.temp_fault_c:
                faults.append(
                    Reason(
                        "overheat",
                        f"board at {hottest_c:.1f} °C (sensor {sensor}), fault at "
                        f"{s.temp_fault_c:g} °C",
                        FAULT_PENALTY,
                    )
                )
            elif hottest_c > s.temp_warn_c:
                reasons.append(
                    Reason(
                        "temp_high",
                        f"board at {hottest_c:.1f} °C (sensor {sensor}), warning above "
                        f"{s.temp_warn_c:g} °C, fault at {s.temp_fault_c:g} °C",
                        min(s.temp_penalty_max, s.temp_penalty_per_c * (hottest_c - s.temp_warn_c)),
                    )
                )
        dcdc_c = sample.dcdc_temp_c
        if dcdc_c is not None and dcdc_c > s.dcdc_warn_c:
            reasons.append(
                Reason(
                    "dcdc_hot",
                    f"DC-DC converter at {dcdc_c:.1f} °C, warning above {s.dcdc_warn_c:g} °C",
                    min(s.dcdc_penalty_max, s.dcdc_penalty_per_c * (dcdc_c - s.dcdc_warn_c)),
                )
            )

    def _judge_blind(self, any_usable: bool, now: float, faults: list[Reason]) -> None:
        if any_usable:
            self._blind_since_s = None
            return
        if self._blind_since_s is None:
            self._blind_since_s = now
        blind_s = now - self._blind_since_s
        if blind_s >= self.settings.blind_fault_after_s:
            faults.append(
                Reason(
                    "temps_unknown",
                    f"no usable temperature sensor for {_duration(blind_s)}: overheating "
                    "would go unseen",
                    FAULT_PENALTY,
                )
            )

    def _judge_rail(
        self, sample: ModuleSample, reasons: list[Reason], faults: list[Reason]
    ) -> None:
        s = self.settings
        if sample.rail_fault:
            faults.append(
                Reason(
                    "rail_fault", f"power rail fault latched: {sample.rail_fault}", FAULT_PENALTY
                )
            )
        if sample.board_v is None:
            if self._rail_unreadable_since_s is None:
                self._rail_unreadable_since_s = sample.at_s
            lost_s = sample.at_s - self._rail_unreadable_since_s
            if lost_s >= s.rail_unreadable_after_s:
                reasons.append(
                    Reason(
                        "rail_unreadable",
                        f"rail voltage unreadable for {_duration(lost_s)}",
                        s.rail_unreadable_penalty,
                    )
                )
            return
        self._rail_unreadable_since_s = None
        self._rail_v.append(sample.board_v)
        target = self.board_v_target
        if not target or sample.rail_fault:
            return
        board_v = sorted(self._rail_v)[len(self._rail_v) // 2]  # one odd reading is noise
        off = (board_v - target) / target
        excess = abs(off) - s.rail_tolerance
        if excess > 0:
            side = "above" if off > 0 else "below"
            reasons.append(
                Reason(
                    "rail_voltage",
                    f"rail at {board_v:.2f} V is {_pct(abs(off))} {side} its {target:.2f} V target",
                    min(s.rail_penalty_max, s.rail_penalty_per_pct * excess * 100),
                )
            )

    def _judge_bus(self, sample: ModuleSample, reasons: list[Reason]) -> None:
        """Noisy bus devices (judged by agent/hardware/bus_health.py) cost points, each named."""
        s = self.settings
        for n, text in enumerate(sample.bus_noise):
            spent = n * s.bus_penalty_each
            penalty = min(s.bus_penalty_each, max(0.0, s.bus_penalty_max - spent))
            reasons.append(Reason("bus_noise", f"noisy bus device: {text}", penalty))


def _others_mean(total_c: float, count: int, reading: float | None) -> float | None:
    if reading is None:
        return total_c / count if count else None
    return (total_c - reading) / (count - 1) if count > 1 else None


def _hs(hashrate_hs: float) -> str:
    for scale, unit in ((1e15, "PH/s"), (1e12, "TH/s"), (1e9, "GH/s"), (1e6, "MH/s")):
        if hashrate_hs >= scale:
            return f"{hashrate_hs / scale:.1f} {unit}"
    return f"{hashrate_hs:.0f} H/s"


def _pct(share: float) -> str:
    """A share in words: two significant digits, so 0.0012 reads 0.12 %, not 0 %."""
    percent = share * 100
    if percent == 0 or percent >= 10:
        return f"{percent:.0f} %"
    return f"{percent:.2g} %"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _chip_list(chips: set[int] | list[int]) -> str:
    ordered = sorted(chips)
    shown = ", ".join(str(chip) for chip in ordered[:CHIPS_LISTED])
    return shown + ("…" if len(ordered) > CHIPS_LISTED else "")
