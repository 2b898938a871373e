"""Predictive maintenance: warn that a module is degrading, and when it will fail, hours
before the health model has to call it a fault.

An aging chip loses timing margin steadily, so the share of its nonces that fail grows
along a logistic curve in time: exponentially while it is small, saturating near one. The
predictor counts each chip's reported nonces and errors in buckets of hashing time, fits
that curve to a chip's recent buckets by maximum likelihood (`predict_fit`), and
extrapolates it to the failure rate. A warning needs all of: enough errors, a
likelihood-ratio test that rejects "the rate is steady" far beyond what Poisson noise does
across a fleet, a rate still rising in the latest part of the window, no window (however
long) that a single jump explains far better, and a failure time within the horizon.

What else moves an error rate, and how it is kept apart from aging:

- The operating point. A chip errs once its clock passes its clean clock, which grows
  with the overdrive above the chips' threshold voltage and shrinks as the board warms
  (the simulator's physics, calibrated on public S19/S21 figures). Each bucket therefore
  records every chip's *effective clock* x = clock / (overdrive share · thermal share):
  the clock that would stress it as much at nominal voltage and 65 °C. The fit carries x
  beside time with a bounded sensitivity, so throttling, power targets, profitability
  moves and warm afternoons move the expected rate, and aging stays what time explains.
  No evidence is thrown away when a clock changes.
- Tuning. The tuner makes chips err on purpose; the slot says so (`skip`), the bucket
  open when it started is closed, and nothing counted until it ends is evidence.
- A jump. A rate that one step explains far better than a trend (in any window: the long
  ones veto a short one's trend) is reported as a step, never as a time to failure.

Time here is the module's own hashing time, so curtailment, sleep and restarts neither
stretch nor dilute a trend, and `state()`/`restore()` carry the evidence, the warning and
what was announced with the module's serial (`predict_store`) across agent restarts and
slot moves.

Cheap: each window keeps at most 25 points, built incrementally from buckets as they
close (long windows from merged buckets); a window is judged when a point of its own
completes, with vectorised passes over the chips, a short screen for the chips with
enough errors and a small fit for the few that pass it.
"""

from __future__ import annotations

import itertools
import math
import operator
from array import array
from collections import deque
from dataclasses import dataclass

from hashbay.agent.core.status import ErrorStep, ModuleSample, Prediction
from hashbay.agent.modules.health_counts import ChipCounters
from hashbay.agent.modules.predict_fit import (
    Point,
    Trend,
    best_step,
    fit_logistic_trend,
    rising_lately,
    sigmoid,
)
from hashbay.agent.modules.predict_settings import HOUR_S, PredictSettings

MAX_FIT_POINTS = 24
"""Longer windows are fitted on merged buckets: the fit's cost stays flat, the trend
is no worse resolved at 1/24 of a window."""

PRESCREEN_Z = 2.5
"""How far the newest errors must stand out before a chip is worth a fit."""

TREND_OVER_STEP = 0.0
"""A trend is taken for aging only once it explains the errors better than any single jump
does: right after a jump the two look alike, and a few more buckets tell them apart."""

MIN_TREND_POINTS = 6
"""Fewer points than this (a long window early on) cannot tell a trend from a jump."""

CONFIRM_BUCKETS = 1
"""A chip's trend warns once it still holds this many buckets after it first did (ten
minutes at the default bucket): an exponential rise keeps rising, a jump stays flat."""

FORGET_BUCKETS = 12
"""A trend not seen again for this many buckets (an hour) must be confirmed afresh."""

REFERENCE_TEMP_C = 65.0
"""Board temperature at which the effective clock equals the clock."""

MIN_OVERDRIVE = 0.05
MIN_THERMAL = 0.5
"""Floors of the two shares: a rail read near zero or a absurd temperature must not
turn into an effective clock of millions of MHz."""


@dataclass(frozen=True, slots=True)
class Evidence:
    """One point of a window: counts over [start_s, end_s) of hashing time, and each
    chip's effective clock over it (MHz, time-weighted)."""

    start_s: float
    end_s: float
    reported: array[int]
    errors: array[int]
    x_mhz: array[float]


@dataclass(frozen=True, slots=True)
class RaisedWarning:
    """A raised warning: the trend it rests on, fitted at `fitted_s` (hashing time)."""

    chip: int
    logit_now: float
    slope_per_h: float
    slope_se_per_h: float
    fitted_s: float
    raised_s: float
    held_s: float

    def hours_to(self, rate: float, now_s: float) -> float:
        """Time until the rate reaches `rate` at the current operating point."""
        target = math.log(rate / (1.0 - rate)) if rate < 1 else math.inf
        logit = self.logit_now + self.slope_per_h * (now_s - self.fitted_s) / HOUR_S
        if logit >= target:
            return 0.0
        return (target - logit) / self.slope_per_h

    @property
    def rate_now(self) -> float:
        return sigmoid(self.logit_now)

    @property
    def doubling_h(self) -> float:
        growth = self.slope_per_h * (1.0 - self.rate_now)  # d ln(rate)/dt of a logistic
        return math.log(2.0) / growth if growth > 0 else math.inf

    @property
    def confidence(self) -> float:
        """1 - relative uncertainty of the growth rate: 0.8 when it is known to ±20 %."""
        return max(0.0, min(1.0, 1.0 - self.slope_se_per_h / self.slope_per_h))


@dataclass(frozen=True, slots=True)
class StepSeen:
    """A chip whose rate jumped: the rates either side, last confirmed at `held_s`."""

    chip: int
    rate_before: float
    rate_after: float
    held_s: float


@dataclass(slots=True)
class Work:
    """What the predictor has done so far: its cost, counted independently of how busy
    the machine is (the bench times it too)."""

    screened: int = 0  # chips screened in a window
    points: int = 0  # points those screens looked at
    fitted: int = 0  # trends fitted


@dataclass(frozen=True, slots=True)
class WindowState:
    span_buckets: int
    points: tuple[Evidence, ...]
    partial: Evidence | None
    partial_buckets: int


@dataclass(frozen=True, slots=True)
class PredictorState:
    """Everything worth keeping across a restart or a slot move (see predict_store)."""

    chip_count: int
    bucket_s: float
    hashing_s: float
    windows: tuple[WindowState, ...]
    warning: RaisedWarning | None
    announced: tuple[tuple[int, float], ...]  # (chip, hashing time its warning last held)
    steps: tuple[StepSeen, ...]


class _Window:
    """One fit window: its points (merged buckets), newest last, and their error sums."""

    def __init__(self, span_buckets: int, chip_count: int) -> None:
        self.span_buckets = span_buckets
        self.group = max(1, math.ceil(span_buckets / MAX_FIT_POINTS))
        self.size = max(3, math.ceil(span_buckets / self.group))
        self.chip_count = chip_count
        self.points: deque[Evidence] = deque()
        self.error_sums = [0] * chip_count
        self.partial: Evidence | None = None  # x_mhz holds Σ x·dt until completed
        self.partial_buckets = 0
        self.trends: dict[int, tuple[Trend, float]] = {}  # chip: (rising fit, fitted at)

    def add(self, bucket: Evidence) -> bool:
        """Take a closed bucket; True when it completed a point."""
        if self.group == 1:
            self._push(bucket)
            return True
        duration = bucket.end_s - bucket.start_s
        weighted = array("d", (x * duration for x in bucket.x_mhz))
        partial = self.partial
        if partial is None:
            self.partial = Evidence(
                bucket.start_s, bucket.end_s, bucket.reported, bucket.errors, weighted
            )
        else:
            add = operator.add
            self.partial = Evidence(
                partial.start_s,
                bucket.end_s,
                array("I", map(add, partial.reported, bucket.reported)),
                array("I", map(add, partial.errors, bucket.errors)),
                array("d", map(add, partial.x_mhz, weighted)),
            )
        self.partial_buckets += 1
        if self.partial_buckets < self.group:
            return False
        self._push(self._completed(self.partial))
        self.partial, self.partial_buckets = None, 0
        return True

    def _completed(self, partial: Evidence) -> Evidence:
        duration = partial.end_s - partial.start_s
        scale = 1.0 / duration if duration > 0 else 0.0
        return Evidence(
            partial.start_s,
            partial.end_s,
            partial.reported,
            partial.errors,
            array("d", (x * scale for x in partial.x_mhz)),
        )

    def _push(self, point: Evidence) -> None:
        if len(self.points) == self.size:
            old = self.points.popleft()
            self.error_sums = list(map(operator.sub, self.error_sums, old.errors))
        self.points.append(point)
        self.error_sums = list(map(operator.add, self.error_sums, point.errors))

    def with_partial(self) -> list[Evidence]:
        """The points, plus the one being filled: a window as it stands right now."""
        points = list(self.points)
        if self.partial is not None and self.partial.end_s > self.partial.start_s:
            points.append(self._completed(self.partial))
        return points

    def state(self) -> WindowState:
        return WindowState(
            self.span_buckets, tuple(self.points), self.partial, self.partial_buckets
        )

    def restore(self, state: WindowState) -> None:
        for point in state.points[-self.size :]:
            self._push(point)
        if state.partial_buckets < self.group:
            self.partial, self.partial_buckets = state.partial, state.partial_buckets


class Predictor:
    """Degradation trends of one module, fed every poll while it hashes. Pure logic."""

    def __init__(
        self,
        settings: PredictSettings,
        chip_count: int,
        *,
        nominal_board_v: float | None = None,
    ) -> None:
        self.settings = settings
        self.chip_count = chip_count
        self.nominal_board_v = nominal_board_v
        self._counters = ChipCounters(chip_count)
        spans = sorted({max(3, round(w / settings.bucket_s)) for w in settings.fit_windows_s})
        self._windows = [_Window(span, chip_count) for span in spans]
        self.hashing_s = 0.0
        self._last_at_s: float | None = None
        self._baseline = True  # the next update only sets where counting starts
        self._retuned = False  # tuned since the last update: the evidence restarts
        self._seen: tuple[list[int], list[int]] = ([0] * chip_count, [0] * chip_count)
        self._at_start: tuple[list[int], list[int]] = self._seen
        self._bucket_start_s = 0.0
        self._freqs: list[float] = [0.0] * chip_count
        self._freq_time: list[float] = [0.0] * chip_count  # Σ clock·dt over the bucket
        self._freq_since_s = 0.0
        self._stress = 1.0  # 1 / (overdrive share · thermal share), now
        self._stress_time = 0.0  # Σ stress·dt over the bucket
        self._board_v: float | None = None
        self._temp_c: float | None = None
        self._warning: RaisedWarning | None = None
        self._announced: dict[int, float] = {}
        self._steps: dict[int, StepSeen] = {}
        self._window_steps: dict[int, StepSeen] = {}  # found at the last judgement
        self._rising: tuple[int, Trend, float] | None = None
        self._candidates: dict[int, tuple[float, float]] = {}  # chip: (first, last) seen
        self.newly_raised = False
        self.work = Work()
        self._prediction = Prediction(False, None, "collecting data")

    # -- feeding -------------------------------------------------------------------------

    def update(self, sample: ModuleSample) -> Prediction:
        """One poll of the hashing module."""
        self.newly_raised = False
        counters = self._counters
        counters.absorb(sample.chips)
        now = sample.at_s
        last, self._last_at_s = self._last_at_s, now
        dt = 0.0
        if last is not None and now >= last:
            dt = now - last
            if sample.hashing_for_s is not None:  # the chain restarted since the last poll
                dt = max(0.0, min(dt, sample.hashing_for_s))
        self.hashing_s += dt
        if self._baseline or last is None or now < last:
            if self._retuned:
                self._forget_evidence()
            self._baseline = False
            self._seen = self._at_start = (counters.nonces, counters.errors)
            self._bucket_start_s = self._freq_since_s = self.hashing_s
            self._freq_time = [0.0] * self.chip_count
            self._stress_time = 0.0
            self._follow_point(sample)
            return self._current()
        self._stress_time += self._stress * dt
        self._follow_point(sample)
        self._seen = (counters.nonces, counters.errors)
        if self.hashing_s - self._bucket_start_s >= self.settings.bucket_s:
            self._close_bucket()
        return self._current()

    def skip(self, sample: ModuleSample) -> None:
        """A poll while the chips are being tuned: they err on purpose, so nothing counted
        from here until the next `update` is evidence. The tuner then sets every chip
        afresh against its own edge, so a chip's rate before and after says nothing about
        aging: the evidence restarts when hashing resumes (a raised warning is held)."""
        self.newly_raised = False
        self._counters.absorb(sample.chips)
        last, self._last_at_s = self._last_at_s, sample.at_s
        self._baseline = self._retuned = True
        if last is not None and sample.at_s > last:
            dt = sample.at_s - last
            if sample.hashing_for_s is not None:
                dt = max(0.0, min(dt, sample.hashing_for_s))
            self.hashing_s += dt  # the chips age while they are tuned

    def _forget_evidence(self) -> None:
        self._retuned = False
        self._windows = [_Window(w.span_buckets, self.chip_count) for w in self._windows]
        self._candidates, self._window_steps, self._steps = {}, {}, {}
        self._rising = None
        if self._warning is None:
            self._prediction = Prediction(False, None, "collecting data")

    def _follow_point(self, sample: ModuleSample) -> None:
        """Track the clocks, rail and temperature: the operating point's stress."""
        freqs = [chip.freq_mhz for chip in sample.chips[: self.chip_count]]
        if freqs != self._freqs[: len(freqs)]:
            self._flush_freqs()
            self._freqs = (freqs + self._freqs[len(freqs) :])[: self.chip_count]
        if sample.board_v is not None and sample.board_v > 0 and math.isfinite(sample.board_v):
            self._board_v = sample.board_v
            if self.nominal_board_v is None:
                self.nominal_board_v = sample.board_v
        readable = [t for t in sample.temps_c if t is not None and math.isfinite(t)]
        if readable:
            self._temp_c = sum(readable) / len(readable)
        self._stress = self._stress_factor()

    def _stress_factor(self) -> float:
        return stress_factor(self._board_v, self.nominal_board_v, self._temp_c, self.settings)

    def _flush_freqs(self) -> None:
        span = self.hashing_s - self._freq_since_s
        if span > 0:
            self._freq_time = [
                t + f * span for t, f in zip(self._freq_time, self._freqs, strict=True)
            ]
        self._freq_since_s = self.hashing_s

    # -- evidence ------------------------------------------------------------------------

    def _close_bucket(self) -> None:
        start, end = self._bucket_start_s, self.hashing_s
        duration = end - start
        self._flush_freqs()
        nonces, errors = self._seen
        old_nonces, old_errors = self._at_start
        d_errors = array("I", map(operator.sub, errors, old_errors))
        reported = array("I", map(operator.add, map(operator.sub, nonces, old_nonces), d_errors))
        if duration > 0:
            stress = self._stress_time / duration
            scale = stress / duration
            x_mhz = array("d", (t * scale for t in self._freq_time))
        else:
            x_mhz = array("d", (f * self._stress for f in self._freqs))
        self._at_start = self._seen
        self._bucket_start_s = self._freq_since_s = end
        self._freq_time = [0.0] * self.chip_count
        self._stress_time = 0.0
        if duration <= 0 or not any(reported):
            return
        bucket = Evidence(start, end, reported, d_errors, x_mhz)
        judged = [window for window in self._windows if window.add(bucket)]
        if judged:
            for window in judged:
                self._judge(window)
            self._decide()

    def _judge(self, window: _Window) -> None:
        """Fit the chips of one window that have enough errors and rise lately."""
        window.trends = {}
        points = list(window.points)
        if len(points) < 3:
            return
        s = self.settings
        now = self.hashing_s
        enough = [total >= s.min_errors for total in window.error_sums]
        for chip in itertools.compress(range(self.chip_count), enough):
            verdict = self._verdict(chip, points, now)
            if isinstance(verdict, Trend):
                window.trends[chip] = (verdict, now)
            elif verdict is not None:
                self._window_steps[chip] = verdict

    def _verdict(self, chip: int, evidence: list[Evidence], now: float) -> Trend | StepSeen | None:
        """A rising trend, a step, or nothing worth saying about one chip in one window."""
        s = self.settings
        points: list[Point] = [
            ((0.5 * (p.start_s + p.end_s) - now) / HOUR_S, p.x_mhz[chip], n, p.errors[chip])
            for p in evidence
            if (n := p.reported[chip])
        ]
        if len(points) < 3 or sum(p[3] for p in points) < s.min_errors:
            return None
        work = self.work
        work.screened += 1
        work.points += len(points)
        if not rising_lately(points, PRESCREEN_Z, s.clock_sensitivity_max):
            return None
        work.fitted += 1
        trend = fit_logistic_trend(points, s.clock_sensitivity_max, s.clock_sensitivity_max)
        if trend is None or trend.slope_per_h <= 0:
            return None
        if trend.likelihood_ratio < s.min_likelihood_ratio:
            return None
        step = best_step(points, trend.steady_per_mhz)
        preference = step.log_likelihood - trend.log_likelihood
        if preference > s.step_preference_max:
            if step.rate_after > step.rate_before:
                return StepSeen(chip, step.rate_before, step.rate_after, now)
            return None
        if preference > TREND_OVER_STEP or len(points) < MIN_TREND_POINTS:
            return None  # a jump explains it as well: too early to call it aging
        return trend

    def _vetoed(self, chip: int, below: int) -> bool:
        """Whether any window longer than the `below`-th prefers a step for `chip` right
        now: a trend that a longer view shows to be one jump is not aging."""
        if chip in self._window_steps or chip in self._steps:
            return True
        now = self.hashing_s
        for window in self._windows[below + 1 :]:
            verdict = self._verdict(chip, window.with_partial(), now)
            if isinstance(verdict, StepSeen):
                self._window_steps[chip] = verdict
                return True
        return False

    def _decide(self) -> None:
        """From every window's latest fits: the warning, the steps, the quiet words."""
        s = self.settings
        now = self.hashing_s
        failure = s.failure_error_rate
        best: RaisedWarning | None = None
        rising: tuple[int, Trend, float] | None = None
        rising_h = math.inf
        bucket_s = s.bucket_s
        self._candidates = {
            chip: seen
            for chip, seen in self._candidates.items()
            if now - seen[1] <= FORGET_BUCKETS * bucket_s
        }
        for index, window in enumerate(self._windows):
            for chip, (trend, fitted_s) in window.trends.items():
                candidate = RaisedWarning(
                    chip,
                    trend.logit_now,
                    trend.slope_per_h,
                    trend.slope_se_per_h,
                    fitted_s,
                    raised_s=now,
                    held_s=now,
                )
                hours = candidate.hours_to(failure, now)
                if hours * HOUR_S > s.horizon_s:
                    if hours < rising_h:
                        rising, rising_h = (chip, trend, fitted_s), hours
                    continue
                if self._vetoed(chip, index):
                    continue
                first_s = self._candidates.get(chip, (now, now))[0]
                self._candidates[chip] = (first_s, now)
                confirmed = now - first_s >= CONFIRM_BUCKETS * bucket_s - 1e-6 or self._warning
                if confirmed and (best is None or hours < best.hours_to(failure, now)):
                    best = candidate
        for chip, step in self._window_steps.items():
            self._steps[chip] = step
        self._window_steps = {}
        self._steps = {c: st for c, st in self._steps.items() if now - st.held_s <= s.hold_s}
        self._raise(best, now)
        self._rising = rising
        self._prediction = self._quiet()

    def _raise(self, best: RaisedWarning | None, now: float) -> None:
        s = self.settings
        warning = self._warning
        if best is not None:
            if warning is not None:
                best = RaisedWarning(
                    best.chip,
                    best.logit_now,
                    best.slope_per_h,
                    best.slope_se_per_h,
                    best.fitted_s,
                    raised_s=warning.raised_s,
                    held_s=now,
                )
            else:
                since = self._announced.get(best.chip)
                longest = max(s.fit_windows_s)
                if since is None or now - since > longest:
                    self.newly_raised = True  # not a trend already told about
            self._warning = best
            self._announced[best.chip] = now
        elif warning is not None and now - warning.held_s > s.hold_s:
            self._warning = None

    # -- what to say ---------------------------------------------------------------------

    def _current(self) -> Prediction:
        warning = self._warning
        if warning is None:
            return self._prediction
        s = self.settings
        hours = warning.hours_to(s.failure_error_rate, self.hashing_s)
        failure = f"failure ({_pct(s.failure_error_rate)} errors) expected " + (
            "now" if hours <= 0 else f"in ~{_hours(hours)}"
        )
        return Prediction(
            degrading=True,
            time_to_failure_s=hours * HOUR_S,
            trend=(
                f"error rate of chip {warning.chip} (now {_pct(warning.rate_now)}) doubling "
                f"every {_hours(warning.doubling_h)}; {failure}"
            ),
            chip=warning.chip,
            confidence=round(warning.confidence, 3),
            steps=self._step_list(),
        )

    def _step_list(self) -> tuple[ErrorStep, ...]:
        steps = sorted(self._steps.values(), key=lambda st: (-st.rate_after, st.chip))
        return tuple(
            ErrorStep(st.chip, round(st.rate_before, 6), round(st.rate_after, 6)) for st in steps
        )

    def _quiet(self) -> Prediction:
        steps = self._step_list()
        if all(len(w.points) < 3 for w in self._windows):
            return Prediction(False, None, "collecting data", steps=steps)
        rising = self._rising
        if rising is None:
            text = "no chip's error rate is rising"
            if steps:
                text += f"; chip {steps[0].chip}'s error rate stepped up (not aging)"
            return Prediction(False, None, text, steps=steps)
        chip, trend, _ = rising
        growth = trend.slope_per_h * (1.0 - sigmoid(trend.logit_now))
        doubling = math.log(2.0) / growth if growth > 0 else math.inf
        return Prediction(
            degrading=False,
            time_to_failure_s=None,
            trend=(
                f"error rate of chip {chip} rising (doubling every {_hours(doubling)}) but no "
                f"failure expected within {_hours(self.settings.horizon_s / HOUR_S)}"
            ),
            chip=chip,
            steps=steps,
        )

    # -- carrying it with the module -----------------------------------------------------

    def state(self) -> PredictorState:
        return PredictorState(
            chip_count=self.chip_count,
            bucket_s=self.settings.bucket_s,
            hashing_s=self.hashing_s,
            windows=tuple(w.state() for w in self._windows),
            warning=self._warning,
            announced=tuple(sorted(self._announced.items())),
            steps=tuple(self._steps[c] for c in sorted(self._steps)),
        )

    def restore(self, state: PredictorState) -> bool:
        """Take up a stored state of the same module (before the first update); False if
        it was kept under other settings (its windows would not line up)."""
        spans = [w.span_buckets for w in self._windows]
        if (
            state.chip_count != self.chip_count
            or state.bucket_s != self.settings.bucket_s
            or [w.span_buckets for w in state.windows] != spans
        ):
            return False
        self.hashing_s = state.hashing_s
        for window, stored in zip(self._windows, state.windows, strict=True):
            window.restore(stored)
        self._warning = state.warning
        self._announced = dict(state.announced)
        self._steps = {step.chip: step for step in state.steps}
        self._baseline = True
        self._prediction = self._quiet()
        return True


def stress_factor(
    board_v: float | None,
    nominal_board_v: float | None,
    temp_c: float | None,
    settings: PredictSettings,
) -> float:
    """Effective clock per MHz of real clock: 1 / (overdrive share · thermal share), each
    share 1 where it is not known. A rail 1 % low stresses a chip like a clock ~3 %
    faster (the overdrive shrinks by 1/(1 - threshold share) as much); a board 10 °C
    warmer like one 1.5 % faster."""
    overdrive = 1.0
    if board_v is not None and nominal_board_v:
        share = board_v / nominal_board_v
        overdrive = (share - settings.threshold_share) / (1.0 - settings.threshold_share)
    thermal = 1.0
    if temp_c is not None:
        thermal = 1.0 - settings.thermal_derate_per_c * (temp_c - REFERENCE_TEMP_C)
    return 1.0 / (max(MIN_OVERDRIVE, overdrive) * max(MIN_THERMAL, thermal))


def _pct(share: float) -> str:
    percent = share * 100
    return f"{percent:.0f} %" if percent >= 10 or percent == 0 else f"{percent:.2g} %"


def _hours(hours: float) -> str:
    if math.isinf(hours):
        return "never"
    if hours < 1:
        return f"{hours * 60:.0f} min"
    return f"{hours:.1f} h" if hours < 10 else f"{hours:.0f} h"
