"""Predictive maintenance, proved in simulated time on boards that follow the chips' physics.

The boards come from the benchmark's statistical harness (same silicon, same error model,
same Poisson nonces as the emulated chains), so these tests and `tools/run bench predict`
hold the predictor to the same figures.
"""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashbay.agent.health import HealthModel, HealthSettings
from hashbay.agent.predict import (
    Predictor,
    PredictSettings,
    best_step_log_likelihood,
    fit_logistic_trend,
)
from hashbay.agent.settings import parse_table
from hashbay.agent.status import ChipSample, HealthLevel, ModuleSample, Prediction
from hashbay.drivers.errors import ConfigError
from hashbay.tools.bench.predict import HOUR_S, StatisticalBoard, healthy_run, lead_time

CHIPS = 126


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_the_fit_recovers_a_known_trend_and_its_time_to_failure() -> None:
    points = [
        (t, 65.0, 2000, round(2000 * _sigmoid(-4.0 + 0.8 * t)))
        for t in (-5.0, -4.0, -3.0, -2.0, -1.0, 0.0)
    ]
    trend = fit_logistic_trend(points)
    assert trend is not None
    assert trend.slope_per_h == pytest.approx(0.8, abs=0.02)
    assert trend.logit_now == pytest.approx(-4.0, abs=0.05)
    assert trend.likelihood_ratio > 30
    assert trend.slope_se_per_h < 0.2


def test_heat_explains_a_rise_that_follows_the_board_temperature() -> None:
    temps = [65.0, 65.0, 65.0, 75.0, 75.0, 75.0]
    points = [
        (float(t), temp, 3000, round(3000 * _sigmoid(-6.0 + 0.2 * (temp - 65.0))))
        for t, temp in zip(range(-5, 1), temps, strict=True)
    ]
    trend = fit_logistic_trend(points)
    assert trend is not None
    assert trend.per_c == pytest.approx(0.2, abs=0.05)
    assert trend.likelihood_ratio < 5  # time adds nothing once heat is accounted for


def test_the_fit_declines_data_that_cannot_carry_a_trend() -> None:
    assert fit_logistic_trend([(-2.0, 65.0, 100, 0), (-1.0, 65.0, 100, 0)]) is None
    assert fit_logistic_trend([(-2.0, 65.0, 10, 10), (-1.0, 65.0, 10, 10)]) is None
    assert fit_logistic_trend([(-1.0, 65.0, 100, 3), (-1.0, 65.0, 100, 4)]) is None


def test_a_jump_fits_a_step_better_than_a_trend() -> None:
    points = [(float(t), 65.0, 500, 1 if t < -3 else 40) for t in range(-8, 1)]
    trend = fit_logistic_trend(points)
    assert trend is not None
    assert best_step_log_likelihood(points) - trend.log_likelihood > 10


def test_a_week_of_three_healthy_boards_raises_no_warning_and_no_degraded_level() -> None:
    runs = [healthy_run(seed, days=7.0) for seed in (11, 12, 13)]
    assert sum(r.board_days for r in runs) == pytest.approx(21.0)
    assert [r.warnings for r in runs] == [0, 0, 0]
    assert [r.degraded for r in runs] == [0, 0, 0]
    assert min(r.worst_score for r in runs) == 100.0


def test_an_aging_chip_is_announced_hours_before_it_faults() -> None:
    chips = {1: 17, 2: 34, 3: 51}
    runs = [lead_time(0.1, seed, chip) for seed, chip in chips.items()]
    for run, chip in zip(runs, chips.values(), strict=True):
        assert run.fault_s is not None and run.lead_s is not None
        assert run.warned_chip == chip
        assert run.lead_s > 0.5 * HOUR_S
        assert run.predicted_ttf_s is not None and run.predicted_ttf_s > 0
    assert statistics.median(r.lead_s or 0 for r in runs) >= 1.0 * HOUR_S


def test_slower_aging_is_announced_longer_before() -> None:
    run = lead_time(0.05, 3, chip=51, dt_s=60.0)
    assert run.lead_s is not None and run.lead_s >= 2.0 * HOUR_S


def test_the_warning_names_the_chip_and_counts_down() -> None:
    board = StatisticalBoard(2, degrading={34: 0.1})
    predictor = Predictor(PredictSettings(), CHIPS)
    warnings: list[tuple[float, Prediction]] = []
    while len(warnings) < 2 and board.now_s < 8 * HOUR_S:
        prediction = predictor.update(board.step(30.0))
        if prediction.degrading:
            warnings.append((board.now_s, prediction))
    (first_s, first), (second_s, second) = warnings
    assert first.chip == 34
    assert first.trend.startswith("error rate of chip 34 (now ")
    assert "doubling every" in first.trend and "failure (30 % errors) expected" in first.trend
    assert 0.0 < first.confidence <= 1.0
    assert first.time_to_failure_s is not None and second.time_to_failure_s is not None
    assert (
        second.time_to_failure_s
        == pytest.approx(max(0.0, first.time_to_failure_s - (second_s - first_s)), abs=1.0)
        or second.time_to_failure_s < first.time_to_failure_s
    )


def test_a_chip_erring_steadily_is_not_degrading() -> None:
    board = StatisticalBoard(4)
    board.error_p[60] = 0.04  # overclocked: errs a lot, but not more and more
    health = HealthModel(HealthSettings(), CHIPS)
    predictor = Predictor(PredictSettings(), CHIPS)
    for _ in range(round(2 * 86400 / 120)):
        sample = board.step(120.0)
        assert not predictor.update(sample).degrading
    assert health.update(sample).level is HealthLevel.OK


def test_a_clock_change_restarts_the_chips_evidence() -> None:
    board = StatisticalBoard(1)
    board.error_p[5] = 5e-4
    predictor = Predictor(PredictSettings(), CHIPS)
    for step in range(round(12 * HOUR_S / 30)):
        if step == round(6 * HOUR_S / 30):
            board.freqs_mhz[5] = 515.0  # the autotuner pushed it: more errors, no aging
            board.error_p[5] = 0.03
        assert not predictor.update(board.step(30.0)).degrading


def test_a_warmer_board_is_not_taken_for_aging_chips() -> None:
    board = StatisticalBoard(7)
    predictor = Predictor(PredictSettings(), CHIPS)
    for step in range(round(48 * HOUR_S / 300)):
        if step == round(24 * HOUR_S / 300):  # the inlet air 10 °C warmer, for good
            board.junction_c = [t + 10.0 for t in board.junction_c]
            board.error_p = [board._error_p(c) for c in range(CHIPS)]
            board.temps_c = tuple(t + 10.0 for t in board.temps_c)
        assert not predictor.update(board.step(300.0)).degrading


def test_the_warning_clears_an_hour_after_the_chip_is_healed() -> None:
    board = StatisticalBoard(2, degrading={34: 0.1})
    predictor = Predictor(PredictSettings(), CHIPS)
    while not predictor.update(board.step(30.0)).degrading:
        pass
    board.degradation_per_s.clear()
    board.error_p[34] = 0.0
    healed_s = board.now_s
    prediction = predictor.update(board.step(30.0))
    while prediction.degrading:
        prediction = predictor.update(board.step(30.0))
    hold_s = PredictSettings().hold_s  # the evidence fades first, then the hold runs out
    assert hold_s < board.now_s - healed_s < hold_s + 1.0 * HOUR_S


def test_reenumeration_mid_run_neither_fakes_nor_hides_a_trend() -> None:
    board = StatisticalBoard(2, degrading={34: 0.1})
    predictor = Predictor(PredictSettings(), CHIPS)
    warned = False
    while not warned and board.now_s < 8 * HOUR_S:
        if round(board.now_s) % 3600 == 0:
            board.nonces = [0] * CHIPS  # the chain was enumerated again
            board.errors = [0] * CHIPS
        warned = predictor.update(board.step(30.0)).degrading
    assert warned
    assert predictor._counters.resets >= 3


def test_settings_load_from_a_config_table_and_refuse_a_window_too_short() -> None:
    loaded = parse_table(PredictSettings, {"horizon_s": 86400, "fit_windows_s": [3600]}, "p")
    assert loaded.fit_windows_s == (3600.0,)
    with pytest.raises(ConfigError, match="three buckets"):
        PredictSettings(fit_windows_s=(600.0,))


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.floats(1.0, 50.0),
            st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=3, max_size=3),
            st.booleans(),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_any_counters_give_a_sane_prediction(
    steps: list[tuple[float, list[tuple[int, int]], bool]],
) -> None:
    predictor = Predictor(
        PredictSettings(bucket_s=10.0, fit_windows_s=(30.0, 120.0), min_errors=3), 3
    )
    totals = [[0, 0] for _ in range(3)]
    at_s = 0.0
    for dt_s, chips, restart in steps:
        at_s += dt_s
        for total, (good, bad) in zip(totals, chips, strict=True):
            if restart:
                total[:] = [0, 0]
            total[0] += good
            total[1] += bad
        sample = ModuleSample(
            at_s=at_s,
            chips=tuple(ChipSample(n, e, 0, n * 1e9, 490.0) for n, e in totals),
            expected_hs=3e9,
            temps_c=(65.0,),
            board_v=13.0,
            board_a=50.0,
            dcdc_temp_c=None,
            rail_fault=None,
            fans_stalled=0,
        )
        prediction = predictor.update(sample)
        assert 0.0 <= prediction.confidence <= 1.0
        assert prediction.time_to_failure_s is None or prediction.time_to_failure_s >= 0
        assert prediction.degrading == (prediction.time_to_failure_s is not None)
        assert prediction.chip is None or 0 <= prediction.chip < 3
