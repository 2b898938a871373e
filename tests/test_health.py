"""The module health model: what lowers the score, what faults a module, and what does not."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashbay.agent.core.settings import parse_table
from hashbay.agent.core.status import (
    ChipSample,
    ErrorStep,
    Health,
    HealthLevel,
    ModuleSample,
    Prediction,
)
from hashbay.agent.modules.health import HealthModel
from hashbay.agent.modules.health_counts import ChipCounters
from hashbay.agent.modules.health_settings import HealthSettings
from hashbay.drivers.errors import ConfigError

HASHES_PER_NONCE = 256 * 2**32
CHIPS = 126
BOARD_V = 13.44


@dataclass
class Board:
    """Deterministic counters: every live chip reports `nonces_per_s` each second and errs
    on its share in `error_rates`; whatever the test sets is what the next poll shows."""

    chips: int = CHIPS
    nonces_per_s: float = 1.0
    speed: float = 1.0  # share of the expected nonces the chips really find
    at_s: float = 0.0
    error_rates: dict[int, float] = field(default_factory=dict)
    dead: set[int] = field(default_factory=set)
    temps_c: tuple[float | None, ...] = (62.0, 69.0, 65.0, 67.0)
    board_v: float | None = BOARD_V
    board_a: float | None = 96.0
    dcdc_temp_c: float | None = 80.0
    rail_fault: str | None = None
    fans_stalled: int = 0
    missing: tuple[int, ...] = ()
    hashing_since_s: float | None = None  # set when the chain (re)started hashing

    def __post_init__(self) -> None:
        self.reported = [0.0] * self.chips
        self.errored = [0.0] * self.chips
        self.timeouts = [0] * self.chips

    def tick(self, seconds: float = 1.0) -> ModuleSample:
        self.at_s += seconds
        for chip in range(self.chips):
            if chip in self.dead:
                if int(self.at_s) % 10 == 0:
                    self.timeouts[chip] += 1
                continue
            found = self.nonces_per_s * self.speed * seconds
            self.reported[chip] += found
            self.errored[chip] += found * self.error_rates.get(chip, 0.0)
        return self.sample()

    def sample(self) -> ModuleSample:
        chips = []
        for chip in range(self.chips):
            errors = int(self.errored[chip])
            good = int(self.reported[chip]) - errors
            chips.append(
                ChipSample(good, errors, self.timeouts[chip], good * HASHES_PER_NONCE, 490.0)
            )
        return ModuleSample(
            at_s=self.at_s,
            chips=tuple(chips),
            expected_hs=self.chips * self.nonces_per_s * HASHES_PER_NONCE,
            temps_c=self.temps_c,
            board_v=self.board_v,
            board_a=self.board_a,
            dcdc_temp_c=self.dcdc_temp_c,
            rail_fault=self.rail_fault,
            fans_stalled=self.fans_stalled,
            missing_chips=self.missing,
            hashing_for_s=(
                None if self.hashing_since_s is None else self.at_s - self.hashing_since_s
            ),
        )

    def reenumerate(self) -> None:
        self.reported = [0.0] * self.chips
        self.errored = [0.0] * self.chips
        self.timeouts = [0] * self.chips

    def poll_misses(self, chips: tuple[int, ...]) -> ModuleSample:
        """A chip poll that these chips did not answer (each gets a timeout, as the driver
        counts them); the slot repeats the list until the next poll."""
        self.missing = chips
        for chip in chips:
            self.timeouts[chip] += 1
        return self.tick()

    def sleep(self, seconds: float) -> None:
        """Powered down (curtailed): no hashing; the chain is enumerated again on waking."""
        self.at_s += seconds
        self.reenumerate()
        self.hashing_since_s = self.at_s


def run(model: HealthModel, board: Board, seconds: int) -> Health:
    health = model.update(board.sample())
    for _ in range(seconds):
        health = model.update(board.tick())
    return health


def model(chips: int = CHIPS, **overrides: float) -> HealthModel:
    return HealthModel(HealthSettings(**overrides), chips, board_v_target=BOARD_V)  # type: ignore[arg-type]


def codes(health: Health) -> list[str]:
    return [reason.code for reason in health.reasons]


def reason(health: Health, code: str) -> str:
    return next(r.text for r in health.reasons if r.code == code)


def test_a_sound_board_scores_100_and_is_ok() -> None:
    health = run(model(), Board(), 700)
    assert health.score == 100.0
    assert health.level is HealthLevel.OK
    assert health.reasons == ()
    assert health.chips_answering == CHIPS
    assert health.hashrate_hs == pytest.approx(health.expected_hs, rel=0.01)
    assert health.hw_error_rate == 0.0


def test_counters_restarting_on_reenumeration_keep_the_window_right() -> None:
    health_model, board = model(), Board()
    before = run(health_model, board, 700)
    board.reenumerate()
    after = run(health_model, board, 120)
    assert after.hashrate_hs == pytest.approx(before.hashrate_hs, rel=0.02)
    assert after.level is HealthLevel.OK and after.reasons == ()
    assert health_model._counters.resets == 1


def test_counter_restart_is_carried_per_chip() -> None:
    counters = ChipCounters(2)
    counters.absorb([ChipSample(100, 5, 1, 100.0, 490.0), ChipSample(50, 0, 0, 50.0, 490.0)])
    counters.absorb([ChipSample(3, 1, 0, 3.0, 490.0), ChipSample(60, 0, 0, 60.0, 490.0)])
    assert counters.nonces == [103, 60]
    assert counters.errors == [6, 0]
    assert counters.timeouts == [1, 0]
    assert counters.work == [103.0, 60.0]


def test_a_dead_chip_lowers_the_score_with_a_reason_naming_it() -> None:
    health_model, board = model(), Board()
    run(health_model, board, 300)
    board.dead.add(17)
    health = run(health_model, board, 120)
    assert health.chips_answering == CHIPS - 1
    assert "chips_missing" in codes(health)
    assert "17" in reason(health, "chips_missing")
    assert 90 < health.score < 100
    assert health.level is HealthLevel.OK  # one chip of 126 is no reason to pull a board


def test_chips_the_driver_misses_in_two_polls_running_count_as_missing() -> None:
    health_model, board = model(), Board()
    run(health_model, board, 60)
    first = health_model.update(board.poll_misses((3, 4)))
    assert first.chips_answering == CHIPS and first.reasons == ()  # one poll: a late reply
    run(health_model, board, 9)
    health = health_model.update(board.poll_misses((3, 4)))
    assert health.chips_answering == CHIPS - 2
    assert "3, 4" in reason(health, "chips_missing")


def test_a_tenth_of_the_chain_missing_is_a_fault() -> None:
    health_model, board = model(), Board()
    run(health_model, board, 60)
    lost = tuple(range(100, 113))
    health_model.update(board.poll_misses(lost))
    health = health_model.update(board.poll_misses(lost))
    assert health.level is HealthLevel.FAULT
    assert codes(health)[0] == "chips_lost"
    assert health.score == 0.0


def test_one_late_poll_that_no_chip_answered_does_not_fault_the_module() -> None:
    health_model, board = model(chips=42), Board(chips=42)
    run(health_model, board, 60)
    late = health_model.update(board.poll_misses(tuple(range(42))))
    assert late.level is HealthLevel.OK
    assert late.chips_answering == 42
    assert run(health_model, board, 9).level is HealthLevel.OK  # the slot repeats the list
    board.missing = ()  # the next poll is answered
    assert run(health_model, board, 30).reasons == ()


def test_a_module_waking_from_sleep_is_not_short_of_hashrate() -> None:
    health_model, board = model(), Board()
    run(health_model, board, 700)
    board.sleep(15 * 60)  # curtailed for a quarter of an hour, then up again
    for seconds in (1, 5, 30, 300, 700):
        health = run(health_model, board, seconds)
        assert "hashrate_low" not in codes(health), health.reasons
        assert health.level is HealthLevel.OK
    assert health.hashrate_hs == pytest.approx(health.expected_hs, rel=0.02)


def test_hashrate_is_judged_over_time_spent_hashing_only() -> None:
    health_model, board = model(), Board(speed=0.8)
    run(health_model, board, 700)
    board.sleep(3600)
    health = run(health_model, board, 60)
    text = reason(health, "hashrate_low")
    assert "20 % below expected" in text  # the true shortfall, not diluted by the sleep
    assert "over the last 10 min" in text


def test_a_predicted_failure_costs_points_and_makes_the_module_degraded() -> None:
    health_model, board = model(), Board()
    run(health_model, board, 60)
    warning = Prediction(
        degrading=True,
        time_to_failure_s=3 * 3600,
        trend="error rate of chip 17 (now 2.1 %) doubling every 40 min; failure in ~3 h",
        chip=17,
    )
    health = health_model.update(board.tick(), warning)
    assert codes(health) == ["degrading"]
    assert "chip 17" in reason(health, "degrading")
    assert health.score == 100.0 - HealthSettings().degrading_penalty
    assert health.level is HealthLevel.DEGRADED


def test_a_stepped_chip_is_a_reason_with_its_rates_before_and_after() -> None:
    health_model, board = model(), Board()
    run(health_model, board, 60)
    stepped = Prediction(
        False, None, "no chip's error rate is rising", steps=(ErrorStep(40, 0.001, 0.03),)
    )
    health = health_model.update(board.tick(), stepped)
    assert codes(health) == ["chip_error_step"]
    assert "40 (0.1 % → 3 %)" in reason(health, "chip_error_step")
    assert "not aging" in reason(health, "chip_error_step")
    assert health.level is HealthLevel.OK


def test_hashrate_below_expected_is_a_reason_with_the_numbers() -> None:
    health_model, board = model(), Board(speed=0.8)
    health = run(health_model, board, 700)
    assert codes(health) == ["hashrate_low"]
    text = reason(health, "hashrate_low")
    assert "20 % below expected" in text
    assert "TH/s" in text
    assert health.score < 100


def test_a_small_shortfall_within_the_noise_costs_nothing() -> None:
    health = run(model(), Board(speed=0.97), 700)
    assert health.reasons == ()


def test_hot_board_warns_then_faults_at_the_cutoff() -> None:
    health_model, board = model(), Board()
    run(health_model, board, 10)
    board.temps_c = (80.0, 88.0, 84.0, 86.0)
    warm = health_model.update(board.tick())
    assert codes(warm) == ["temp_high"]
    assert "88.0 °C (sensor 1)" in reason(warm, "temp_high")
    assert warm.level is HealthLevel.OK
    board.temps_c = (90.0, 96.5, 93.0, 94.0)
    hot = health_model.update(board.tick())
    assert hot.level is HealthLevel.FAULT
    assert codes(hot)[0] == "overheat"


def test_an_unreadable_sensor_is_a_reason_after_a_grace_period() -> None:
    health_model, board = model(), Board()
    run(health_model, board, 10)
    board.temps_c = (62.0, None, 65.0, 67.0)
    assert run(health_model, board, 5).reasons == ()  # a missed read or two is bus noise
    health = run(health_model, board, 10)
    assert codes(health) == ["sensor_unreadable"]
    assert "sensor 1 unreadable" in reason(health, "sensor_unreadable")


def test_no_readable_sensor_for_half_a_minute_is_a_fault() -> None:
    health_model, board = model(), Board()
    run(health_model, board, 10)
    board.temps_c = (None, None, None, None)
    assert run(health_model, board, 20).level is not HealthLevel.FAULT
    health = run(health_model, board, 15)
    assert health.level is HealthLevel.FAULT
    assert codes(health)[0] == "temps_unknown"


def test_a_sensor_frozen_while_the_others_warm_up_is_stuck() -> None:
    health_model, board = model(), Board()
    run(health_model, board, 10)
    for step in range(200):
        warming = min(6.0, step * 0.05)
        board.temps_c = (62.0 + warming, 69.0, 65.0 + warming, 67.0 + warming)
        health = health_model.update(board.tick())
    assert codes(health) == ["sensor_stuck"]
    assert "sensor 1 has read exactly 69.00 °C" in reason(health, "sensor_stuck")


def test_a_sole_sensor_frozen_while_power_changes_is_stuck() -> None:
    health_model, board = model(), Board(temps_c=(66.5,))
    run(health_model, board, 150)
    assert health_model.update(board.tick()).reasons == ()  # steady board, steady reading
    board.board_a = 80.0  # power down 17 %: a live sensor would cool by several degrees
    health = run(health_model, board, 59)
    assert "sensor_stuck" not in codes(health)
    health = run(health_model, board, 2)
    assert codes(health) == ["sensor_stuck"]


def test_a_latched_rail_fault_is_a_fault_in_its_own_words() -> None:
    health_model, board = model(), Board()
    run(health_model, board, 10)
    board.rail_fault = "DC-DC over-current"
    health = health_model.update(board.tick())
    assert health.level is HealthLevel.FAULT
    assert reason(health, "rail_fault") == "power rail fault latched: DC-DC over-current"


def test_rail_voltage_off_its_target_is_a_reason() -> None:
    health_model, board = model(), Board()
    run(health_model, board, 10)
    board.board_v = 12.5
    health = run(health_model, board, 5)
    assert codes(health) == ["rail_voltage"]
    assert "12.50 V is 7 % below its 13.44 V target" in reason(health, "rail_voltage")
    health_model.set_board_v_target(12.5)  # the autotuner asked for it
    assert run(health_model, board, 5).reasons == ()


def test_stalled_fans_are_a_reason() -> None:
    health_model, board = model(), Board()
    run(health_model, board, 10)
    board.fans_stalled = 2
    health = health_model.update(board.tick())
    assert reason(health, "fans_stalled") == "2 fans stalled: the board loses airflow"
    assert health.score == 70.0


def test_an_erring_chip_is_named_and_a_failed_one_faults_the_module() -> None:
    health_model, board = model(), Board(error_rates={40: 0.10})
    health = run(health_model, board, 300)
    assert codes(health) == ["chip_errors"]
    assert "40 (10 % of 300)" in reason(health, "chip_errors")
    worst_chip, worst_rate = health.worst_chips[0]
    assert worst_chip == 40 and worst_rate == pytest.approx(0.10, abs=0.005)
    board.error_rates[41] = 0.5
    health = run(health_model, board, 200)
    assert health.level is HealthLevel.OK  # 50 % for a third of the window: 17 % so far
    health = run(health_model, board, 200)
    assert health.level is HealthLevel.FAULT
    assert codes(health)[0] == "chip_failed"
    assert reason(health, "chip_failed").startswith("chip 41 errs on")


def test_everything_wrong_at_once_floors_the_score_and_sorts_reasons_by_penalty() -> None:
    health_model = model()
    board = Board(speed=0.5, error_rates={c: 0.2 for c in range(0, 126, 3)})
    run(health_model, board, 300)
    board.temps_c = (None, 90.0, 91.0, 62.0)
    board.board_v = 11.0
    board.fans_stalled = 3
    board.dead = {5, 6}
    board.dcdc_temp_c = 120.0
    health = run(health_model, board, 100)
    assert health.score == 0.0
    assert health.level is HealthLevel.DEGRADED
    penalties = [r.penalty for r in health.reasons]
    assert penalties == sorted(penalties, reverse=True)
    assert len(health.reasons) >= 8


def test_degraded_recovers_only_past_the_hysteresis_gap() -> None:
    health_model, board = model(), Board()
    run(health_model, board, 10)
    board.fans_stalled = 2
    board.temps_c = (62.0, 86.0, 65.0, 67.0)  # 15 + 15 + 3 points
    assert health_model.update(board.tick()).level is HealthLevel.DEGRADED
    board.temps_c = (62.0, 86.0 - 2 / 3, 65.0, 67.0)  # score 72: above 70, below 75
    assert health_model.update(board.tick()).level is HealthLevel.DEGRADED
    board.fans_stalled = 1
    assert health_model.update(board.tick()).level is HealthLevel.OK


def test_settings_load_from_a_config_table_and_refuse_contradictions() -> None:
    loaded = parse_table(HealthSettings, {"temp_warn_c": 80, "window_s": 300}, "health")
    assert loaded.temp_warn_c == 80.0 and loaded.window_s == 300.0
    with pytest.raises(ConfigError, match=r"health\.window_slices"):
        parse_table(HealthSettings, {"window_slices": 1}, "health")
    with pytest.raises(ConfigError, match="temp_warn_c"):
        HealthSettings(temp_warn_c=100.0, temp_fault_c=95.0)


def test_an_update_costs_well_under_a_millisecond_for_126_chips() -> None:
    board = Board()
    samples = [board.tick() for _ in range(600)]
    health_model = model()
    started = time.perf_counter()
    for sample in samples:
        health_model.update(sample)
    per_update_s = (time.perf_counter() - started) / len(samples)
    assert per_update_s < 1e-3  # typically ~50 µs; 3 modules at 1 Hz stay far below 1 %


chip_steps = st.lists(
    st.tuples(
        st.integers(0, 50),  # new good nonces
        st.integers(0, 50),  # new errors
        st.integers(0, 3),  # new timeouts
        st.booleans(),  # counters restart (re-enumeration) before this step
    ),
    min_size=4,
    max_size=4,
)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.floats(0.0, 120.0),
            chip_steps,
            st.lists(st.one_of(st.none(), st.floats(-40.0, 150.0)), min_size=0, max_size=3),
            st.one_of(st.none(), st.floats(0.0, 20.0)),
            st.integers(0, 4),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_any_counters_give_a_bounded_score_and_sane_rates(
    steps: list[
        tuple[
            float,
            list[tuple[int, int, int, bool]],
            list[float | None],
            float | None,
            int,
        ]
    ],
) -> None:
    health_model = HealthModel(HealthSettings(), 4, board_v_target=13.0)
    totals = [[0, 0, 0] for _ in range(4)]
    at_s = 0.0
    for dt_s, chips, temps, board_v, fans in steps:
        at_s += dt_s
        for total, (good, bad, timeouts, restart) in zip(totals, chips, strict=True):
            if restart:
                total[:] = [0, 0, 0]
            total[0] += good
            total[1] += bad
            total[2] += timeouts
        sample = ModuleSample(
            at_s=at_s,
            chips=tuple(ChipSample(n, e, t, n * 1e9, 490.0) for n, e, t in totals),
            expected_hs=4e9,
            temps_c=tuple(temps),
            board_v=board_v,
            board_a=50.0,
            dcdc_temp_c=None,
            rail_fault=None,
            fans_stalled=fans,
        )
        health = health_model.update(sample)
        assert 0.0 <= health.score <= 100.0
        assert health.hashrate_hs >= 0.0
        assert 0.0 <= health.hw_error_rate <= 1.0
        assert 0 <= health.chips_answering <= 4
        assert all(0.0 <= rate <= 1.0 for _, rate in health.worst_chips)
        assert all(r.penalty >= 0 for r in health.reasons)


def test_noisy_bus_devices_cost_points_each_named_up_to_the_cap() -> None:
    health_model, board = model(), Board()
    run(health_model, board, 10)
    noisy = ("DC-DC (0x20): 31% of its transactions failed", "sensor 0 (0x48): 9% failed")
    health = health_model.update(replace(board.tick(), bus_noise=noisy))
    assert [r.text for r in health.reasons] == [f"noisy bus device: {t}" for t in noisy]
    assert health.score == 100 - 2 * HealthSettings().bus_penalty_each
    capped = health_model.update(replace(board.tick(), bus_noise=noisy * 2))
    assert capped.score == 100 - HealthSettings().bus_penalty_max
