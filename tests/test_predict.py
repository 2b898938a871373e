"""Predictive maintenance, proved in simulated time on boards that follow the chips' physics.

The boards come from the benchmark's statistical harness (same silicon, same error model,
same Poisson nonces as the emulated chains) and are fed the way the slot controller feeds
the models, so these tests and `tools/run bench predict` hold the predictor to the same
figures; the bench runs more boards for longer.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashbay.agent.core.settings import parse_table
from hashbay.agent.core.status import ChipSample, HealthLevel, ModuleSample, Prediction
from hashbay.agent.modules.health import HealthModel
from hashbay.agent.modules.health_settings import HealthSettings
from hashbay.agent.modules.predict import Predictor, stress_factor
from hashbay.agent.modules.predict_fit import (
    best_step_log_likelihood,
    fit_logistic_trend,
    rising_lately,
)
from hashbay.agent.modules.predict_settings import PredictSettings
from hashbay.drivers.errors import ConfigError
from hashbay.tools.bench.predict import (
    HOUR_S,
    StatisticalBoard,
    aging_chip,
    cost_at,
    healthy_run,
    lead_time,
    tuned_board,
)
from hashbay.tools.bench.predict_scenarios import (
    curtailing,
    diurnal,
    interrupted,
    retuning,
    run_board,
    stepping,
    throttling,
    warming,
    with_store,
)

CHIPS = 126


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# -- the fit -------------------------------------------------------------------------------


def test_the_fit_recovers_a_known_trend_and_its_time_to_failure() -> None:
    points = [
        (t, 490.0, 2000, round(2000 * _sigmoid(-4.0 + 0.8 * t)))
        for t in (-5.0, -4.0, -3.0, -2.0, -1.0, 0.0)
    ]
    trend = fit_logistic_trend(points)
    assert trend is not None
    assert trend.slope_per_h == pytest.approx(0.8, abs=0.02)
    assert trend.logit_now == pytest.approx(-4.0, abs=0.05)
    assert trend.likelihood_ratio > 30
    assert trend.slope_se_per_h < 0.2


def test_a_faster_effective_clock_explains_a_rise_that_follows_it() -> None:
    predict = PredictSettings()
    temps = [65.0, 65.0, 65.0, 75.0, 75.0, 75.0]  # an afternoon ten degrees warmer
    xs = [490.0 * stress_factor(13.44, 13.44, temp, predict) for temp in temps]
    points = [
        (float(t), x, 3000, round(3000 * _sigmoid(-6.0 + 0.2 * (x - xs[0]))))
        for t, x in zip(range(-5, 1), xs, strict=True)
    ]
    trend = fit_logistic_trend(points)
    assert trend is not None
    assert trend.per_mhz == pytest.approx(0.2, abs=0.05)
    assert trend.likelihood_ratio < 5  # time adds nothing once the clock is accounted for


def test_warming_that_comes_with_aging_cannot_explain_the_aging_away() -> None:
    # The board warms 1.5 °C an hour while the chip's logit rises 2.4 an hour from aging:
    # physics lets warming explain at most ~0.26 of it per degree.
    predict = PredictSettings()
    points = []
    for hour in range(-5, 1):
        x = 490.0 * stress_factor(13.44, 13.44, 65.0 + 1.5 * (hour + 5), predict)
        points.append((float(hour), x, 3000, round(3000 * _sigmoid(-5.0 + 2.4 * hour))))
    trend = fit_logistic_trend(points, predict.clock_sensitivity_max)
    assert trend is not None
    assert trend.per_mhz <= predict.clock_sensitivity_max
    assert trend.likelihood_ratio > 30
    assert trend.slope_per_h > 1.5


def test_the_fit_declines_data_that_cannot_carry_a_trend() -> None:
    assert fit_logistic_trend([(-2.0, 490.0, 100, 0), (-1.0, 490.0, 100, 0)]) is None
    assert fit_logistic_trend([(-2.0, 490.0, 10, 10), (-1.0, 490.0, 10, 10)]) is None
    assert fit_logistic_trend([(-1.0, 490.0, 100, 3), (-1.0, 490.0, 100, 4)]) is None


def test_a_jump_fits_a_step_better_than_a_trend() -> None:
    points = [(float(t), 490.0, 500, 1 if t < -3 else 40) for t in range(-8, 1)]
    trend = fit_logistic_trend(points)
    assert trend is not None
    assert best_step_log_likelihood(points) - trend.log_likelihood > 10


def test_the_screen_compares_errors_at_equal_effective_clocks() -> None:
    # An aging chip, throttled for the newest third: fewer errors than before, yet at its
    # full clock it errs more than it did. Unthrottled, the same chip erring steadily.
    full, throttled = 490.0, 416.5
    aging = [(float(t), full, 500, 5 + 2 * (t + 9)) for t in range(-9, -3)]
    aging += [(float(t), throttled, 500, 1) for t in range(-3, 0)]
    steady = [(float(t), full, 500, 10) for t in range(-9, 0)]
    assert rising_lately(aging, 2.5, 0.35)
    assert not rising_lately(steady, 2.5, 0.35)


# -- healthy boards ------------------------------------------------------------------------


def test_a_week_of_three_healthy_boards_raises_no_warning_and_no_degraded_level() -> None:
    runs = [healthy_run(seed, days=7.0) for seed in (11, 12, 13)]
    assert sum(r.board_days for r in runs) == pytest.approx(21.0)
    assert [r.warnings for r in runs] == [0, 0, 0]
    assert [r.degraded for r in runs] == [0, 0, 0]
    assert min(r.worst_score for r in runs) == 100.0


def test_tuned_boards_through_warm_days_and_cool_nights_raise_no_warning() -> None:
    # At the tuned point nearly every chip errs a little: a hundred chips pass the
    # evidence gate instead of none at stock.
    run = run_board(11, schedule=diurnal(2.0), tuned=True)
    assert run.warnings == 0
    assert run.degraded == 0


def test_a_chip_erring_steadily_is_not_degrading() -> None:
    board = StatisticalBoard(4)
    board.error_p[60] = 0.04  # overclocked: errs a lot, but not more and more
    health = HealthModel(HealthSettings(), CHIPS)
    predictor = Predictor(PredictSettings(), CHIPS)
    for _ in range(round(2 * 86400 / 120)):
        sample = board.step(120.0)
        assert not predictor.update(sample).degrading
    assert health.update(sample).level is HealthLevel.OK


def test_a_chip_clocked_faster_errs_more_without_being_taken_for_aging() -> None:
    board = StatisticalBoard(1)
    board.error_p[5] = 5e-4
    predictor = Predictor(PredictSettings(), CHIPS)
    for step in range(round(12 * HOUR_S / 30)):
        if step == round(6 * HOUR_S / 30):
            board.freqs_mhz[5] = 515.0  # the autotuner pushed it: more errors, no aging
            board.error_p[5] = 0.03
        prediction = predictor.update(board.step(30.0))
        assert not prediction.degrading
    assert prediction.steps == ()  # the clock explains the jump: not even a step


def test_a_warmer_board_is_not_taken_for_aging_chips() -> None:
    board = StatisticalBoard(7)
    predictor = Predictor(PredictSettings(), CHIPS)
    for step in range(round(48 * HOUR_S / 300)):
        if step == round(24 * HOUR_S / 300):  # the inlet air 10 °C warmer, for good
            board.set_board_temp(board.board_temp_c + 10.0)
        assert not predictor.update(board.step(300.0)).degrading


# -- aging chips ---------------------------------------------------------------------------


def test_an_aging_chip_is_announced_hours_before_it_faults() -> None:
    chips = {1: 17, 2: 34, 3: 51}
    runs = [lead_time(0.1, seed, chip) for seed, chip in chips.items()]
    for run, chip in zip(runs, chips.values(), strict=True):
        assert run.fault_s is not None and run.lead_s is not None
        assert run.warned_chip == chip
        assert run.lead_s > 0.5 * HOUR_S
        assert run.predicted_ttf_s is not None and run.predicted_ttf_s > 0
    assert statistics.median(r.lead_s or 0 for r in runs) >= 0.75 * HOUR_S


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


def test_the_warning_clears_an_hour_after_the_chip_is_healed() -> None:
    board = StatisticalBoard(2, degrading={34: 0.1})
    predictor = Predictor(PredictSettings(), CHIPS)
    while not predictor.update(board.step(30.0)).degrading:
        pass
    board.degradation_per_s.clear()
    board.fixed_error_p[34] = 0.0
    board.refresh_error_p()
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


# -- 1. steps --------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "tuned"), [(2, False), (3, False), (1, True)])
def test_a_step_in_a_chips_error_rate_is_reported_as_a_step_not_a_failure(
    seed: int, tuned: bool
) -> None:
    chip = aging_chip(seed)
    run = run_board(seed, schedule=stepping(chip, 0.001, 0.03, 12 * HOUR_S, 1.5), tuned=tuned)
    assert run.warnings == 0  # 0.1 % → 3 % and staying there is no failure on its way
    assert chip in run.stepped
    assert "chip_error_step" in run.reasons


def _synthetic(at_s: float, counts: list[tuple[int, int]]) -> ModuleSample:
    return ModuleSample(
        at_s=at_s,
        chips=tuple(ChipSample(n, e, 0, n * 1e12, 490.0) for n, e in counts),
        expected_hs=1e12,
        temps_c=(65.0,),
        board_v=13.44,
        board_a=90.0,
        dcdc_temp_c=None,
        rail_fault=None,
        fans_stalled=0,
    )


def _jump_then_drift(windows_s: tuple[float, ...]) -> list[Prediction]:
    """Chip 0 errs on 0.1 % for six hours, jumps to 1 % and drifts up, doubling every two
    hours: past the jump two hours alone see a trend, eight hours see one jump. Exact
    counts (20 nonces a second: a low ticket difficulty)."""
    predictor = Predictor(PredictSettings(fit_windows_s=windows_s), 2)
    good, bad = [0, 0], [0.0, 0.0]
    predictions = []
    for second in range(0, round(10 * HOUR_S), 30):
        hours = second / HOUR_S
        rate = 0.001 if hours < 6 else 0.01 * 2 ** ((hours - 6) / 2)
        good = [n + 600 for n in good]
        bad = [bad[0] + 600 * rate, bad[1] + 600 * 0.001]
        counts = [(n, int(e)) for n, e in zip(good, bad, strict=True)]
        predictions.append(predictor.update(_synthetic(second, counts)))
    return predictions


def test_a_longer_window_vetoes_a_short_windows_trend() -> None:
    alone = _jump_then_drift((2 * HOUR_S,))
    assert any(p.degrading for p in alone)  # two hours alone take the drift for aging
    both = _jump_then_drift((2 * HOUR_S, 8 * HOUR_S))
    assert not any(p.degrading for p in both)
    assert 0 in {step.chip for p in both for step in p.steps}


# -- 2. re-tuning ----------------------------------------------------------------------------


def test_the_tuning_run_is_not_evidence() -> None:
    board = StatisticalBoard(5)
    predictor = Predictor(PredictSettings(), CHIPS)
    for _ in range(120):
        predictor.update(board.step(30.0))
    board.fixed_error_p.update({chip: 0.05 for chip in range(CHIPS)})  # the tuner probes
    board.refresh_error_p()
    for _ in range(120):
        predictor.skip(board.step(30.0))
    board.fixed_error_p.clear()
    board.refresh_error_p()
    for _ in range(120):
        predictor.update(board.step(30.0))
    errors = sum(sum(p.errors) for w in predictor.state().windows for p in w.points)
    assert errors < 10  # a sound chip's handful, not the tuner's thousands
    assert predictor.hashing_s == pytest.approx(359 * 30.0)  # tuning time is still time


def test_re_tuning_a_hashing_module_raises_no_warning() -> None:
    runs = [run_board(seed, schedule=retuning(12 * HOUR_S, 1.5), tuned=True) for seed in (11, 12)]
    assert [r.warnings for r in runs] == [0, 0]
    assert all(r.board_days > 1.4 for r in runs)


def test_an_aging_chip_is_still_announced_after_a_re_tune() -> None:
    run = run_board(
        2,
        schedule=retuning(12 * HOUR_S, 1.0, 30.0),
        aging={34: 0.1},
        tuned=True,
        aging_starts_s=11 * HOUR_S,
    )
    assert run.warned_chip == 34 and run.lead_s is not None and run.lead_s > 0
    assert run.false_warnings == 0


# -- 3. throttling, power targets ------------------------------------------------------------


def test_aging_under_hourly_throttling_is_announced_before_the_fault() -> None:
    leads = []
    for seed in (1, 2, 3):
        run = run_board(seed, schedule=throttling(1.0, dt_s=30.0), aging={aging_chip(seed): 0.1})
        assert run.warned_chip == aging_chip(seed), seed
        assert run.lead_s is not None and run.lead_s > 0, seed
        leads.append(run.lead_s)
    assert statistics.median(leads) > 0.5 * HOUR_S


def test_hourly_throttling_of_sound_boards_raises_no_warning() -> None:
    runs = [
        run_board(12, schedule=throttling(2.0)),
        run_board(13, schedule=throttling(1.0), tuned=True),
    ]
    assert [r.warnings for r in runs] == [0, 0]


# -- 4. curtailment ----------------------------------------------------------------------------


def test_curtailment_cycles_leave_a_sound_module_ok() -> None:
    run = run_board(14, schedule=curtailing(1.0))
    assert run.degraded == 0
    assert "hashrate_low" not in run.reasons
    assert run.warnings == 0


def test_aging_through_curtailment_is_announced_before_the_fault() -> None:
    run = run_board(3, schedule=curtailing(1.0), aging={51: 0.1})
    assert run.warned_chip == 51 and run.lead_s is not None and run.lead_s > 0.5 * HOUR_S


# -- 5. restarts and slot moves ----------------------------------------------------------------


@pytest.mark.parametrize("how", ["restart", "move"])
def test_a_warning_survives_a_restart_or_a_slot_move_and_is_told_once(how: str) -> None:
    def run(directory: Path) -> object:
        return run_board(
            2,
            schedule=interrupted(12 * HOUR_S, how, directory),
            aging={34: 0.1},
            book=True,
            store_dir=directory,
        )

    outcome = with_store(run)  # type: ignore[arg-type]
    assert outcome.warnings == 1  # one `degrading` event for the one trend
    assert outcome.warned_chip == 34 and outcome.fault_s is not None
    assert outcome.unwarned_s == 0.0  # shown from the first warning to the fault


def test_a_restored_predictor_goes_on_with_its_evidence(tmp_path: Path) -> None:
    from hashbay.agent.modules.predict_store import PredictorBook, PredictStore

    board = StatisticalBoard(2, degrading={34: 0.1})
    book = PredictorBook(PredictSettings(), PredictStore(tmp_path))
    predictor = book.take("HB1", CHIPS, board.board_v)
    while not predictor.update(board.step(30.0)).degrading:
        pass
    book.put_back("HB1")
    board.sleep(120.0)
    again = PredictorBook(PredictSettings(), PredictStore(tmp_path)).take("HB1", CHIPS, None)
    prediction = again.update(board.step(30.0))
    assert prediction.degrading and prediction.chip == 34
    assert not again.newly_raised
    assert again.hashing_s == predictor.hashing_s  # the two minutes off are no hashing


# -- 7. the tuned operating point: cost ------------------------------------------------------


def test_the_predictor_stays_cheap_at_the_tuned_point() -> None:
    # Counted, not timed: chips screened per bucket boundary once every window is full.
    # (Before, each boundary screened ~200 chip-windows over up to 288 buckets each.)
    _, _, screened = cost_at(tuned_board(3), warm_h=25.0, measure_h=0.5)
    assert screened < 60


# -- 8. warming with aging -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [3, 5])
def test_aging_that_comes_with_a_warming_board_is_announced(seed: int) -> None:
    chip = aging_chip(seed)
    run = run_board(seed, schedule=warming(15 * HOUR_S, 1.5), aging={chip: 0.1})
    assert run.warned_chip == chip
    assert run.lead_s is not None and run.lead_s > 0.25 * HOUR_S


# -- settings and robustness ---------------------------------------------------------------------


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
            st.sampled_from([None, 0.0, 5.0]),
            st.sampled_from(["update", "update", "skip"]),
            st.sampled_from([400.0, 490.0, 520.0]),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_any_counters_give_a_sane_prediction(
    steps: list[tuple[float, list[tuple[int, int]], bool, float | None, str, float]],
) -> None:
    predictor = Predictor(
        PredictSettings(bucket_s=10.0, fit_windows_s=(30.0, 120.0), min_errors=3), 3
    )
    totals = [[0, 0] for _ in range(3)]
    at_s = 0.0
    for dt_s, chips, restart, hashing_for_s, how, freq in steps:
        at_s += dt_s
        for total, (good, bad) in zip(totals, chips, strict=True):
            if restart:
                total[:] = [0, 0]
            total[0] += good
            total[1] += bad
        sample = ModuleSample(
            at_s=at_s,
            chips=tuple(ChipSample(n, e, 0, n * 1e9, freq) for n, e in totals),
            expected_hs=3e9,
            temps_c=(65.0,),
            board_v=13.0,
            board_a=50.0,
            dcdc_temp_c=None,
            rail_fault=None,
            fans_stalled=0,
            hashing_for_s=hashing_for_s,
        )
        if how == "skip":
            predictor.skip(sample)
            continue
        prediction = predictor.update(sample)
        assert 0.0 <= prediction.confidence <= 1.0
        assert prediction.time_to_failure_s is None or prediction.time_to_failure_s >= 0
        assert prediction.degrading == (prediction.time_to_failure_s is not None)
        assert prediction.chip is None or 0 <= prediction.chip < 3
        assert all(0 <= step.chip < 3 for step in prediction.steps)
