"""The power governor: targets held, curtailment, profit, quiet limiting; the controls file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hashbay.agent.controls import Controls, ControlStore
from hashbay.agent.governor import (
    BOARD_TO_INPUT,
    CurvePoint,
    EconomicsSettings,
    Governor,
    Inputs,
    Mode,
    PowerSettings,
)
from hashbay.agent.operating_point import OperatingPoint, PointPlanner
from hashbay.agent.schedule import parse_priced_window, parse_window
from hashbay.drivers.envelope import BoardLimits, FanLimits, SafetyEnvelope
from hashbay.drivers.errors import ConfigError

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
