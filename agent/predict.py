"""Predictive maintenance: warn that a module is degrading, and when it will fail, hours
before the health model has to call it a fault.

An aging chip loses timing margin steadily, so the share of its nonces that fail grows
along a logistic curve in time: exponentially while it is small, saturating near one. The
predictor counts each chip's reported nonces and errors in fixed time buckets, fits that
curve to a chip's recent buckets by maximum likelihood (binomial counts, so a bucket with
three errors weighs what three errors are worth), and extrapolates it to the failure
rate. A warning needs all of: enough errors, a likelihood-ratio test that rejects "the
rate is steady" far beyond what Poisson noise does across a fleet, a rate still rising in
the latest part of the window, and a failure time within the horizon.

A chip's error rate also moves for reasons that are not aging. When the autotuner moves
its clock or the rail moves, the chip's (or the whole module's) evidence restarts. When the
board warms or cools (a hot afternoon, the fan curve), the fit carries the board temperature
as a second explanation beside time, so only the rise that heat does not explain counts.
A rise that one jump explains far better than a trend is not taken for aging either.

Cheap: one O(chips) pass per bucket boundary plus a small fit for the few chips with
enough errors; between boundaries an update only checks the counters for a restart.
"""

from __future__ import annotations

import math
import operator
from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from hashbay.agent.health import CHIP_FAULT_ERROR_RATE, ChipCounters
from hashbay.agent.settings import scalars, setting
from hashbay.agent.status import ModuleSample, Prediction
from hashbay.drivers.errors import ConfigError

HOUR_S = 3600.0
MAX_FIT_POINTS = 24
"""Longer windows are fitted on merged buckets: the fit's cost stays flat, the trend
is no worse resolved at 1/24 of a window."""

PRESCREEN_Z = 2.5
"""How far the newest errors must stand out before a chip is worth a fit (see _rising_lately)."""

MAX_NEWTON_ROUNDS = 50
MAX_SLOPE_PER_H = 20.0
"""A fitted growth faster than e-fold every 3 minutes is a step, not a trend to extrapolate."""


@dataclass(frozen=True, kw_only=True)
class PredictSettings:
    """When a chip's rising error rate is worth a warning. Defaults suit 1 Hz polls of
    S21-class boards with the chips' ticket difficulty at 256 (0.57 nonces/s per chip)."""

    bucket_s: float = setting(
        300.0,
        "Per-chip nonce and error counts are kept per bucket of this length: short enough "
        "to follow a chip failing within hours, long enough for ~170 nonces per chip.",
        unit="s",
        min=10,
        max=86400,
    )
    history_s: float = setting(
        48 * HOUR_S,
        "Buckets are kept this long (memory: chips x 8 bytes per bucket).",
        unit="s",
        min=600,
        max=30 * 86400,
    )
    horizon_s: float = setting(
        72 * HOUR_S,
        "A failure expected within this long raises the warning.",
        unit="s",
        min=600,
        max=365 * 86400,
    )
    failure_error_rate: float = setting(
        CHIP_FAULT_ERROR_RATE,
        "The error rate at which a chip has failed: the health model's chip fault rate.",
        min=0.001,
        max=1,
    )
    fit_windows_s: tuple[float, ...] = scalars(
        (2 * HOUR_S, 8 * HOUR_S, 24 * HOUR_S),
        "Trends are fitted over each of these recent spans; the short one catches fast "
        "failures early, the long ones slow aging whose rate barely moves in two hours.",
        unit="s",
        min=60,
        min_items=1,
        max_items=6,
    )
    min_errors: int = setting(
        10,
        "Hardware errors a chip must have made within a fit window before its trend counts.",
        min=3,
        max=100000,
    )
    min_likelihood_ratio: float = setting(
        30.0,
        "How strongly the rising fit must beat a steady rate (twice the log-likelihood "
        "gain). 30 is a 1-in-10^7 chance for steady Poisson errors: a fleet of thousands "
        "of 126-chip boards refitted every 5 minutes must not cry wolf.",
        min=1,
        max=1000,
    )
    step_preference_max: float = setting(
        6.0,
        "A chip whose errors one jump in rate explains better than a trend, by more than "
        "this much log-likelihood (a factor e^6 = 400), is not aging: its rate changed "
        "for another reason (a clock or rail change, a neighbour failing).",
        min=0,
        max=1000,
    )
    temp_coefficient_prior: float = setting(
        0.3,
        "How much a degree of board temperature may plausibly move the logit of a chip's "
        "error rate (the physics: 0.1-0.26 per °C); a prior that keeps heat from explaining "
        "away a trend that time explains better.",
        unit="1/°C",
        min=0.01,
        max=10,
    )
    hold_s: float = setting(
        3600.0,
        "A raised warning stays up this long after its evidence last held, so one noisy "
        "bucket does not clear and re-raise it.",
        unit="s",
        min=0,
        max=7 * 86400,
    )
    freq_tolerance_mhz: float = setting(
        1.0,
        "A chip clock change beyond this restarts that chip's evidence.",
        unit="MHz",
        min=0,
        max=1000,
    )
    board_v_tolerance: float = setting(
        0.02,
        "A rail voltage change beyond this share restarts every chip's evidence.",
        min=0,
        max=1,
    )

    def __post_init__(self) -> None:
        shortest = 3 * self.bucket_s
        for window_s in self.fit_windows_s:
            if not shortest <= window_s <= self.history_s:
                raise ConfigError(
                    f"predict: fit window {window_s:g} s must span at least three buckets "
                    f"({shortest:g} s) and at most history_s ({self.history_s:g} s)"
                )


@dataclass(frozen=True, slots=True)
class _Bucket:
    start_s: float
    end_s: float
    temp_c: float  # mean board temperature over the bucket (last known if none was read)
    reported: array[int]
    errors: array[int]


Point = tuple[float, float, int, int]
"""(hours relative to now, board temperature °C, nonces reported, of which errors)."""

Row = tuple[int, int, Sequence[float]]
"""(trials, errors, features) of one point in a regression."""


@dataclass(frozen=True, slots=True)
class Trend:
    """logit(error rate) = logit_now + slope·t (hours from now) + per_c·(temp - latest temp)."""

    logit_now: float
    slope_per_h: float
    slope_se_per_h: float
    per_c: float
    likelihood_ratio: float  # the trend against the same model without it
    log_likelihood: float


@dataclass(frozen=True, slots=True)
class _Fit:
    chip: int
    trend: Trend
    errors: int
    step_preference: float  # log-likelihood of the best single jump minus the trend's

    def hours_to(self, rate: float) -> float:
        """Time until the rate reaches `rate` if the board stays at its current temperature."""
        target = math.log(rate / (1.0 - rate)) if rate < 1 else math.inf
        if self.trend.logit_now >= target:
            return 0.0
        return (target - self.trend.logit_now) / self.trend.slope_per_h

    @property
    def rate_now(self) -> float:
        return _sigmoid(self.trend.logit_now)

    @property
    def doubling_h(self) -> float:
        growth = self.trend.slope_per_h * (1.0 - self.rate_now)  # d ln(rate)/dt of a logistic
        return math.log(2.0) / growth if growth > 0 else math.inf

    @property
    def confidence(self) -> float:
        """1 - relative uncertainty of the growth rate: 0.8 when it is known to ±20 %."""
        return max(0.0, min(1.0, 1.0 - self.trend.slope_se_per_h / self.trend.slope_per_h))


class Predictor:
    """Degradation trends of one hashing module, fed every poll. Pure logic: no I/O."""

    def __init__(self, settings: PredictSettings, chip_count: int) -> None:
        self.settings = settings
        self.chip_count = chip_count
        self._counters = ChipCounters(chip_count)
        self._windows = sorted(
            {max(3, round(w / settings.bucket_s)) for w in settings.fit_windows_s}
        )
        self._buckets: deque[_Bucket] = deque(
            maxlen=max(math.ceil(settings.history_s / settings.bucket_s), self._windows[-1] + 1)
        )
        self._window_errors = [[0] * chip_count for _ in self._windows]
        self._bucket_start_s: float | None = None
        self._at_start: tuple[list[int], list[int]] = ([0] * chip_count, [0] * chip_count)
        self._temp_sum_c = 0.0
        self._temp_count = 0
        self._temp_c = 0.0  # last known board temperature; 0 until one is read
        self._since_s = [-math.inf] * chip_count  # each chip's evidence starts here
        self._freqs: list[float] = []
        self._freq_refs: list[float] = []
        self._board_v_ref: float | None = None
        self._warning: _Fit | None = None
        self._warning_at_s = 0.0
        self._prediction = Prediction(False, None, "collecting data")

    def update(self, sample: ModuleSample) -> Prediction:
        now = sample.at_s
        counters = self._counters
        counters.absorb(sample.chips)
        self._watch_operating_point(sample)
        readable = [t for t in sample.temps_c if t is not None]
        if readable:
            self._temp_sum_c += sum(readable) / len(readable)
            self._temp_count += 1
        if self._bucket_start_s is None or now < self._bucket_start_s:
            self._bucket_start_s = now
            self._at_start = (counters.nonces, counters.errors)
            return self._current(now)
        if now - self._bucket_start_s >= self.settings.bucket_s:
            self._close_bucket(now)
            self._evaluate(now)
        return self._current(now)

    # -- evidence ------------------------------------------------------------------------

    def _watch_operating_point(self, sample: ModuleSample) -> None:
        """Restart the evidence of chips whose clock moved, or of all chips if the rail
        moved: their error rates change for reasons that are not aging."""
        now = sample.at_s
        freqs = [chip.freq_mhz for chip in sample.chips]
        if freqs != self._freqs:
            refs = self._freq_refs
            if len(refs) != len(freqs):
                self._freq_refs = refs = (freqs + refs[len(freqs) :])[: self.chip_count]
            tolerance = self.settings.freq_tolerance_mhz
            for chip, freq in enumerate(freqs[: self.chip_count]):
                if abs(freq - refs[chip]) > tolerance:
                    refs[chip] = freq
                    self._since_s[chip] = now
            self._freqs = freqs
        board_v = sample.board_v
        if board_v is not None and board_v > 0:
            ref = self._board_v_ref
            if ref is None:
                self._board_v_ref = board_v
            elif abs(board_v - ref) > self.settings.board_v_tolerance * ref:
                self._board_v_ref = board_v
                self._since_s = [now] * self.chip_count

    def _close_bucket(self, now: float) -> None:
        counters = self._counters
        nonces, errors = counters.nonces, counters.errors
        old_nonces, old_errors = self._at_start
        d_errors = list(map(operator.sub, errors, old_errors))
        d_nonces = map(operator.sub, nonces, old_nonces)
        reported = array("I", map(operator.add, d_nonces, d_errors))
        if self._temp_count:
            self._temp_c = self._temp_sum_c / self._temp_count
        self._temp_sum_c, self._temp_count = 0.0, 0
        assert self._bucket_start_s is not None
        buckets = self._buckets
        buckets.append(
            _Bucket(self._bucket_start_s, now, self._temp_c, reported, array("I", d_errors))
        )
        for index, count in enumerate(self._windows):
            sums = list(map(operator.add, self._window_errors[index], d_errors))
            if len(buckets) > count:
                sums = list(map(operator.sub, sums, buckets[-count - 1].errors))
            self._window_errors[index] = sums
        self._bucket_start_s = now
        self._at_start = (nonces, errors)

    def _evaluate(self, now: float) -> None:
        s = self.settings
        buckets = list(self._buckets)
        failure = s.failure_error_rate
        best: _Fit | None = None
        rising: _Fit | None = None
        for count, errors in zip(self._windows, self._window_errors, strict=True):
            recent = buckets[-count:]
            if len(recent) < 3:
                continue
            for chip in [c for c, total in enumerate(errors) if total >= s.min_errors]:
                fit = self._fit_chip(chip, recent, now)
                if fit is None or fit.trend.likelihood_ratio < s.min_likelihood_ratio:
                    continue
                if fit.step_preference > s.step_preference_max:
                    continue  # one jump explains this window better than a trend
                if rising is None or fit.hours_to(failure) < rising.hours_to(failure):
                    rising = fit
                if fit.hours_to(failure) * HOUR_S <= s.horizon_s and (
                    best is None or fit.hours_to(failure) < best.hours_to(failure)
                ):
                    best = fit
        if best is not None:
            self._warning, self._warning_at_s = best, now
        elif self._warning is not None and now - self._warning_at_s > s.hold_s:
            self._warning = None
        if self._warning is None:
            self._prediction = self._quiet(rising)

    def _fit_chip(self, chip: int, recent: list[_Bucket], now: float) -> _Fit | None:
        since = self._since_s[chip]
        points: list[Point] = [
            (
                (0.5 * (b.start_s + b.end_s) - now) / HOUR_S,
                b.temp_c,
                b.reported[chip],
                b.errors[chip],
            )
            for b in recent
            if b.start_s >= since and b.reported[chip]
        ]
        if len(points) < 3:
            return None
        errors = sum(p[3] for p in points)
        if errors < self.settings.min_errors:
            return None
        if not _rising_lately(points, errors, PRESCREEN_Z):
            return None
        merged = _merge(points, MAX_FIT_POINTS)
        trend = fit_logistic_trend(merged, self.settings.temp_coefficient_prior)
        if trend is None or trend.slope_per_h <= 0:
            return None
        step = best_step_log_likelihood(merged) - trend.log_likelihood
        return _Fit(chip, trend, errors, step_preference=step)

    # -- what to say ---------------------------------------------------------------------

    def _current(self, now: float) -> Prediction:
        warning = self._warning
        if warning is None:
            return self._prediction
        s = self.settings
        elapsed_h = (now - self._warning_at_s) / HOUR_S
        hours = max(0.0, warning.hours_to(s.failure_error_rate) - elapsed_h)
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
        )

    def _quiet(self, rising: _Fit | None) -> Prediction:
        if len(self._buckets) < 3:
            return Prediction(False, None, "collecting data")
        if rising is None:
            return Prediction(False, None, "no chip's error rate is rising")
        return Prediction(
            degrading=False,
            time_to_failure_s=None,
            trend=(
                f"error rate of chip {rising.chip} rising (doubling every "
                f"{_hours(rising.doubling_h)}) but no failure expected within "
                f"{_hours(self.settings.horizon_s / HOUR_S)}"
            ),
            chip=rising.chip,
        )


def fit_logistic_trend(points: list[Point], temp_prior: float = 0.3) -> Trend | None:
    """Maximum-likelihood trend of a chip's error rate in time, with heat as a covariate.

    Fits logit(rate) = a + b·t + c·temp to binomial counts, and the same without b; the
    likelihood ratio of the two says how much better time explains the errors than heat
    and chance do. `c` has a normal prior of width `temp_prior` per °C: without the board
    warming, `c` stays near zero instead of fitting noise. Returns None when the data
    cannot carry a trend (no errors, all errors, no spread in time, a jump too sharp to
    extrapolate).
    """
    trials = sum(p[2] for p in points)
    errors = sum(p[3] for p in points)
    if trials <= 0 or errors <= 0 or errors >= trials:
        return None
    t_mean = sum(p[0] * p[2] for p in points) / trials
    temp_mean = sum(p[1] * p[2] for p in points) / trials
    rows: list[Row] = [(n, e, (1.0, t - t_mean, temp - temp_mean)) for t, temp, n, e in points]
    ridge = 1.0 / temp_prior**2
    p0 = errors / trials
    logit0 = math.log(p0 / (1.0 - p0))
    full = _newton(rows, [logit0, 0.0, 0.0], [0.0, 0.0, ridge])
    if full is None:
        return None
    beta, slope_var, penalised = full
    null_rows: list[Row] = [(n, e, (f[0], f[2])) for n, e, f in rows]
    null = _newton(null_rows, [logit0, 0.0], [0.0, ridge])
    if null is None:
        return None
    a, b, c = beta
    latest = max(points)  # the newest point: its time and temperature are "now"
    return Trend(
        logit_now=a + b * (0.0 - t_mean) + c * (latest[1] - temp_mean),
        slope_per_h=b,
        slope_se_per_h=math.sqrt(slope_var),
        per_c=c,
        likelihood_ratio=max(0.0, 2.0 * (penalised - null[2])),
        log_likelihood=_log_likelihood(rows, beta),
    )


def _newton(
    rows: Sequence[Row], beta: list[float], ridge: list[float]
) -> tuple[list[float], float, float] | None:
    """Penalised logistic regression by Newton's method with step halving (the objective
    is concave, so it converges in a handful of rounds). Returns the coefficients, the
    variance of the second one, and the penalised log-likelihood."""
    k = len(beta)
    best = _log_likelihood(rows, beta) - _penalty(beta, ridge)
    for _ in range(MAX_NEWTON_ROUNDS):
        grad, hess = _gradient_hessian(rows, beta, ridge)
        delta = _solve(hess, grad)
        if delta is None:
            return None
        scale = 1.0
        for _ in range(30):
            trial_beta = [b + scale * d for b, d in zip(beta, delta, strict=True)]
            trial = _log_likelihood(rows, trial_beta) - _penalty(trial_beta, ridge)
            if trial >= best - 1e-12:
                break
            scale *= 0.5
        beta, best = trial_beta, max(best, trial)
        if k > 1 and abs(beta[1]) > MAX_SLOPE_PER_H:
            return None
        if max(abs(scale * d) for d in delta) < 1e-9:
            unit = [0.0] * k
            unit[min(1, k - 1)] = 1.0
            column = _solve(hess, unit)
            if column is None:
                return None
            return beta, max(0.0, column[min(1, k - 1)]), best
    return None


def _gradient_hessian(
    rows: Sequence[Row], beta: list[float], ridge: list[float]
) -> tuple[list[float], list[list[float]]]:
    """Gradient and (negated) Hessian of the penalised binomial log-likelihood."""
    k = len(beta)
    grad = [-r * b for r, b in zip(ridge, beta, strict=True)]
    hess = [[ridge[i] if i == j else 0.0 for j in range(k)] for i in range(k)]
    for n, e, f in rows:
        p = _sigmoid(sum(b * x for b, x in zip(beta, f, strict=True)))
        residual = e - n * p
        w = n * p * (1.0 - p)
        for i in range(k):
            grad[i] += residual * f[i]
            wi = w * f[i]
            for j in range(i, k):
                hess[i][j] += wi * f[j]
    for i in range(k):
        for j in range(i):
            hess[i][j] = hess[j][i]
    return grad, hess


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting for the 2x2 and 3x3 systems above."""
    k = len(vector)
    rows = [[*matrix[i], vector[i]] for i in range(k)]
    scale = max(abs(rows[i][i]) for i in range(k)) or 1.0
    for col in range(k):
        pivot = max(range(col, k), key=lambda r: abs(rows[r][col]))
        if abs(rows[pivot][col]) <= 1e-12 * scale:
            return None
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(col + 1, k):
            factor = rows[r][col] / rows[col][col]
            for c in range(col, k + 1):
                rows[r][c] -= factor * rows[col][c]
    solution = [0.0] * k
    for r in range(k - 1, -1, -1):
        tail = sum(rows[r][c] * solution[c] for c in range(r + 1, k))
        solution[r] = (rows[r][k] - tail) / rows[r][r]
    return solution


def _penalty(beta: list[float], ridge: list[float]) -> float:
    return 0.5 * sum(r * b * b for r, b in zip(ridge, beta, strict=True))


def _log_likelihood(rows: Sequence[Row], beta: list[float]) -> float:
    """Binomial log-likelihood without its constant: Σ e·η - n·log(1 + e^η)."""
    total = 0.0
    for n, e, f in rows:
        eta = sum(b * x for b, x in zip(beta, f, strict=True))
        softplus = (eta if eta > 0 else 0.0) + math.log1p(math.exp(-abs(eta)))
        total += e * eta - n * softplus
    return total


def best_step_log_likelihood(points: list[Point]) -> float:
    """Log-likelihood of the best "one rate, then another" split of the points.

    The alternative to aging: a chip whose rate jumped once (a change the predictor was
    not told about, a neighbour failing) fits this far better than a trend.
    """
    trials = sum(p[2] for p in points)
    errors = sum(p[3] for p in points)
    best = -math.inf
    n_before = e_before = 0
    for _, _, n, e in points[:-1]:
        n_before += n
        e_before += e
        split = _binomial_log_likelihood(n_before, e_before) + _binomial_log_likelihood(
            trials - n_before, errors - e_before
        )
        best = max(best, split)
    return best


def _binomial_log_likelihood(trials: int, errors: int) -> float:
    """Log-likelihood of `errors` in `trials` at their own best rate (0·log 0 = 0)."""
    if errors <= 0 or errors >= trials:
        return 0.0
    rate = errors / trials
    return errors * math.log(rate) + (trials - errors) * math.log1p(-rate)


def _merge(points: list[Point], limit: int) -> list[Point]:
    if len(points) <= limit:
        return points
    group = math.ceil(len(points) / limit)
    merged = []
    for i in range(0, len(points), group):
        chunk = points[i : i + group]
        n = sum(p[2] for p in chunk)
        merged.append(
            (
                sum(p[0] * p[2] for p in chunk) / n,
                sum(p[1] * p[2] for p in chunk) / n,
                n,
                sum(p[3] for p in chunk),
            )
        )
    return merged


def _rising_lately(points: list[Point], errors: int, min_z: float) -> bool:
    """The cheap screen before a fit: the newest third of the window errs more than the
    middle third, and more than the first two thirds by `min_z` binomial sigmas. Steady
    chips (an overclocked board has dozens with errors) stop here; an aging chip passes
    long before its trend is strong enough to warn about."""
    thirds = len(points) // 3
    middle = points[thirds : len(points) - thirds]
    last = points[len(points) - thirds :]
    if _rate(last) <= _rate(middle):
        return False  # not rising any more: a step, or a burst that passed
    trials = sum(p[2] for p in points)
    last_trials = sum(p[2] for p in last)
    share = last_trials / trials
    expected = errors * share
    spread = math.sqrt(errors * share * (1.0 - share)) or 1.0
    return (sum(p[3] for p in last) - expected) / spread >= min_z


def _rate(points: list[Point]) -> float:
    n = sum(p[2] for p in points)
    return sum(p[3] for p in points) / n if n else 0.0


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _pct(share: float) -> str:
    percent = share * 100
    return f"{percent:.0f} %" if percent >= 10 or percent == 0 else f"{percent:.2g} %"


def _hours(hours: float) -> str:
    if math.isinf(hours):
        return "never"
    if hours < 1:
        return f"{hours * 60:.0f} min"
    return f"{hours:.1f} h" if hours < 10 else f"{hours:.0f} h"
