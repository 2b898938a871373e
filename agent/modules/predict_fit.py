"""The statistics behind predictive maintenance: one chip's error counts, fitted.

A point is one stretch of a chip's hashing: when (hours from now), at what effective
clock, how many nonces it reported and how many of those were errors. Three models
compete for the points, all binomial in the counts (a point with three errors weighs
what three errors are worth):

- steady: logit(rate) = a + g·(x - x̄), the rate the operating point alone explains;
- trend:  the same plus b·t, a rate that grows in time, as an aging chip's does;
- step:   two steady rates, one before and one after a single jump.

`g` is how steeply errors grow with the effective clock `x`. The physics says a chip's
errors grow e-fold every 3-8 MHz past its clean clock and not at all below it, so `g`
is kept within [0, sensitivity_max]: a clock, rail or temperature change can explain
only as much of a rise as silicon allows, never a whole trend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Point = tuple[float, float, int, int]
"""(hours relative to now, effective clock MHz, nonces reported, of which errors)."""

Row = tuple[int, int, float, Sequence[float]]
"""(trials, errors, fixed offset of the logit, features) of one point in a regression."""

FLAT_X_MHZ = 0.5
"""An effective clock spread smaller than this carries no information: left out."""

MAX_NEWTON_ROUNDS = 50
MAX_SLOPE_PER_H = 20.0
"""A fitted growth faster than e-fold every 3 minutes is a step, not a trend to extrapolate."""


@dataclass(frozen=True, slots=True)
class Trend:
    """logit(rate) = logit_now + slope·t (hours from now) + per_mhz·(x - latest x)."""

    logit_now: float
    slope_per_h: float
    slope_se_per_h: float
    per_mhz: float
    likelihood_ratio: float  # the trend against the steady model
    log_likelihood: float
    steady_per_mhz: float  # the steady model's clock sensitivity, for the step model


@dataclass(frozen=True, slots=True)
class Step:
    """The best single jump: its log-likelihood and the raw rates either side of it."""

    log_likelihood: float
    split: int  # index of the first point after the jump
    rate_before: float
    rate_after: float


def fit_logistic_trend(
    points: Sequence[Point], sensitivity_max: float = 0.35, sensitivity_prior: float = 0.35
) -> Trend | None:
    """Maximum-likelihood trend of a chip's error rate in time, beside its operating point.

    Returns None when the data cannot carry a trend (no errors, all errors, no spread in
    time, a jump too sharp to extrapolate). `sensitivity_prior` is the width of a normal
    prior on `g`: without clock changes `g` stays near zero instead of fitting noise.
    """
    trials = sum(p[2] for p in points)
    errors = sum(p[3] for p in points)
    if trials <= 0 or errors <= 0 or errors >= trials:
        return None
    t_mean = sum(p[0] * p[2] for p in points) / trials
    x_mean = sum(p[1] * p[2] for p in points) / trials
    xs = [p[1] for p in points]
    use_x = max(xs) - min(xs) >= FLAT_X_MHZ
    p0 = errors / trials
    logit0 = math.log(p0 / (1.0 - p0))
    ridge = 1.0 / sensitivity_prior**2
    if use_x:
        rows: list[Row] = [(n, e, 0.0, (1.0, t - t_mean, x - x_mean)) for t, x, n, e in points]
        full = _bounded(rows, [logit0, 0.0, 0.0], [0.0, 0.0, ridge], sensitivity_max)
        null_rows: list[Row] = [(n, e, 0.0, (1.0, x - x_mean)) for t, x, n, e in points]
        null = _bounded(null_rows, [logit0, 0.0], [0.0, ridge], sensitivity_max)
    else:
        rows = [(n, e, 0.0, (1.0, t - t_mean)) for t, x, n, e in points]
        full = _newton(rows, [logit0, 0.0], [0.0, 0.0])
        null = _newton([(n, e, 0.0, (1.0,)) for _, _, n, e in points], [logit0], [0.0])
    if full is None or null is None:
        return None
    beta, slope_var, penalised, likelihood = full
    a, b = beta[0], beta[1]
    g = beta[2] if use_x else 0.0
    latest = max(points)  # the newest point: its time and effective clock are "now"
    return Trend(
        logit_now=a + b * (0.0 - t_mean) + g * (latest[1] - x_mean),
        slope_per_h=b,
        slope_se_per_h=math.sqrt(slope_var),
        per_mhz=g,
        likelihood_ratio=max(0.0, 2.0 * (penalised - null[2])),
        log_likelihood=likelihood,
        steady_per_mhz=null[0][-1] if use_x else 0.0,
    )


def _bounded(
    rows: list[Row], beta: list[float], ridge: list[float], high: float
) -> tuple[list[float], float, float, float] | None:
    """Newton's method with the last coefficient (the clock sensitivity) kept in
    [0, high]: fitted freely first, and if it lands outside, fixed at the bound."""
    free = _newton(rows, beta, ridge)
    if free is None:
        return None
    g = free[0][-1]
    if 0.0 <= g <= high:
        return free
    bound = min(high, max(0.0, g))
    fixed_rows: list[Row] = [(n, e, o + bound * f[-1], f[:-1]) for n, e, o, f in rows]
    fixed = _newton(fixed_rows, beta[:-1], ridge[:-1])
    if fixed is None:
        return None
    coefficients, slope_var, penalised, likelihood = fixed
    penalised -= 0.5 * ridge[-1] * bound * bound
    return [*coefficients, bound], slope_var, penalised, likelihood


def _newton(
    rows: Sequence[Row], beta: list[float], ridge: list[float]
) -> tuple[list[float], float, float, float] | None:
    """Penalised logistic regression by Newton's method with step halving (the objective
    is concave, so it converges in a handful of rounds). Returns the coefficients, the
    variance of the second one (the first if there is one), and the penalised and plain
    log-likelihoods."""
    k = len(beta)
    best = _log_likelihood(rows, beta) - _penalty(beta, ridge)
    for _ in range(MAX_NEWTON_ROUNDS):
        grad, hess = _gradient_hessian(rows, beta, ridge)
        delta = _solve(hess, grad)
        if delta is None:
            return None
        scale = 1.0
        trial_beta = beta
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
            return beta, max(0.0, column[min(1, k - 1)]), best, _log_likelihood(rows, beta)
    return None


def _gradient_hessian(
    rows: Sequence[Row], beta: list[float], ridge: list[float]
) -> tuple[list[float], list[list[float]]]:
    """Gradient and (negated) Hessian of the penalised binomial log-likelihood."""
    k = len(beta)
    grad = [-r * b for r, b in zip(ridge, beta, strict=True)]
    hess = [[ridge[i] if i == j else 0.0 for j in range(k)] for i in range(k)]
    for n, e, offset, f in rows:
        p = _sigmoid(offset + sum(b * x for b, x in zip(beta, f, strict=True)))
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
    """Gaussian elimination with partial pivoting for the small systems above."""
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
    for n, e, offset, f in rows:
        eta = offset + sum(b * x for b, x in zip(beta, f, strict=True))
        total += e * eta - n * _softplus(eta)
    return total


def best_step(points: Sequence[Point], per_mhz: float = 0.0) -> Step:
    """The best "one rate, then another" split of the points (in time order).

    The alternative to aging: a chip whose rate jumped once (a change nobody told the
    predictor about, a neighbour failing) fits this far better than a trend. With a
    clock sensitivity, both rates are taken at the same effective clock.
    """
    xs = [p[1] for p in points]
    if per_mhz <= 0 or max(xs) - min(xs) < FLAT_X_MHZ:
        return _best_plain_step(points)
    x_mean = sum(xs) / len(xs)
    offsets = [per_mhz * (x - x_mean) for x in xs]
    best = Step(-math.inf, 1, 0.0, 0.0)
    for split in range(1, len(points)):
        before = _steady_log_likelihood(points[:split], offsets[:split])
        after = _steady_log_likelihood(points[split:], offsets[split:])
        if before + after > best.log_likelihood:
            best = Step(before + after, split, *_rates(points, split))
    return best


def best_step_log_likelihood(points: Sequence[Point], per_mhz: float = 0.0) -> float:
    return best_step(points, per_mhz).log_likelihood


def _best_plain_step(points: Sequence[Point]) -> Step:
    trials = sum(p[2] for p in points)
    errors = sum(p[3] for p in points)
    best = Step(-math.inf, 1, 0.0, 0.0)
    n_before = e_before = 0
    for split in range(1, len(points)):
        n_before += points[split - 1][2]
        e_before += points[split - 1][3]
        ll = _binomial_log_likelihood(n_before, e_before) + _binomial_log_likelihood(
            trials - n_before, errors - e_before
        )
        if ll > best.log_likelihood:
            best = Step(ll, split, *_rates(points, split))
    return best


def _rates(points: Sequence[Point], split: int) -> tuple[float, float]:
    n_before = sum(p[2] for p in points[:split])
    n_after = sum(p[2] for p in points[split:])
    e_before = sum(p[3] for p in points[:split])
    e_after = sum(p[3] for p in points[split:])
    return (e_before / n_before if n_before else 0.0, e_after / n_after if n_after else 0.0)


def _steady_log_likelihood(points: Sequence[Point], offsets: Sequence[float]) -> float:
    """Log-likelihood of one rate (at the effective clock's offsets), fitted: a 1-D
    Newton solve of Σ n·sigmoid(a + offset) = Σ e."""
    trials = sum(p[2] for p in points)
    errors = sum(p[3] for p in points)
    if trials <= 0:
        return 0.0
    if errors <= 0 or errors >= trials:
        return _binomial_log_likelihood(trials, errors)  # the limit: a rate of 0 or 1
    a = math.log(errors / (trials - errors))
    for _ in range(MAX_NEWTON_ROUNDS):
        expected = slope = 0.0
        for (_, _, n, _), offset in zip(points, offsets, strict=True):
            p = _sigmoid(a + offset)
            expected += n * p
            slope += n * p * (1.0 - p)
        if slope <= 0:
            break
        delta = (errors - expected) / slope
        a += max(-5.0, min(5.0, delta))
        if abs(delta) < 1e-9:
            break
    total = 0.0
    for (_, _, n, e), offset in zip(points, offsets, strict=True):
        eta = a + offset
        total += e * eta - n * _softplus(eta)
    return total


def _binomial_log_likelihood(trials: int, errors: int) -> float:
    """Log-likelihood of `errors` in `trials` at their own best rate (0·log 0 = 0)."""
    if errors <= 0 or errors >= trials:
        return 0.0
    rate = errors / trials
    return errors * math.log(rate) + (trials - errors) * math.log1p(-rate)


def rising_lately(points: Sequence[Point], min_z: float, sensitivity_max: float) -> bool:
    """The cheap screen before a fit: the newest third of the points errs more than the
    middle third, and more than all of them by `min_z` binomial sigmas. Steady chips (a
    tuned board has a hundred with errors) stop here; an aging chip passes long before
    its trend is strong enough to warn about.

    Where the effective clock moved, errors are compared at equal clocks: each point's
    nonces count as many as errors it should make relative to the fastest point, with
    the clock sensitivity at zero and at its most (whichever looks more like a rise), so
    a throttled last third does not hide a rise and a faster one does not fake one.
    """
    thirds = len(points) // 3
    if thirds == 0:
        return False
    xs = [p[1] for p in points]
    top = max(xs)
    sensitivities = (0.0,) if top - min(xs) < FLAT_X_MHZ else (0.0, sensitivity_max)
    for g in sensitivities:
        weights = [p[2] * math.exp(g * (p[1] - top)) for p in points]
        if _rises(points, weights, thirds, min_z):
            return True
    return False


def _rises(points: Sequence[Point], weights: list[float], thirds: int, min_z: float) -> bool:
    count = len(points)
    last_w = sum(weights[count - thirds :])
    middle_w = sum(weights[thirds : count - thirds])
    total_w = sum(weights)
    last_e = sum(p[3] for p in points[count - thirds :])
    middle_e = sum(p[3] for p in points[thirds : count - thirds])
    errors = sum(p[3] for p in points)
    if last_w <= 0 or total_w <= 0:
        return False
    if middle_w > 0 and last_e / last_w <= middle_e / middle_w:
        return False  # not rising any more: a step, or a burst that passed
    share = last_w / total_w
    expected = errors * share
    spread = math.sqrt(errors * share * (1.0 - share)) or 1.0
    return (last_e - expected) / spread >= min_z


def sigmoid(x: float) -> float:
    return _sigmoid(x)


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _softplus(eta: float) -> float:
    return (eta if eta > 0 else 0.0) + math.log1p(math.exp(-abs(eta)))
