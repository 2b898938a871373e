"""The simulated rig's physics: calibrated, deterministic, and with real trade-offs to find."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashbay.tools.sim.physics import (
    CHIP_SPECS,
    DEFAULT_DOMAINS,
    STABLE_ERROR,
    BoardThermal,
    SiliconSample,
    board_point,
    chip_power_w,
    chip_temp_c,
    combine_dba,
    dcdc_efficiency,
    efficiency_oracle,
    error_probability,
    fan_noise_dba,
    hashrate_hs,
    make_silicon,
    max_freq_mhz,
    psu_efficiency,
    spec_for_chip_id,
    stable_freq_mhz,
    static_power_w,
    thermal_resistance_c_per_w,
)

BM1368 = CHIP_SPECS["BM1368"]
TYPICAL = SiliconSample.typical(BM1368)
BOARD_VOLTS = [11.0 + 0.2 * i for i in range(23)]  # 11.0 .. 15.4 V, within the site caps


def board(seed: int = 7, count: int = 126) -> list[SiliconSample]:
    return make_silicon(BM1368, count, random.Random(seed))


# -- chips -----------------------------------------------------------------------------


def test_specs_are_found_by_name_and_by_the_id_the_chip_reports() -> None:
    assert set(CHIP_SPECS) == {"BM1366", "BM1368", "BM1370"}
    for name, spec in CHIP_SPECS.items():
        assert spec_for_chip_id(spec.chip_id) is spec
        assert spec.name == name
    assert [CHIP_SPECS[n].small_cores for n in ("BM1366", "BM1368", "BM1370")] == [894, 1276, 2040]
    with pytest.raises(KeyError, match="0x1397"):
        spec_for_chip_id(0x1397)


def test_a_bm1368_at_490_mhz_hashes_625_ghs() -> None:
    assert hashrate_hs(BM1368, 490.0) == pytest.approx(625.24e9)


def test_a_typical_bm1368_at_its_stock_point_draws_about_10_w_for_16_to_18_j_per_th() -> None:
    power_w = chip_power_w(BM1368, TYPICAL, 490.0, 0.32, 65.0)
    j_per_th = power_w / (hashrate_hs(BM1368, 490.0) * 1e-12)
    assert 9.5 <= power_w <= 11.0
    assert 16.0 <= j_per_th <= 18.0


@pytest.mark.parametrize(
    ("name", "low_j_per_th", "high_j_per_th"),
    [("BM1366", 18.0, 21.0), ("BM1368", 16.0, 18.0), ("BM1370", 12.5, 15.0)],
)
def test_every_chip_is_calibrated_to_its_generation(
    name: str, low_j_per_th: float, high_j_per_th: float
) -> None:
    spec = CHIP_SPECS[name]
    sample = SiliconSample.typical(spec)
    assert 0.28 <= spec.nominal_chip_v <= 0.40
    power_w = chip_power_w(spec, sample, spec.nominal_freq_mhz, spec.nominal_chip_v, 65.0)
    j_per_th = power_w / (hashrate_hs(spec, spec.nominal_freq_mhz) * 1e-12)
    assert low_j_per_th <= j_per_th <= high_j_per_th
    stable = stable_freq_mhz(spec, sample, spec.nominal_chip_v, 65.0)
    assert spec.nominal_freq_mhz < stable < 1.15 * spec.nominal_freq_mhz  # stock keeps a margin


def test_switching_power_grows_with_v_squared_times_f() -> None:
    def switching_w(freq_mhz: float, chip_v: float) -> float:
        return chip_power_w(BM1368, TYPICAL, freq_mhz, chip_v, 65.0) - chip_power_w(
            BM1368, TYPICAL, 0.0, chip_v, 65.0
        )

    assert switching_w(500.0, 0.32) == pytest.approx(2 * switching_w(250.0, 0.32))
    assert switching_w(400.0, 0.36) == pytest.approx((0.36 / 0.30) ** 2 * switching_w(400.0, 0.30))


def test_hot_chips_leak_more_and_higher_voltage_leaks_more() -> None:
    powers = [chip_power_w(BM1368, TYPICAL, 490.0, 0.32, t) for t in (25.0, 45.0, 65.0, 85.0)]
    assert powers == sorted(powers)
    assert len(set(powers)) == len(powers)
    assert static_power_w(BM1368, TYPICAL, 0.34, 65.0) > static_power_w(BM1368, TYPICAL, 0.30, 65.0)


def test_stable_frequency_rises_with_voltage_and_falls_with_heat() -> None:
    by_voltage = [stable_freq_mhz(BM1368, TYPICAL, v, 65.0) for v in (0.28, 0.30, 0.32, 0.34)]
    steps = [b - a for a, b in itertools.pairwise(by_voltage)]
    assert all(step > 0 for step in steps)
    assert max(steps) == pytest.approx(min(steps))  # linear in the overdrive
    assert stable_freq_mhz(BM1368, TYPICAL, 0.32, 90.0) < stable_freq_mhz(
        BM1368, TYPICAL, 0.32, 65.0
    )
    assert stable_freq_mhz(BM1368, TYPICAL, BM1368.threshold_v - 0.01, 65.0) == 0.0


def test_errors_are_negligible_below_the_stable_frequency_and_take_over_past_it() -> None:
    stable = stable_freq_mhz(BM1368, TYPICAL, 0.32, 65.0)

    def error(freq_mhz: float) -> float:
        return error_probability(BM1368, TYPICAL, freq_mhz, 0.32, 65.0)

    assert error(stable - 20.0) <= 1e-4
    assert error(stable) == pytest.approx(STABLE_ERROR, rel=0.01)
    assert 1e-2 < error(stable + 20.0) < 0.5
    assert error(stable + 200.0) > 0.99


def test_silicon_is_reproducible_under_a_seed_and_every_chip_differs() -> None:
    first, again, other = board(seed=3), board(seed=3), board(seed=4)
    assert first == again
    assert first != other
    stables = [stable_freq_mhz(BM1368, s, 0.32, 65.0) for s in first]
    assert len(set(stables)) == len(stables)
    spread = [s / BM1368.stable_freq_mhz - 1.0 for s in stables]
    assert max(abs(x) for x in spread) <= 0.061
    assert 0.012 < (sum(x * x for x in spread) / len(spread)) ** 0.5 < 0.03  # about ±5 %


def test_making_silicon_leaves_the_global_random_state_alone() -> None:
    random.seed(11)
    expected = random.random()
    random.seed(11)
    board(seed=1)
    assert random.random() == expected


def test_a_degrading_chip_errs_more_and_more_at_any_clock() -> None:
    for freq_mhz in (300.0, 490.0, 540.0):
        errors = [
            error_probability(BM1368, TYPICAL, freq_mhz, 0.32, 65.0, degradation=d)
            for d in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
        ]
        assert errors == sorted(errors)
        assert len(set(errors)) == len(errors)
        assert errors[-1] == 1.0  # dead
    healthy = stable_freq_mhz(BM1368, TYPICAL, 0.32, 65.0)
    assert stable_freq_mhz(BM1368, TYPICAL, 0.32, 65.0, degradation=0.4) < healthy


def test_error_rate_of_an_aging_chip_creeps_up_exponentially() -> None:
    errors = [
        error_probability(BM1368, TYPICAL, 300.0, 0.32, 65.0, degradation=d)
        for d in (0.1, 0.2, 0.3, 0.4)
    ]
    ratios = [b / a for a, b in itertools.pairwise(errors)]
    assert all(ratio == pytest.approx(ratios[0], rel=1e-3) for ratio in ratios)
    assert ratios[0] > 3.0


@settings(max_examples=300, deadline=None)
@given(
    freqs=st.lists(st.floats(0.0, 2000.0), min_size=2, max_size=6),
    chip_v=st.floats(0.0, 0.6),
    temp_c=st.floats(-40.0, 150.0),
    degradation=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
)
def test_error_probability_is_a_probability_and_monotone_in_frequency(
    freqs: list[float], chip_v: float, temp_c: float, degradation: float, seed: int
) -> None:
    sample = make_silicon(BM1368, 1, random.Random(seed))[0]
    errors = [
        error_probability(BM1368, sample, f, chip_v, temp_c, degradation=degradation)
        for f in sorted(freqs)
    ]
    assert all(0.0 <= e <= 1.0 for e in errors)
    assert errors == sorted(errors)


@settings(max_examples=200, deadline=None)
@given(
    chip_v=st.floats(0.25, 0.40),
    temp_c=st.floats(20.0, 110.0),
    max_error=st.floats(1e-5, 0.5),
    degradation=st.floats(0.0, 0.5),
)
def test_max_freq_is_the_exact_edge_of_the_error_budget(
    chip_v: float, temp_c: float, max_error: float, degradation: float
) -> None:
    edge = max_freq_mhz(BM1368, TYPICAL, chip_v, temp_c, max_error, degradation=degradation)
    if edge == 0.0:
        floor = error_probability(BM1368, TYPICAL, 0.0, chip_v, temp_c, degradation=degradation)
        assert floor >= max_error * (1 - 1e-9)
        return
    at_edge = error_probability(BM1368, TYPICAL, edge, chip_v, temp_c, degradation=degradation)
    assert at_edge == pytest.approx(max_error, rel=1e-6)


def test_chip_temperature_adds_its_own_hotspot() -> None:
    hot, cool = (
        SiliconSample(500.0, 1.0, 1.2, 5.0),
        SiliconSample(500.0, 1.0, 0.5, 5.0),
    )
    assert chip_temp_c(60.0, hot, 10.0) == pytest.approx(72.0)
    assert chip_temp_c(60.0, cool, 10.0) == pytest.approx(65.0)
    assert chip_temp_c(60.0, hot, 0.0) == 60.0


# -- the oracle ------------------------------------------------------------------------


def test_oracle_runs_every_chip_at_its_own_edge_within_the_error_budget() -> None:
    chips = board()
    best = efficiency_oracle(BM1368, chips, BOARD_VOLTS, 65.0, 1e-3)
    assert best.board_v in BOARD_VOLTS
    assert best.chip_v == pytest.approx(best.board_v / DEFAULT_DOMAINS)
    assert 0.28 <= best.chip_v <= 0.31  # efficiency lives below the stock voltage
    assert max(best.error_rates) <= 1e-3 * (1 + 1e-6)
    assert min(best.error_rates) > 0.9e-3  # nothing left on the table
    assert len(set(best.freqs_mhz)) == len(chips)
    rescored = board_point(BM1368, chips, best.freqs_mhz, best.board_v, 65.0)
    assert rescored.hashes_per_j == pytest.approx(best.hashes_per_j, rel=1e-9)
    assert 15.0 < best.j_per_th < 17.5


def test_oracle_beats_every_uniform_clock_at_every_voltage() -> None:
    chips = board()
    best = efficiency_oracle(BM1368, chips, BOARD_VOLTS, 65.0, 1e-3)
    stock = board_point(BM1368, chips, [490.0] * len(chips), 0.32 * DEFAULT_DOMAINS, 65.0)
    assert best.j_per_th < 0.97 * stock.j_per_th
    for board_v in BOARD_VOLTS[::2]:
        for freq_mhz in range(250, 751, 10):
            uniform = board_point(BM1368, chips, [float(freq_mhz)] * len(chips), board_v, 65.0)
            # even counting the good hashes of chips pushed past their error budget
            assert uniform.hashes_per_j < best.hashes_per_j


def test_oracle_respects_the_clock_limits_and_idles_hopeless_chips() -> None:
    chips = board(count=12)
    capped = efficiency_oracle(BM1368, chips, [13.0], 65.0, 1e-3, freq_max_mhz=400.0)
    assert max(capped.freqs_mhz) == 400.0
    dying = [0.0] * 11 + [0.9]  # its error floor alone exceeds the budget
    point = efficiency_oracle(BM1368, chips, [13.0], 65.0, 1e-3, degradation=dying)
    assert point.freqs_mhz[-1] == 0.0
    assert all(f > 0 for f in point.freqs_mhz[:-1])


def test_oracle_skips_voltages_that_would_cook_a_chip() -> None:
    bm1370 = CHIP_SPECS["BM1370"]
    chips = make_silicon(bm1370, 20, random.Random(1))
    point = efficiency_oracle(bm1370, chips, [12.0, 15.4], 100.0, 1e-3)
    assert point.board_v == 12.0
    assert point.hottest_junction_c < 125.0
    with pytest.raises(ValueError, match="no usable board voltage"):
        efficiency_oracle(bm1370, chips, [15.4], 100.0, 1e-3)
    with pytest.raises(ValueError, match="no usable board voltage"):
        efficiency_oracle(BM1368, board(count=3), [], 65.0, 1e-3)


# -- heat ------------------------------------------------------------------------------


def settle(power_w: float, airflow: float, ambient_c: float = 25.0) -> float:
    thermal = BoardThermal(ambient_c)
    for _ in range(1200):  # 20 minutes
        thermal.step(1.0, power_w, airflow, ambient_c)
    return thermal.temp_c


def test_a_13_kw_board_settles_at_60_to_70_c_at_full_airflow_and_above_80_at_half() -> None:
    assert 60.0 <= settle(1300.0, 1.0) <= 70.0
    assert settle(1300.0, 0.5) > 80.0
    assert settle(0.0, 1.0) == pytest.approx(25.0)


def test_board_time_constant_is_tens_of_seconds_and_steps_are_exact() -> None:
    thermal = BoardThermal(25.0)
    tau_s = thermal.time_constant_s(1.0)
    assert 30.0 <= tau_s <= 90.0
    for _ in range(100):
        thermal.step(tau_s / 100, 1300.0, 1.0, 25.0)
    final_c = BoardThermal.steady_state_c(1300.0, 1.0, 25.0)
    assert thermal.temp_c == pytest.approx(25.0 + (final_c - 25.0) * (1 - math.exp(-1)))
    one_step = BoardThermal(25.0)
    one_step.step(tau_s, 1300.0, 1.0, 25.0)
    assert one_step.temp_c == pytest.approx(thermal.temp_c)


def test_a_stalled_fan_overheats_a_board_at_full_power_within_a_minute() -> None:
    thermal = BoardThermal(settle(1300.0, 1.0))
    seconds = 0
    while thermal.temp_c < 95.0:
        thermal.step(1.0, 1300.0, 0.0, 25.0)
        seconds += 1
    assert 10 <= seconds <= 60
    assert BoardThermal.steady_state_c(1300.0, 0.0, 25.0) > 300.0


def test_more_airflow_always_cools_better() -> None:
    resistances = [thermal_resistance_c_per_w(a / 10) for a in range(11)]
    assert resistances == sorted(resistances, reverse=True)
    with pytest.raises(ValueError, match="airflow"):
        thermal_resistance_c_per_w(-0.1)


# -- power conversion ------------------------------------------------------------------


def test_psu_efficiency_peaks_around_half_load_and_is_poor_at_very_light_load() -> None:
    loads = [i / 100 for i in range(1, 101)]
    peak = max(loads, key=psu_efficiency)
    assert 0.4 <= peak <= 0.6
    assert psu_efficiency(peak) == pytest.approx(0.95, abs=0.005)
    assert psu_efficiency(1.0) < psu_efficiency(0.5)
    assert psu_efficiency(1.0) > 0.92
    assert psu_efficiency(0.05) < 0.87
    assert psu_efficiency(0.0) == 0.0


def test_board_converter_is_95_to_97_percent_efficient_over_its_working_range() -> None:
    for load in (0.1, 0.2, 0.4, 0.6, 0.8, 1.0):
        assert 0.95 <= dcdc_efficiency(load) <= 0.97
    assert dcdc_efficiency(0.5) > dcdc_efficiency(0.1)


# -- noise -----------------------------------------------------------------------------


def test_fan_noise_follows_the_fan_law() -> None:
    assert fan_noise_dba(6000.0, 6000.0, 69.0) == pytest.approx(69.0)
    assert fan_noise_dba(3000.0, 6000.0, 69.0) == pytest.approx(69.0 - 15.05, abs=0.01)
    assert fan_noise_dba(0.0, 6000.0, 69.0) == -math.inf


def test_two_equal_fans_are_3_01_db_louder_than_one() -> None:
    assert combine_dba([70.0, 70.0]) == pytest.approx(73.01, abs=0.005)
    assert combine_dba([70.0, -math.inf]) == 70.0
    assert combine_dba([]) == -math.inf


@given(st.lists(st.floats(-20.0, 140.0) | st.just(-math.inf), min_size=1, max_size=8))
def test_combined_level_is_at_least_the_loudest_and_at_most_n_times_it(
    levels: list[float],
) -> None:
    combined = combine_dba(levels)
    loudest = max(levels)
    assert combined >= loudest
    if loudest > -math.inf:
        assert combined <= loudest + 10 * math.log10(len(levels)) + 1e-9
