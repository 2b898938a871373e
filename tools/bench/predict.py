"""Predictive maintenance in simulated time: warning lead time, false alarms and CPU cost.

The boards here are statistical twins of the emulated chains: the same silicon draw
(`physics.make_silicon`), the same error model (`physics.error_probability` with a
degradation that grows linearly, as `hashbay-sim inject chip-degrade` makes it), and
nonces arriving as a Poisson process at hashrate / (ticket difficulty · 2^32), each wrong
with the error probability. What is skipped is SHA-256 and the UART: the health model
only ever sees counters, so days of simulated time run in seconds. The tests use the
same harness, so the figures printed here are the ones the tests hold the models to.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass

from hashbay.agent.health import HealthModel, HealthSettings
from hashbay.agent.predict import Predictor, PredictSettings
from hashbay.agent.status import ChipSample, HealthLevel, ModuleSample
from hashbay.tools.bench import Figure
from hashbay.tools.sim import physics
from hashbay.tools.sim.chain import poisson

HOUR_S = 3600.0
DAY_S = 86400.0
SENSOR_OFFSETS_C = (-3.0, 4.0, 0.0, 2.0)  # as tools/sim/module.py places its sensors


@dataclass(frozen=True)
class BoardConditions:
    """The operating point of the simulated board: an S21-class board at stock settings."""

    chip_model: str = "BM1368"
    chip_count: int = 126
    freq_mhz: float = 490.0
    chip_v: float = 0.32
    board_temp_c: float = 65.0
    ticket_difficulty: int = 256
    domains: int = physics.DEFAULT_DOMAINS


class StatisticalBoard:
    """One hashboard's counters advanced in steps of simulated time.

    Per step each chip reports Poisson(rate·dt) nonces, each wrong with the physics'
    error probability. By Poisson thinning the good and the wrong ones are two
    independent Poisson counts, which is what is drawn (same distribution, two draws).
    """

    def __init__(
        self,
        seed: int,
        *,
        degrading: Mapping[int, float] | None = None,
        conditions: BoardConditions | None = None,
    ) -> None:
        self.conditions = cond = conditions or BoardConditions()
        self.spec = physics.CHIP_SPECS[cond.chip_model]
        self.silicon = physics.make_silicon(self.spec, cond.chip_count, random.Random(seed))
        self._rng = random.Random(seed * 7919 + 1)
        self.degradation_per_s = {chip: per_h / HOUR_S for chip, per_h in (degrading or {}).items()}
        self.degradation = [0.0] * cond.chip_count
        powers = [
            physics.chip_power_w(self.spec, s, cond.freq_mhz, cond.chip_v, cond.board_temp_c)
            for s in self.silicon
        ]
        self.junction_c = [
            physics.chip_temp_c(cond.board_temp_c, s, w)
            for s, w in zip(self.silicon, powers, strict=True)
        ]
        self.board_v = cond.chip_v * cond.domains
        self.board_a = sum(powers) / self.board_v
        chip_hs = physics.hashrate_hs(self.spec, cond.freq_mhz)
        self.hashes_per_nonce = cond.ticket_difficulty * 2.0**32
        self.nonce_rate_per_s = chip_hs / self.hashes_per_nonce
        self.expected_hs = chip_hs * cond.chip_count
        self.error_p = [self._error_p(chip) for chip in range(cond.chip_count)]
        self.freqs_mhz = [cond.freq_mhz] * cond.chip_count
        self.nonces = [0] * cond.chip_count
        self.errors = [0] * cond.chip_count
        self.now_s = 0.0
        self.temps_c = tuple(
            round((cond.board_temp_c + offset) * 2) / 2 for offset in SENSOR_OFFSETS_C
        )

    def _error_p(self, chip: int) -> float:
        cond = self.conditions
        return physics.error_probability(
            self.spec,
            self.silicon[chip],
            cond.freq_mhz,
            cond.chip_v,
            self.junction_c[chip],
            degradation=self.degradation[chip],
        )

    def step(self, dt_s: float) -> ModuleSample:
        """Advance `dt_s` of hashing and return the poll at its end."""
        for chip, per_s in self.degradation_per_s.items():
            self.degradation[chip] = min(1.0, self.degradation[chip] + per_s * dt_s)
            self.error_p[chip] = self._error_p(chip)
        rng, mean = self._rng, self.nonce_rate_per_s * dt_s
        nonces, errors = self.nonces, self.errors
        for chip, p_wrong in enumerate(self.error_p):
            nonces[chip] += poisson(rng, mean * (1.0 - p_wrong))
            if p_wrong > 0:
                errors[chip] += poisson(rng, mean * p_wrong)
        self.now_s += dt_s
        per_nonce = self.hashes_per_nonce
        return ModuleSample(
            at_s=self.now_s,
            chips=tuple(
                ChipSample(n, e, 0, n * per_nonce, f)
                for n, e, f in zip(nonces, errors, self.freqs_mhz, strict=True)
            ),
            expected_hs=self.expected_hs,
            temps_c=self.temps_c,
            board_v=self.board_v,
            board_a=self.board_a,
            dcdc_temp_c=self.conditions.board_temp_c + 8.0 + self.board_v * self.board_a / 200,
            rail_fault=None,
            fans_stalled=0,
        )


@dataclass(frozen=True)
class LeadTime:
    per_hour: float
    warned_s: float | None  # first degrading=True, simulated seconds since the start
    fault_s: float | None  # first HealthLevel.FAULT
    predicted_ttf_s: float | None  # the time to failure announced with the first warning
    warned_chip: int | None = None

    @property
    def lead_s(self) -> float | None:
        if self.warned_s is None or self.fault_s is None:
            return None
        return self.fault_s - self.warned_s


def lead_time(
    per_hour: float,
    seed: int,
    chip: int,
    *,
    dt_s: float = 30.0,
    health: HealthSettings | None = None,
    predict: PredictSettings | None = None,
) -> LeadTime:
    """Run a board with one chip aging at `per_hour` until the health model faults it."""
    board = StatisticalBoard(seed, degrading={chip: per_hour})
    model = HealthModel(health or HealthSettings(), board.conditions.chip_count)
    model.set_board_v_target(board.board_v)
    predictor = Predictor(predict or PredictSettings(), board.conditions.chip_count)
    warned_s: float | None = None
    ttf_s: float | None = None
    warned_chip: int | None = None
    limit_s = 1.5 / per_hour * HOUR_S  # degradation 1.5: far past any failure
    while board.now_s < limit_s:
        sample = board.step(dt_s)
        prediction = predictor.update(sample)
        if prediction.degrading and warned_s is None:
            warned_s, ttf_s = sample.at_s, prediction.time_to_failure_s
            warned_chip = prediction.chip
        if model.update(sample).level is HealthLevel.FAULT:
            return LeadTime(per_hour, warned_s, sample.at_s, ttf_s, warned_chip)
    return LeadTime(per_hour, warned_s, None, ttf_s, warned_chip)


@dataclass(frozen=True)
class HealthyRun:
    board_days: float
    warnings: int  # times degrading went from False to True
    degraded: int  # times the level left OK
    worst_score: float
    reasons: frozenset[str]


def healthy_run(seed: int, days: float, *, dt_s: float = 300.0) -> HealthyRun:
    """A sound board at its stock point for `days`: every warning is a false alarm."""
    board = StatisticalBoard(seed)
    model = HealthModel(HealthSettings(), board.conditions.chip_count)
    model.set_board_v_target(board.board_v)
    predictor = Predictor(PredictSettings(), board.conditions.chip_count)
    warnings = degraded = 0
    was_warning, was_ok, worst = False, True, 100.0
    reasons: set[str] = set()
    steps = round(days * DAY_S / dt_s)
    for _ in range(steps):
        sample = board.step(dt_s)
        health = model.update(sample)
        warning = predictor.update(sample).degrading
        warnings += warning and not was_warning
        ok = health.level is HealthLevel.OK
        degraded += was_ok and not ok
        was_warning, was_ok = warning, ok
        worst = min(worst, health.score)
        reasons.update(r.code for r in health.reasons)
    return HealthyRun(steps * dt_s / DAY_S, warnings, degraded, worst, frozenset(reasons))


def update_cost_us(seconds: int = 3600, seed: int = 5) -> tuple[float, float]:
    """(mean, max) µs of HealthModel.update + Predictor.update per module-sample at 1 Hz.

    The samples are made first so only the models are timed. One chip is aging, so the
    bucket boundaries (every 5 minutes) run real fits, the costliest updates.
    """
    board = StatisticalBoard(seed, degrading={3: 0.1})
    board.degradation[3] = 0.33
    samples = [board.step(1.0) for _ in range(seconds)]
    model = HealthModel(HealthSettings(), board.conditions.chip_count)
    predictor = Predictor(PredictSettings(), board.conditions.chip_count)
    costs = []
    clock = time.perf_counter
    for sample in samples:
        started = clock()
        model.update(sample)
        predictor.update(sample)
        costs.append(clock() - started)
    return statistics.fmean(costs) * 1e6, max(costs) * 1e6


def busiest_boundary_ms(hours: float = 12.0, freq_mhz: float = 520.0) -> float:
    """The longest single Predictor.update on a board overclocked until half its chips err
    (the most fits a bucket boundary can ask for): how long it holds up the event loop."""
    board = StatisticalBoard(3, conditions=BoardConditions(freq_mhz=freq_mhz, board_temp_c=70.0))
    predictor = Predictor(PredictSettings(), board.conditions.chip_count)
    worst = 0.0
    for _ in range(round(hours * HOUR_S / 60.0)):
        sample = board.step(60.0)
        started = time.perf_counter()
        predictor.update(sample)
        worst = max(worst, time.perf_counter() - started)
    return worst * 1e3


LEAD_GOALS_H = {0.05: 2.0, 0.1: 1.0, 0.2: 0.25}
"""Median warning lead wanted per aging rate (per simulated hour): the chip goes from sound
to failed in about 0.5 / rate hours, and its errors are countable for the last third."""

LEAD_SEEDS = tuple(range(1, 9))
HEALTHY_SEEDS = (11, 12, 13, 14, 15, 16)
HEALTHY_DAYS = 7.0
MODULES = 3


def run() -> list[Figure]:
    figures = []
    for per_hour, goal_h in LEAD_GOALS_H.items():
        runs = [lead_time(per_hour, seed, chip=seed * 17 % 126) for seed in LEAD_SEEDS]
        leads = [r.lead_s / HOUR_S if r.lead_s is not None else 0.0 for r in runs]
        name = f"lead_time_{per_hour:g}_per_h"
        figures.append(Figure(f"{name}_median", statistics.median(leads), "h", f"> {goal_h:g} h"))
        figures.append(Figure(f"{name}_min", min(leads), "h", "> 0"))
    healthy = [healthy_run(seed, HEALTHY_DAYS) for seed in HEALTHY_SEEDS]
    board_days = sum(r.board_days for r in healthy)
    alarms = sum(r.warnings + r.degraded for r in healthy)
    figures.append(Figure("healthy_board_days", board_days, "board-days"))
    figures.append(Figure("false_alarms_per_board_day", alarms / board_days, "", "0"))
    mean_us, max_us = update_cost_us()
    figures.append(Figure("health_predict_cost_per_sample", mean_us, "µs"))
    figures.append(Figure("health_predict_cost_max", max_us, "µs"))
    figures.append(Figure("predict_busiest_boundary", busiest_boundary_ms(), "ms", "< 50 ms"))
    figures.append(
        Figure(
            "health_predict_core_share_3x126_1hz",
            MODULES * mean_us / 1e6 * 100,
            "% of a core",
            "< 1 %",
        )
    )
    return figures
