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

from hashbay.agent.core.status import (
    Health,
    HealthLevel,
    ModuleSample,
    Prediction,
    Reason,
)
from hashbay.agent.modules.health_board import BoardConditions
from hashbay.agent.modules.health_counts import ChipCounters, Snapshot
from hashbay.agent.modules.health_settings import HealthSettings
from hashbay.agent.modules.health_words import (
    CHIPS_LISTED,
    FAULT_PENALTY,
    chip_list,
    duration,
    hashrate_words,
    pct,
)

WORST_CHIPS_SHOWN = 5


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
        self._board = BoardConditions(settings, board_v_target)
        self._counters = ChipCounters(chip_count)
        self._snapshots: deque[Snapshot] = deque()
        self._slice_s = settings.window_s / settings.window_slices
        self._expected_work = 0.0
        self._hashing_s = 0.0
        self._last_at_s: float | None = None
        self._last_expected_hs = 0.0
        self._answered_timeouts = [0] * chip_count  # each chip's timeouts when it last answered
        self._level = HealthLevel.OK

    def set_board_v_target(self, board_v: float | None) -> None:
        """The rail voltage the agent now asks for: the autotuner moves it, and the rail
        is judged against what was asked, not against a fixed nominal."""
        self._board.set_board_v_target(board_v)

    @property
    def board_v_target(self) -> float | None:
        return self._board.board_v_target

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
                Snapshot(
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
        self._board.judge(sample, reasons, faults)
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
                f"hashrate {hashrate_words(hashrate_hs)} is {pct(deficit)} below expected "
                f"{hashrate_words(expected_hs)} over the last {duration(span_s)}",
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
                f"{pct(rate)} of the module's {reported} nonces failed verification "
                f"({errors} hardware errors)",
                penalty,
            )
        )

    def _judge_chip_errors(
        self,
        d_errors: list[int],
        nonces: list[int],
        base: Snapshot,
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
                    f"chip {chip} errs on {pct(rate)} of its {n} nonces over the last "
                    f"{duration(span_s)} (fault at {pct(s.chip_fault_error_rate)}){more}",
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
                f"{chip} ({pct(rate)} of {n})" for rate, chip, n in erring[:CHIPS_LISTED]
            )
            extra = "…" if len(erring) > CHIPS_LISTED else ""
            reasons.append(
                Reason(
                    "chip_errors",
                    f"{len(erring)} chip{'s' if len(erring) > 1 else ''} err on "
                    f"≥{pct(s.chip_error_warn)} of their nonces: {listed}{extra}",
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
        listed = chip_list(missing)
        text = f"{len(missing)} of {self.chip_count} chips not answering: {listed}"
        if share >= s.missing_fault_share:
            faults.append(
                Reason(
                    "chips_lost",
                    f"{text} (fault at {pct(s.missing_fault_share)} of the chain)",
                    FAULT_PENALTY,
                )
            )
            return
        penalty = min(s.missing_penalty_max, s.missing_penalty_per_pct * share * 100)
        reasons.append(Reason("chips_missing", text, penalty))

    def _judge_timeouts(
        self,
        timeouts: list[int],
        base: Snapshot,
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
                f"hash: {chip_list(flaky)} (up to {worst} timeouts in {duration(span_s)})",
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
                f"{st.chip} ({pct(st.rate_before)} → {pct(st.rate_after)})"
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

    def _judge_bus(self, sample: ModuleSample, reasons: list[Reason]) -> None:
        """Noisy bus devices (judged by agent/hardware/bus_health.py) cost points, each named."""
        s = self.settings
        for n, text in enumerate(sample.bus_noise):
            spent = n * s.bus_penalty_each
            penalty = min(s.bus_penalty_each, max(0.0, s.bus_penalty_max - spent))
            reasons.append(Reason("bus_noise", f"noisy bus device: {text}", penalty))
