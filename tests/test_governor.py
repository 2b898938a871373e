"""The power governor: targets held, curtailment, profit, quiet limiting; the controls file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hashbay.agent.core.schedule import parse_priced_window, parse_window
from hashbay.agent.core.settings import parse_table
from hashbay.agent.interfaces.commands import CommandError, parse_command_mapping
from hashbay.agent.power.controls import Controls, ControlStore
from hashbay.agent.power.governor import (
    BOARD_TO_INPUT,
    CurvePoint,
    Decision,
    Governor,
    Inputs,
    Mode,
)
from hashbay.agent.power.operating_point import OperatingPoint, PointPlanner
from hashbay.agent.power.power_settings import EconomicsSettings, PowerSettings
from hashbay.drivers.envelope import BoardLimits, FanLimits, SafetyEnvelope
from hashbay.drivers.errors import ConfigError

BOOT = 3 * 86_400.0  # a monotonic clock three days after boot

# A board whose efficiency peaks in the middle: 1000 W full, 3 points.
CURVE = [CurvePoint(400, 20e12), CurvePoint(700, 40e12), CurvePoint(1000, 52e12)]


def inputs(**changes: object) -> Inputs:
    base: dict[str, object] = {
        "now_s": 0.0,
        "minute_of_day": 12 * 60,
        "input_w": None,
        "curves": {0: CURVE, 1: CURVE},
        "controls": Controls(),
    }
    base.update(changes)
    return Inputs(**base)  # type: ignore[arg-type]


def test_without_limits_every_board_runs_free() -> None:
    decision = Governor(PowerSettings(), EconomicsSettings()).step(inputs())
    assert decision.mode is Mode.RUN
    assert decision.budgets_w == {0: None, 1: None}


def test_power_target_converges_on_a_plant_and_never_jumps() -> None:
    """PSU input = boards / efficiency + 60 W of fans: the integral finds the budget."""
    settings = PowerSettings(gain=0.4, ramp_w_per_s=200)
    governor = Governor(settings, EconomicsSettings())
    controls = Controls(power_target_w=1500)
    boards_w = 2000.0 * BOARD_TO_INPUT  # start far off
    previous_total: float | None = None
    for second in range(120):
        input_w = boards_w / 0.87 + 60  # the real conversion differs from the guess
        decision = governor.step(inputs(now_s=float(second), input_w=input_w, controls=controls))
        total = sum(b or 0.0 for b in decision.budgets_w.values())
        if previous_total is not None:
            assert abs(total - previous_total) <= settings.ramp_w_per_s + 1e-6
        previous_total = total
        boards_w = total
    assert boards_w / 0.87 + 60 == pytest.approx(1500, abs=15)
    assert "power target 1500 W" in decision.reason


def test_power_target_budget_stays_within_what_boards_can_do() -> None:
    governor = Governor(PowerSettings(), EconomicsSettings())
    for second in range(50):
        decision = governor.step(
            inputs(now_s=float(second), input_w=5000.0, controls=Controls(power_target_w=100))
        )
    assert decision.budgets_w == {0: 400, 1: 400}  # the lowest points: wound down, no lower


def test_curtail_command_beats_everything_and_resume_runs_again() -> None:
    governor = Governor(PowerSettings(target_w=1500), EconomicsSettings(profit=True))
    asleep = governor.step(inputs(controls=Controls(curtail="sleep")))
    assert asleep.mode is Mode.SLEEP and asleep.budgets_w == {}
    assert governor.step(inputs(controls=Controls(curtail="min"))).mode is Mode.MIN
    assert governor.step(inputs(now_s=1.0, input_w=1400.0)).mode is Mode.RUN


def test_scheduled_curtailment_follows_local_time_across_midnight() -> None:
    economics = EconomicsSettings(curtail_schedule=("23:30-00:30",), curtail_mode="min")
    governor = Governor(PowerSettings(), economics)
    assert governor.step(inputs(minute_of_day=23 * 60 + 45)).mode is Mode.MIN
    assert governor.step(inputs(minute_of_day=10)).mode is Mode.MIN
    assert governor.step(inputs(minute_of_day=31)).mode is Mode.RUN


def test_no_pool_idles_at_minimum_power() -> None:
    decision = Governor(PowerSettings(), EconomicsSettings()).step(inputs(work_available=False))
    assert decision.mode is Mode.MIN
    assert "no pool" in decision.reason


def test_profit_mode_picks_the_best_earning_point_per_board() -> None:
    # At 0.05/kWh and 0.05/TH/day: 400 W earns 1.0 - 0.53 = 0.47, 700 W 2.0 - 0.93 = 1.07,
    # 1000 W 2.6 - 1.33 = 1.27 a day: the top point wins.
    economics = EconomicsSettings(profit=True, electricity_per_kwh=0.05, hashprice_per_th_day=0.05)
    decision = Governor(PowerSettings(), economics).step(inputs())
    assert decision.budgets_w == {0: 1000, 1: 1000}
    # Dearer power: 700 W is the sweet spot (2.0 - 1.87 = 0.13 vs 2.6 - 2.67 < 0).
    dear = Governor(PowerSettings(), economics).step(
        inputs(controls=Controls(electricity_per_kwh=0.1))
    )
    assert dear.budgets_w == {0: 700, 1: 700}
    assert dear.numbers["profit_per_day"] == pytest.approx(
        2 * (2.0 - 700 / 0.9 * 24 / 1000 * 0.1), abs=0.01
    )


def test_profit_mode_stops_hashing_when_nothing_earns_and_waits_for_a_hashprice() -> None:
    economics = EconomicsSettings(
        profit=True, hashprice_per_th_day=0.05, tariff=("17:00-21:00=0.5",)
    )
    governor = Governor(PowerSettings(), economics)
    peak = governor.step(inputs(minute_of_day=18 * 60))
    assert peak.mode is Mode.SLEEP
    assert "unprofitable" in peak.reason and peak.numbers["price_per_kwh"] == 0.5
    off_peak = governor.step(inputs(minute_of_day=22 * 60))  # flat price 0: every point earns
    assert off_peak.mode is Mode.RUN and off_peak.budgets_w == {0: 1000, 1: 1000}
    unpriced = Governor(PowerSettings(), EconomicsSettings(profit=True)).step(inputs())
    assert unpriced.mode is Mode.RUN and "no hashprice" in unpriced.reason


def test_quiet_scale_caps_each_board_below_its_full_power() -> None:
    decision = Governor(PowerSettings(), EconomicsSettings()).step(inputs(quiet_scale=0.6))
    assert decision.budgets_w == {0: pytest.approx(600), 1: pytest.approx(600)}
    assert "quiet mode" in decision.reason


@given(
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 1439),
)
def test_a_window_and_its_complement_cover_the_day_once(
    h1: int, m1: int, h2: int, m2: int, minute: int
) -> None:
    start, end = f"{h1:02d}:{m1:02d}", f"{h2:02d}:{m2:02d}"
    if start == end:
        assert parse_window(f"{start}-{end}").contains(minute)
        return
    inside = parse_window(f"{start}-{end}").contains(minute)
    outside = parse_window(f"{end}-{start}").contains(minute)
    assert inside != outside


@pytest.mark.parametrize("text", ["24:00-01:00", "10:60-11:00", "1000-1100"])
def test_bad_windows_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match=r"time window"):
        parse_window(text)


def test_bad_tariffs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"is not a price"):
        parse_priced_window("10:00-11:00=x")


def test_controls_survive_a_restart_and_hostile_files_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "controls.json"
    store = ControlStore(path)
    store.update(curtail="sleep", power_target_w=2500.0)
    assert ControlStore(path).current == Controls(power_target_w=2500.0, curtail="sleep")
    with pytest.raises(ValueError, match="curtail"):
        store.update(curtail="nap")
    assert ControlStore(path).current.curtail == "sleep"  # the refused change wrote nothing
    path.write_text(json.dumps({"schema": 1, "curtail": "nap", "fan_override": 7, "profit": True}))
    assert ControlStore(path).current == Controls(profit=True)
    path.write_text("{not json")
    assert ControlStore(path).current == Controls()


LIMITS = BoardLimits(
    vout_min_v=12.0, vout_max_v=15.0, freq_min_mhz=100, freq_max_mhz=600, power_max_w=2000
)


def test_untuned_planner_scales_the_clock_to_the_budget_and_learns_the_power() -> None:
    planner = PointPlanner(
        LIMITS, chip_count=4, nominal_v=13.2, nominal_freq_mhz=500, hashes_per_mhz=1e9
    )
    full = planner.point_for(Mode.RUN, None)
    assert full == OperatingPoint(13.2, (500.0,) * 4, "nominal")
    for _ in range(40):
        planner.learn(1000.0, full)  # the board really draws 1000 W at 500 MHz
    half = planner.point_for(Mode.RUN, 575.0)  # 15 % static + 85 % of f/500
    assert half.mean_freq_mhz == pytest.approx(250, rel=0.02)
    assert planner.point_for(Mode.RUN, 1.0).freqs_mhz == (100.0,) * 4  # never below the floor
    assert planner.point_for(Mode.MIN, None).freqs_mhz == (100.0,) * 4
    throttled = planner.point_for(Mode.RUN, None, throttle=0.5)
    assert throttled.freqs_mhz == (250.0,) * 4 and "throttled to 50%" in throttled.why


def test_a_board_drawing_more_than_its_cap_is_planned_down_to_the_cap() -> None:
    envelope = SafetyEnvelope(FanLimits(0.2, 1.0), LIMITS, psu_power_max_w=4500)
    envelope.admit_board(0, dataclasses.replace(LIMITS, power_max_w=1200))
    planner = PointPlanner(
        envelope.board(0), chip_count=4, nominal_v=13.2, nominal_freq_mhz=500, hashes_per_mhz=1e9
    )
    nominal = planner.point_for(Mode.RUN, envelope.power_budget(0, None))
    assert nominal.freqs_mhz == (500.0,) * 4  # drawing what it declared: full clock
    for _ in range(60):
        planner.learn(1500.0, nominal)  # but it really draws 1500 W there
    capped = planner.point_for(Mode.RUN, envelope.power_budget(0, None))
    assert planner.power_w(capped) == pytest.approx(1200, rel=0.02)  # 1500 W -> 1200 W
    assert planner.point_for(Mode.RUN, envelope.power_budget(0, 5000)) == capped


# -- the power target's controller, step by step --------------------------------------------

WIDE = [CurvePoint(200, 10e12), CurvePoint(1000, 50e12), CurvePoint(2000, 80e12)]


def total_w(decision: Decision) -> float:
    return sum(b or 0.0 for b in decision.budgets_w.values())


def test_a_power_target_starts_from_what_the_boards_may_draw_after_losses() -> None:
    governor = Governor(PowerSettings(), EconomicsSettings())
    first = governor.step(inputs(curves={0: WIDE, 1: WIDE}, controls=Controls(power_target_w=2000)))
    assert total_w(first) == pytest.approx(2000 * 0.9)  # 1800 W at the boards: 2000 W in
    assert first.budgets_w == {0: pytest.approx(900), 1: pytest.approx(900)}
    assert first.limits == ("target",) and first.numbers["target_w"] == 2000


def test_the_integrator_corrects_a_share_of_the_error_per_second_within_the_ramp() -> None:
    settings = PowerSettings(gain=0.25, ramp_w_per_s=100)
    governor = Governor(settings, EconomicsSettings())
    target = Controls(power_target_w=2000)
    curves = {0: WIDE, 1: WIDE}
    governor.step(inputs(now_s=BOOT, curves=curves, controls=target))  # 1800 W
    # 100 W short at the input: 90 W at the boards, a quarter of it in one second.
    small = governor.step(inputs(now_s=BOOT + 1, input_w=1900.0, curves=curves, controls=target))
    assert total_w(small) == pytest.approx(1800 + 0.25 * 90)
    # 1000 W over: the correction is ramp-limited to 100 W per second, downwards too.
    big = governor.step(inputs(now_s=BOOT + 3, input_w=3000.0, curves=curves, controls=target))
    assert total_w(big) == pytest.approx(1822.5 - 200)


def test_a_missing_psu_reading_holds_the_budget_where_it_is() -> None:
    governor = Governor(PowerSettings(), EconomicsSettings())
    target = Controls(power_target_w=1500)
    governor.step(inputs(now_s=BOOT, input_w=1700.0, controls=target))
    held = governor.step(inputs(now_s=BOOT + 1, input_w=1800.0, controls=target))
    for second in range(2, 6):
        blind = governor.step(inputs(now_s=BOOT + second, input_w=None, controls=target))
        assert total_w(blind) == pytest.approx(total_w(held))
    assert "measured unreadable" in blind.reason
    assert blind.numbers["input_w"] is None
    moved = governor.step(inputs(now_s=BOOT + 6, input_w=1800.0, controls=target))
    assert total_w(moved) < total_w(held)


def test_a_step_at_the_same_instant_changes_nothing() -> None:
    governor = Governor(PowerSettings(), EconomicsSettings())
    target = Controls(power_target_w=1500)
    first = governor.step(inputs(now_s=BOOT, controls=target))
    again = governor.step(inputs(now_s=BOOT, input_w=400.0, controls=target))
    earlier = governor.step(inputs(now_s=BOOT - 5, input_w=400.0, controls=target))
    assert total_w(first) == total_w(again) == total_w(earlier)


def test_dropping_the_target_lets_the_boards_free_and_a_new_one_starts_afresh() -> None:
    governor = Governor(PowerSettings(target_w=1200), EconomicsSettings())
    governor.step(inputs(now_s=BOOT, input_w=2000.0))
    wound = governor.step(inputs(now_s=BOOT + 10, input_w=2000.0))
    assert total_w(wound) < 1200 * 0.9
    free = governor.step(inputs(now_s=BOOT + 11, controls=Controls(power_target_w=0)))
    assert free.budgets_w == {0: None, 1: None} and free.limits == ()
    fresh = governor.step(inputs(now_s=BOOT + 12))
    assert total_w(fresh) == pytest.approx(1200 * 0.9)


def test_a_command_overrides_the_configured_target() -> None:
    governor = Governor(PowerSettings(target_w=1200), EconomicsSettings())
    assert governor.target_w(Controls()) == 1200
    assert governor.target_w(Controls(power_target_w=1500)) == 1500
    assert Governor(PowerSettings(), EconomicsSettings()).target_w(Controls()) is None


def test_the_envelope_holds_the_target_within_what_the_psu_may_deliver() -> None:
    envelope = SafetyEnvelope(FanLimits(0.2, 1.0), LIMITS, psu_power_max_w=4500)
    governor = Governor(PowerSettings(target_w=1200), EconomicsSettings(), envelope)
    assert governor.target_w(Controls()) == 1200
    assert governor.target_w(Controls(power_target_w=90_000)) == 4500


def test_the_controls_take_the_same_values_as_the_commands_that_set_them(
    tmp_path: Path,
) -> None:
    store = ControlStore(tmp_path / "controls.json")
    for refused in ({"power_target_w": 50.0}, {"fan_override": 1.5}, {"quiet": "loud"}):
        with pytest.raises(ValueError, match="cannot be"):
            store.update(**refused)
        command, arg = {
            "power_target_w": ("power_target", "watts"),
            "fan_override": ("fan_override", "duty"),
            "quiet": ("quiet", "mode"),
        }[next(iter(refused))]
        with pytest.raises(CommandError):
            parse_command_mapping({"command": command, arg: next(iter(refused.values()))}, slots=1)
    assert store.update(power_target_w=100.0).power_target_w == 100.0  # the command's minimum


def test_boards_that_can_draw_nothing_get_no_share_of_a_target() -> None:
    idle = [CurvePoint(0, 0)]
    decision = Governor(PowerSettings(), EconomicsSettings()).step(
        inputs(curves={0: idle, 1: idle}, controls=Controls(power_target_w=1000))
    )
    assert decision.budgets_w == {0: 0.0, 1: 0.0}


def test_a_target_is_shared_by_what_each_board_can_draw() -> None:
    decision = Governor(PowerSettings(), EconomicsSettings()).step(
        inputs(curves={0: CURVE, 1: WIDE}, controls=Controls(power_target_w=2000))
    )
    # 1800 W at the boards, split 1000 : 2000.
    assert decision.budgets_w == {0: pytest.approx(600), 1: pytest.approx(1200)}


def test_the_smallest_ask_wins_when_quiet_mode_and_a_target_both_limit() -> None:
    decision = Governor(PowerSettings(), EconomicsSettings()).step(
        inputs(quiet_scale=0.5, controls=Controls(power_target_w=2000))
    )
    assert decision.budgets_w == {0: pytest.approx(500), 1: pytest.approx(500)}
    assert decision.limits == ("target", "quiet")
    assert decision.to_json()["budgets_w"] == {"0": 500.0, "1": 500.0}


# -- prices ------------------------------------------------------------------------------


def test_price_comes_from_the_command_then_the_tariff_then_the_flat_rate() -> None:
    economics = EconomicsSettings(electricity_per_kwh=0.12, tariff=("17:00-21:00=0.3",))
    governor = Governor(PowerSettings(), economics)
    assert governor.price_per_kwh(18 * 60, Controls()) == 0.3
    assert governor.price_per_kwh(21 * 60, Controls()) == 0.12
    assert governor.price_per_kwh(18 * 60, Controls(electricity_per_kwh=0.05)) == 0.05


def test_a_point_that_only_breaks_even_is_not_worth_running() -> None:
    # 900 W at the boards = 1 kW in: at 0.25/kWh 6.0 a day, earned exactly by 60 TH/s at 0.1.
    even = [CurvePoint(900, 60e12)]
    economics = EconomicsSettings(profit=True, electricity_per_kwh=0.25, hashprice_per_th_day=0.1)
    decision = Governor(PowerSettings(), economics).step(inputs(curves={0: even}))
    assert decision.mode is Mode.SLEEP and decision.limits == ("unprofitable",)
    better = [CurvePoint(900, 61e12)]
    assert Governor(PowerSettings(), economics).step(inputs(curves={0: better})).mode is Mode.RUN


# -- the settings' ranges, written out ---------------------------------------------------------

GOVERNOR_SETTINGS: dict[str, tuple[type, dict[str, tuple[float, float, float]]]] = {
    "power": (
        PowerSettings,
        {
            "target_w": (0.0, 0, 100_000),
            "interval_s": (1.0, 0.1, 60),
            "gain": (0.4, 0.01, 2),
            "ramp_w_per_s": (400.0, 10, 100_000),
        },
    ),
    "economics": (
        EconomicsSettings,
        {"electricity_per_kwh": (0.0, 0, 100), "hashprice_per_th_day": (0.0, 0, 100)},
    ),
}


@pytest.mark.parametrize(
    ("table", "name"),
    [(table, name) for table, (_, fields) in GOVERNOR_SETTINGS.items() for name in fields],
)
def test_governor_settings_default_and_range_are_the_documented_ones(table: str, name: str) -> None:
    cls, fields = GOVERNOR_SETTINGS[table]
    default, low, high = fields[name]
    assert getattr(cls(), name) == default
    past = 0.5  # less than the +1 a wrong bound would add
    for value in (low, high):
        parse_table(cls, {name: value}, table)
    for value in (low - past, high + past):
        with pytest.raises(ConfigError, match=rf"^{table}\.{name}: must be"):
            parse_table(cls, {name: value}, table)


def test_at_most_24_tariff_and_curtailment_windows() -> None:
    windows = [f"{h:02d}:00-{h:02d}:30" for h in range(24)]
    assert (
        len(parse_table(EconomicsSettings, {"curtail_schedule": windows}, "e").curtail_schedule)
        == 24
    )
    with pytest.raises(ConfigError, match="at most 24"):
        parse_table(EconomicsSettings, {"curtail_schedule": [*windows, "01:40-01:50"]}, "e")
    priced = [f"{w}=0.1" for w in windows]
    with pytest.raises(ConfigError, match="at most 24"):
        parse_table(EconomicsSettings, {"tariff": [*priced, "01:40-01:50=0.2"]}, "e")
    assert EconomicsSettings().curtail_mode == "sleep" and not EconomicsSettings().profit


def test_a_decision_is_published_with_its_mode_reason_limits_budgets_and_numbers() -> None:
    decision = Governor(PowerSettings(), EconomicsSettings()).step(
        inputs(quiet_scale=0.6, controls=Controls(curtail=None))
    )
    assert decision.to_json() == {
        "mode": "run",
        "reason": "quiet mode: power at 60% to stay under the noise cap",
        "limits": ["quiet"],
        "budgets_w": {"0": 600.0, "1": 600.0},
        "price_per_kwh": 0.0,
        "quiet_scale": 0.6,
    }


def test_every_curtailment_says_what_curtails_and_a_target_starts_afresh_after_it() -> None:
    economics = EconomicsSettings(curtail_schedule=("02:00-03:00",))
    governor = Governor(PowerSettings(target_w=1200), economics)
    governor.step(inputs(now_s=BOOT, input_w=2000.0))
    wound = governor.step(inputs(now_s=BOOT + 10, input_w=2000.0))
    assert total_w(wound) < 1200 * 0.9
    command = governor.step(inputs(now_s=BOOT + 11, controls=Controls(curtail="min")))
    assert (command.mode, command.limits) == (Mode.MIN, ("command",))
    assert governor.step(inputs(now_s=BOOT + 12, minute_of_day=150)).limits == ("schedule",)
    assert governor.step(inputs(now_s=BOOT + 13, work_available=False)).limits == ("no_pool",)
    resumed = governor.step(inputs(now_s=BOOT + 14, input_w=2000.0))
    assert total_w(resumed) == pytest.approx(1200 * 0.9)  # feed-forward again, not wound


def test_an_unprofitable_spell_restarts_the_target_from_its_feed_forward() -> None:
    economics = EconomicsSettings(profit=True, hashprice_per_th_day=0.05)
    governor = Governor(PowerSettings(target_w=1500), economics)
    governor.step(inputs(now_s=BOOT, input_w=3000.0))
    assert total_w(governor.step(inputs(now_s=BOOT + 10, input_w=3000.0))) < 1350
    dear = Controls(electricity_per_kwh=5.0)
    assert governor.step(inputs(now_s=BOOT + 11, controls=dear)).mode is Mode.SLEEP
    back = governor.step(inputs(now_s=BOOT + 12, input_w=3000.0))
    assert total_w(back) == pytest.approx(1350)


def test_profit_mode_says_why_and_what_it_earns() -> None:
    economics = EconomicsSettings(profit=True, electricity_per_kwh=0.05)
    governor = Governor(PowerSettings(), economics)
    unpriced = governor.step(inputs())
    assert unpriced.limits == ("profit_unpriced",)
    priced = governor.step(inputs(controls=Controls(hashprice_per_th_day=0.05)))
    assert priced.limits == ("profit",)
    assert priced.reason == "profit 2.53/day at 0.05/kWh"
    assert priced.numbers == {
        "price_per_kwh": 0.05,
        "hashprice_per_th_day": 0.05,
        "profit_per_day": 2.53,  # 2 (2.6 - 1000 / 0.9 * 24 / 1000 * 0.05), to the cent
    }


def test_with_equal_earnings_a_board_runs_at_the_lower_power() -> None:
    same = [CurvePoint(500, 30e12), CurvePoint(800, 30e12)]  # free power: only hashrate counts
    economics = EconomicsSettings(profit=True, hashprice_per_th_day=0.05)
    decision = Governor(PowerSettings(), economics).step(inputs(curves={0: same}))
    assert decision.budgets_w == {0: 500}


def test_one_step_never_corrects_more_than_the_whole_error() -> None:
    governor = Governor(PowerSettings(gain=2, ramp_w_per_s=100_000), EconomicsSettings())
    target = Controls(power_target_w=2000)
    curves = {0: WIDE, 1: WIDE}
    governor.step(inputs(now_s=BOOT, curves=curves, controls=target))  # 1800 W
    step = governor.step(inputs(now_s=BOOT + 1, input_w=1500.0, curves=curves, controls=target))
    assert total_w(step) == pytest.approx(1800 + 500 * 0.9)  # all of it, not twice


def test_a_board_without_a_curve_gets_nothing_from_a_target_or_quiet_mode() -> None:
    governor = Governor(PowerSettings(), EconomicsSettings())
    curves: dict[int, list[CurvePoint]] = {0: [], 1: WIDE}
    quiet = governor.step(inputs(curves=curves, quiet_scale=0.5))
    assert quiet.budgets_w == {0: 0.0, 1: pytest.approx(1000)}
    target = governor.step(inputs(curves=curves, controls=Controls(power_target_w=2000)))
    assert target.budgets_w == {0: 0.0, 1: pytest.approx(1800)}


def test_boards_share_a_target_by_what_they_can_draw_however_little() -> None:
    tiny = [CurvePoint(0.25, 1e9), CurvePoint(0.5, 2e9)]
    decision = Governor(PowerSettings(), EconomicsSettings()).step(
        inputs(curves={0: tiny, 1: tiny}, controls=Controls(power_target_w=1000))
    )
    assert decision.budgets_w == {0: pytest.approx(0.5), 1: pytest.approx(0.5)}


def test_published_numbers_are_rounded_for_people() -> None:
    decision = Governor(PowerSettings(), EconomicsSettings()).step(inputs(quiet_scale=0.66667))
    published = decision.to_json()
    assert published["budgets_w"] == {"0": 666.7, "1": 666.7}
    assert published["quiet_scale"] == 0.667
