"""The agent's fan noise model agrees with the simulator's physics and inverts exactly."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hashbay.agent.daemon.config import default_config_path, load_config
from hashbay.agent.thermal.noise import FanModel, NoiseModel, combine_dba, finite_or_none
from hashbay.tools.sim import physics
from hashbay.tools.sim.fans import MIN_DUTY
from hashbay.tools.sim.plant import ThermalPlant

SIM_FAN = FanModel(rpm_max=6000.0, dba_at_max=69.0, stop_duty=MIN_DUTY)

rpms = st.just(0.0) | st.floats(min_value=1e-6, max_value=20000.0)
levels = st.floats(min_value=-20.0, max_value=130.0, allow_nan=False)
fan_models = st.builds(
    FanModel,
    rpm_max=st.floats(min_value=500, max_value=30000),
    dba_at_max=st.floats(min_value=10, max_value=120),
    stop_duty=st.floats(min_value=0, max_value=0.9),
)


def test_the_default_config_describes_the_simulated_fans() -> None:
    config = load_config(default_config_path())
    model = NoiseModel.of(config.fan)
    assert all(fan == SIM_FAN for fan in model.fans)


@given(rpm=rpms)
def test_one_fan_level_matches_the_simulator(rpm: float) -> None:
    ours = SIM_FAN.level_dba(rpm)
    theirs = physics.fan_noise_dba(rpm, 6000.0, 69.0)
    assert ours == theirs or ours == pytest.approx(theirs, abs=1e-9)


@given(st.lists(levels, max_size=8))
def test_levels_combine_like_the_simulator(values: list[float]) -> None:
    ours, theirs = combine_dba(values), physics.combine_dba(values)
    assert ours == theirs or ours == pytest.approx(theirs, abs=1e-9)


def test_the_estimate_from_measured_speeds_is_what_the_simulated_fans_make() -> None:
    plant = ThermalPlant(duty=0.55)
    try:
        plant.fans[2].stall()
        plant.step(30.0)
        model = NoiseModel([SIM_FAN] * 4)
        assert model.level_dba(plant.rpms()) == pytest.approx(plant.noise_dba(), abs=1e-9)
        predicted = model.level_at_duty(0.55, [not s for s in plant.stalled()])
        assert predicted == pytest.approx(plant.noise_dba(), abs=0.01)
    finally:
        plant.close()


def test_four_fans_at_full_speed_are_six_db_louder_than_one() -> None:
    model = NoiseModel([SIM_FAN] * 4)
    assert model.level_at_duty(1.0) == pytest.approx(69.0 + 10 * math.log10(4))


@given(cap=st.floats(min_value=0, max_value=130), fans=st.lists(fan_models, min_size=1, max_size=8))
def test_the_duty_for_a_cap_is_the_highest_that_stays_under_it(
    cap: float, fans: list[FanModel]
) -> None:
    model = NoiseModel(fans)
    duty = model.duty_for_cap(cap)
    assert 0.0 <= duty <= 1.0
    assert model.level_at_duty(duty) <= cap + 1e-9
    if duty == 0.0:  # only standing fans meet it: the slowest that turns is too loud
        assert model.level_at_duty(min(f.stop_duty for f in fans)) > cap
    elif duty < 1.0:
        assert model.level_at_duty(min(1.0, duty + 1e-6)) > cap - 1e-6


def test_stalled_fans_make_no_noise_so_the_others_may_spin_faster() -> None:
    model = NoiseModel([SIM_FAN] * 4)
    all_four = model.duty_for_cap(65.0)
    three = model.duty_for_cap(65.0, [True, True, False, True])
    assert three > all_four
    assert model.level_at_duty(three, [True, True, False, True]) == pytest.approx(65.0)


def test_a_cap_below_the_slowest_fan_is_met_only_standing_still() -> None:
    model = NoiseModel([SIM_FAN] * 4)
    assert model.duty_for_cap(10.0) == 0.0
    assert model.level_dba([0.0] * 4) == -math.inf
    assert finite_or_none(model.level_dba([0.0] * 4)) is None


def test_bad_input_is_refused_with_a_reason() -> None:
    model = NoiseModel([SIM_FAN] * 2)
    with pytest.raises(ValueError, match="3 values for 2 fans"):
        model.level_dba([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="number"):
        model.duty_for_cap(math.nan)
    with pytest.raises(ValueError, match="rpm_max"):
        FanModel(rpm_max=0.0, dba_at_max=60.0)
    assert SIM_FAN.level_dba(math.nan) == -math.inf
