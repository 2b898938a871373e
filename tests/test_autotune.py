"""The autotuner on boards made of the simulator's physics: clean clocks, near-oracle efficiency."""

from __future__ import annotations

import random
import tomllib
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hashbay.agent.daemon.config import default_config_path, parse_config
from hashbay.agent.tuning.autotune import (
    Autotuner,
    BoardProfile,
    Sprt,
    TuneProgress,
    Verdict,
    voltage_grid,
)
from hashbay.agent.tuning.tune_settings import TuneSettings
from hashbay.drivers.errors import ConfigError
from hashbay.tools.sim import physics
from hashbay.tools.sim.tune_target import PhysicsTarget

SETTINGS = TuneSettings()
CHIPS = 12  # four voltage domains of three: small enough to tune in a blink
TEMP_C = 65.0
SEEDS = (1, 2, 3)


async def tune(
    target: PhysicsTarget, settings: TuneSettings = SETTINGS, **options: Any
) -> BoardProfile:
    return await Autotuner(settings).run(target, **options)


def small_board(seed: int, **options: Any) -> PhysicsTarget:
    return PhysicsTarget.board(
        seed, chip_count=CHIPS, ticket_difficulty=SETTINGS.ticket_difficulty, **options
    )


def model_point(target: PhysicsTarget, board_v: float, freqs: tuple[float, ...]) -> Any:
    return physics.board_point(
        target.spec, target.silicon, freqs, board_v, TEMP_C, domains=target.domains
    )


def oracle(target: PhysicsTarget, settings: TuneSettings = SETTINGS) -> physics.OraclePoint:
    low, high = target.freq_range_mhz
    return physics.efficiency_oracle(
        target.spec,
        target.silicon,
        voltage_grid(settings, target.voltage_range_v),
        TEMP_C,
        settings.max_error,
        domains=target.domains,
        freq_min_mhz=low,
        freq_max_mhz=high,
    )


@pytest.mark.parametrize("seed", list(SEEDS))
async def test_every_tuned_point_is_within_the_envelope_and_the_error_budget(seed: int) -> None:
    target = small_board(seed)
    profile = await tune(target)
    grid = voltage_grid(SETTINGS, target.voltage_range_v)
    assert [p.board_v for p in profile.points] == grid
    low_v, high_v = target.voltage_range_v
    low_mhz, high_mhz = target.freq_range_mhz
    for point in profile.points:
        assert low_v <= point.board_v <= high_v
        assert all(low_mhz <= f <= high_mhz for f in point.freqs_mhz)
        assert point.weak_chips == ()
        truth = model_point(target, point.board_v, point.freqs_mhz)
        assert max(truth.error_rates) <= SETTINGS.max_error
        assert point.error_share < SETTINGS.max_error
        assert point.power_w == pytest.approx(truth.power_w, rel=0.02)
        assert point.hashrate_hs == pytest.approx(truth.good_hashrate_hs, rel=0.02)


@pytest.mark.parametrize("seed", [*SEEDS, 4])
async def test_tuned_board_reaches_95_percent_of_the_oracles_efficiency(seed: int) -> None:
    target = small_board(seed)
    profile = await tune(target)
    best = profile.best()
    assert best is not None
    tuned = model_point(target, best.board_v, best.freqs_mhz)
    assert tuned.hashes_per_j >= 0.95 * oracle(target).hashes_per_j
    assert best.j_per_th == pytest.approx(tuned.j_per_th, rel=0.02)


async def test_per_chip_clocks_follow_each_chips_silicon() -> None:
    target = small_board(5)
    best = (await tune(target)).best()
    assert best is not None
    chip_v = best.board_v / target.domains
    edges = [
        physics.max_freq_mhz(target.spec, s, chip_v, TEMP_C, SETTINGS.max_error)
        for s in target.silicon
    ]
    for freq, edge in zip(best.freqs_mhz, edges, strict=True):
        assert edge - 40.0 < freq < edge
    ranked = sorted(range(CHIPS), key=edges.__getitem__)
    slow_mhz = sum(best.freqs_mhz[i] for i in ranked[: CHIPS // 2])
    fast_mhz = sum(best.freqs_mhz[i] for i in ranked[CHIPS // 2 :])
    assert fast_mhz > slow_mhz  # the faster dies run faster: no common clock


async def test_a_power_cap_gets_the_most_efficient_point_under_it() -> None:
    profile = await tune(small_board(2))
    powers = sorted(p.power_w for p in profile.points)
    cap_w = (powers[3] + powers[4]) / 2
    capped = profile.best(power_cap_w=cap_w)
    assert capped is not None
    assert capped.power_w <= cap_w
    under = [p for p in profile.points if p.power_w <= cap_w]
    assert capped.hashes_per_j == max(p.hashes_per_j for p in under)
    fastest = profile.fastest(power_cap_w=cap_w)
    assert fastest is not None
    assert fastest.power_w <= cap_w
    assert fastest.hashrate_hs == max(p.hashrate_hs for p in under)
    assert profile.best(power_cap_w=powers[0] / 2) is None


async def test_tuning_under_a_cap_stops_at_the_first_voltage_beyond_it() -> None:
    uncapped = await tune(small_board(3))
    cap_w = sorted(p.power_w for p in uncapped.points)[2] * 1.01
    capped = await tune(small_board(3), power_cap_w=cap_w)
    assert len(capped.points) < len(uncapped.points)
    assert all(p.power_w <= cap_w for p in capped.points[:-1])
    assert capped.points[-1].power_w > cap_w
    best = capped.best(power_cap_w=cap_w)
    assert best is not None
    assert best.power_w <= cap_w


async def test_progress_and_duration_are_in_the_boards_own_clock() -> None:
    target = small_board(1)
    seen: list[TuneProgress] = []
    profile = await tune(target, progress=seen.append)
    count = len(voltage_grid(SETTINGS, target.voltage_range_v))
    assert {p.voltage_count for p in seen} == {count}
    indices = [p.voltage_index for p in seen]
    assert indices == sorted(indices)
    assert set(indices) == set(range(1, count + 1))
    assert all(0 <= p.chips_settled <= p.chip_count == CHIPS for p in seen)
    assert [p.phase for p in seen if p.phase != "search"][-2:] == ["measure", "done"]
    done = seen[-1]
    assert done.chips_settled == CHIPS
    assert done.elapsed_s == profile.duration_s == target.now_s()
    assert 600 < profile.duration_s < 4 * 3600  # simulated seconds: minutes, not days
    assert "tuning 1/8" in seen[0].describe()


async def test_a_chip_erring_even_at_the_lowest_clock_is_kept_there_and_named() -> None:
    dying = [0.0] * CHIPS
    dying[5] = 0.9  # its error floor alone is a quarter of its nonces
    target = small_board(4, degradation=dying)
    profile = await tune(target)
    low_mhz = target.freq_range_mhz[0]
    for point in profile.points:
        assert point.weak_chips == (5,)
        assert point.freqs_mhz[5] == low_mhz
        truth = model_point(target, point.board_v, point.freqs_mhz)
        healthy = [e for i, e in enumerate(truth.error_rates) if i != 5]
        assert max(healthy) <= SETTINGS.max_error


class SilentChipTarget(PhysicsTarget):
    """A chip that stopped answering: its counters never move."""

    def chip_counters(self) -> list[tuple[int, int]]:
        counters = super().chip_counters()
        counters[7] = (0, 0)
        return counters


async def test_a_silent_chip_is_left_at_the_lowest_clock_without_stalling_the_search() -> None:
    plain = small_board(6)
    target = SilentChipTarget(
        plain.spec,
        plain.silicon,
        seed=6,
        domains=plain.domains,
        voltage_range_v=plain.voltage_range_v,
        ticket_difficulty=SETTINGS.ticket_difficulty,
    )
    profile = await tune(target)
    assert all(p.weak_chips == (7,) for p in profile.points)
    assert all(p.freqs_mhz[7] == target.freq_range_mhz[0] for p in profile.points)
    assert profile.duration_s < len(profile.points) * SETTINGS.voltage_time_max_s / 2


class BlindMeterTarget(PhysicsTarget):
    """A DC-DC whose current reading fails at one voltage."""

    blind_v = 0.0

    async def board_power_w(self) -> float | None:
        reading = await super().board_power_w()
        return None if self.board_v == self.blind_v else reading


async def test_a_voltage_whose_power_cannot_be_read_is_left_out_and_said_so() -> None:
    plain = small_board(2)
    target = BlindMeterTarget(
        plain.spec,
        plain.silicon,
        seed=2,
        domains=plain.domains,
        voltage_range_v=plain.voltage_range_v,
        ticket_difficulty=SETTINGS.ticket_difficulty,
    )
    grid = voltage_grid(SETTINGS, target.voltage_range_v)
    target.blind_v = grid[3]
    seen: list[TuneProgress] = []
    profile = await tune(target, progress=seen.append)
    assert [p.board_v for p in profile.points] == grid[:3] + grid[4:]
    assert [p.board_v for p in seen if p.phase == "skipped"] == [grid[3]]


async def test_out_of_time_chips_fall_back_to_a_clock_verified_at_a_lower_voltage() -> None:
    hurried = replace(SETTINGS, voltage_time_max_s=60.0)
    target = small_board(7)
    profile = await tune(target, hurried)
    low_mhz, high_mhz = target.freq_range_mhz
    assert len(profile.points) == len(voltage_grid(hurried, target.voltage_range_v))
    for point in profile.points:
        assert all(low_mhz <= f <= high_mhz for f in point.freqs_mhz)
        truth = model_point(target, point.board_v, point.freqs_mhz)
        assert max(truth.error_rates) <= SETTINGS.max_error
    assert profile.points[0].weak_chips  # an hour's search does not fit in a minute


async def test_tuned_clocks_hold_on_a_board_that_heats_with_its_power() -> None:
    # A tenth of a board: a tenth of its heat capacity, and little air for ~65 °C.
    thermal = physics.BoardThermal(temp_c=25.0, heat_capacity_j_per_c=150.0)
    target = small_board(8, thermal=thermal, airflow=0.05)
    profile = await tune(target)
    assert target.board_temp_c > 50.0
    for point in profile.points:
        settled_c = thermal.steady_state_c(point.power_w, target.airflow, target.ambient_c)
        truth = physics.board_point(
            target.spec,
            target.silicon,
            point.freqs_mhz,
            point.board_v,
            settled_c,
            domains=target.domains,
        )
        assert max(truth.error_rates) <= SETTINGS.max_error


# -- the sequential test ----------------------------------------------------------------

VERIFY = Sprt.between(0.0025, 0.01, 0.05)


def test_a_flawless_chip_is_accepted_after_the_nonces_wald_predicts() -> None:
    needed = 0
    while VERIFY.verdict(needed, 0) is None:
        needed += 1
    assert VERIFY.verdict(needed, 0) is Verdict.CLEAN
    assert needed == pytest.approx(VERIFY.lower / VERIFY.per_good, abs=1)
    assert 300 < needed < 500  # the rule of three says ~300 for a 1 % bound


def test_a_chip_far_past_its_edge_is_rejected_within_a_few_nonces() -> None:
    assert VERIFY.verdict(2, 3) is Verdict.ERRING
    assert VERIFY.verdict(0, 0) is None


def test_an_undecided_test_ends_as_erring() -> None:
    errors = round(VERIFY.max_nonces * 0.005)  # between the hypotheses: never decides
    assert VERIFY.verdict(VERIFY.max_nonces - errors - 1, errors) is None
    assert VERIFY.verdict(VERIFY.max_nonces - errors, errors) is Verdict.ERRING


@given(st.integers(0, 5000), st.integers(0, 200))
def test_more_errors_never_make_a_chip_look_cleaner(good: int, errors: int) -> None:
    verdict = VERIFY.verdict(good, errors)
    worse = VERIFY.verdict(good, errors + 1)
    if verdict is Verdict.ERRING:
        assert worse is Verdict.ERRING
    if worse is Verdict.CLEAN:
        assert verdict is Verdict.CLEAN


def run_sprt(test: Sprt, p_error: float, rng: random.Random) -> Verdict:
    good = errors = 0
    while True:
        if rng.random() < p_error:
            errors += 1
        else:
            good += 1
        verdict = test.verdict(good, errors)
        if verdict is not None:
            return verdict


def test_wrong_verdicts_are_as_rare_as_the_risk_allows() -> None:
    rng = random.Random(11)
    runs = 400
    accepted_bad = sum(run_sprt(VERIFY, 0.01, rng) is Verdict.CLEAN for _ in range(runs))
    rejected_good = sum(run_sprt(VERIFY, 0.001, rng) is Verdict.ERRING for _ in range(runs))
    assert accepted_bad / runs < 0.08
    assert rejected_good / runs < 0.05


# -- settings and the voltage grid ------------------------------------------------------


def test_voltage_grid_spans_the_modules_range_both_ends_included() -> None:
    assert voltage_grid(replace(SETTINGS, voltage_steps=3), (12.0, 14.0)) == [12.0, 13.0, 14.0]
    stepped = replace(SETTINGS, voltage_step_v=0.75)
    assert voltage_grid(stepped, (12.0, 14.0)) == [12.0, 12.75, 13.5]
    with pytest.raises(ValueError, match="ordered"):
        voltage_grid(SETTINGS, (14.0, 12.0))


def test_autotune_section_is_read_from_the_config_file() -> None:
    raw = tomllib.loads(default_config_path().read_text())
    raw["autotune"] = {"max_error": 0.005, "voltage_steps": 5, "ticket_difficulty": 8}
    config = parse_config(raw, "test.toml")
    assert config.autotune.max_error == 0.005
    assert config.autotune.voltage_steps == 5


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"ticket_difficulty": 24}, "power of two"),
        ({"fine_step_mhz": 30, "coarse_step_mhz": 10}, "must not exceed"),
        ({"max_error": 0.5}, "autotune.max_error: must be a number from 0.0005 to 0.2"),
    ],
)
def test_bad_autotune_settings_are_refused_with_the_reason(
    table: dict[str, Any], words: str
) -> None:
    raw = tomllib.loads(default_config_path().read_text())
    raw["autotune"] = table
    with pytest.raises(ConfigError, match=words):
        parse_config(raw, "test.toml")
