"""The fan loop, closed on the simulator's physics: simulated fans with their inertia, boards
with their heat capacity, sensors quantised like a TMP75, stepped one second at a time."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from hashbay.agent.thermal.fan_control import FanCommand, FanController
from hashbay.agent.thermal.noise import FanModel, NoiseModel
from hashbay.agent.thermal.thermal_settings import ThermalSettings
from hashbay.tools.sim.plant import ThermalPlant, zero_crossings

TARGET_C = 75.0
THROTTLE_C = 85.0
DUTY_MIN, DUTY_MAX = 0.2, 1.0
NOISE = NoiseModel([FanModel(6000.0, 69.0, 0.1)] * 4)


@dataclass(frozen=True)
class Tick:
    t_s: int
    hottest_c: float
    command: FanCommand
    noise_dba: float  # what the simulated fans make after the step


@pytest.fixture
def plant() -> Iterator[ThermalPlant]:
    rig = ThermalPlant(power_w=1300.0, ambient_c=25.0, duty=1.0)
    yield rig
    rig.close()


def controller(duty: float = 1.0, duty_max: float = DUTY_MAX, **settings: float) -> FanController:
    return FanController(
        ThermalSettings(**settings),  # type: ignore[arg-type]
        duty_min=DUTY_MIN,
        duty_max=duty_max,
        force_above_c=THROTTLE_C,
        initial_duty=duty,
    )


def run(
    plant: ThermalPlant,
    loop: FanController,
    seconds: int,
    *,
    start_s: int = 0,
    cap_dba: float | None = None,
    power_w: float | None = None,
    reading: Callable[[float], float | None] = lambda c: c,
    override: float | None = None,
) -> list[Tick]:
    """Close the loop for `seconds`; with `power_w`, the boards draw it times the scale."""
    ticks = []
    for t in range(start_s, start_s + seconds):
        running = [not s for s in plant.stalled()]
        cap = None if cap_dba is None else NOISE.duty_for_cap(cap_dba, running)
        command = loop.update(
            float(t),
            reading(plant.hottest_c()),
            stalled=sum(plant.stalled()),
            cap_duty=cap,
            override=override,
        )
        plant.set_duty(command.duty)
        if power_w is not None:
            plant.power_w = [power_w * command.power_scale] * len(plant.power_w)
        plant.step(1.0)
        ticks.append(Tick(t, plant.hottest_c(), command, plant.noise_dba()))
    return ticks


def temps(ticks: list[Tick]) -> list[float]:
    return [tick.hottest_c for tick in ticks]


def duties(ticks: list[Tick]) -> list[float]:
    return [tick.command.duty for tick in ticks]


def test_from_cold_the_hottest_board_settles_at_the_target_without_overshoot(
    plant: ThermalPlant,
) -> None:
    ticks = run(plant, controller(), 900)
    assert max(temps(ticks)) <= TARGET_C + 1.5
    settled = ticks[-300:]
    assert all(abs(t - TARGET_C) <= 0.5 for t in temps(settled))
    assert DUTY_MIN < duties(settled)[-1] < DUTY_MAX  # the fans are controlling, not pinned
    assert zero_crossings(temps(ticks[300:]), TARGET_C, band=0.3) == 0


@pytest.mark.parametrize(
    ("change", "value"), [("power_w", 1450.0), ("power_w", 1150.0), ("ambient_c", 30.0)]
)
def test_a_load_or_ambient_step_is_absorbed_and_damped(
    plant: ThermalPlant, change: str, value: float
) -> None:
    loop = controller()
    run(plant, loop, 600)
    if change == "power_w":
        plant.power_w = [value] * 3
    else:
        plant.ambient_c = value
    after = run(plant, loop, 900, start_s=600)
    deviation = max(abs(t - TARGET_C) for t in temps(after))
    assert deviation <= 2.5  # a 150 W step per board or 5 °C of ambient
    assert all(abs(t - TARGET_C) <= 0.5 for t in temps(after[-400:]))
    # damped: at most one swing through the target, none in the settled half
    assert zero_crossings(temps(after), TARGET_C, band=0.3) <= 1
    assert zero_crossings(temps(after[-450:]), TARGET_C, band=0.2) == 0


def test_sensor_noise_does_not_make_the_fans_hunt(plant: ThermalPlant) -> None:
    noise = random.Random(7)
    ticks = run(plant, controller(), 1500, reading=lambda c: c + noise.gauss(0.0, 0.3))
    settled = ticks[-600:]
    assert max(duties(settled)) - min(duties(settled)) < 0.08
    assert all(abs(t - TARGET_C) <= 0.75 for t in temps(settled))


def test_the_loop_moves_the_fans_gently_and_keeps_within_the_duty_limits(
    plant: ThermalPlant,
) -> None:
    settings = ThermalSettings()
    ticks = run(plant, controller(duty_max=0.9), 600)
    plant.power_w = [400.0] * 3  # light load: the fans would like to stop
    ticks += run(plant, controller(duty=duties(ticks)[-1], duty_max=0.9), 900, start_s=600)
    assert all(DUTY_MIN <= d <= 0.9 for d in duties(ticks))
    assert duties(ticks)[-1] == DUTY_MIN
    steps = [b - a for a, b in zip(duties(ticks), duties(ticks)[1:], strict=False)]
    assert max(steps) <= settings.duty_up_per_s + 1e-9
    assert min(steps) >= -settings.duty_down_per_s - 1e-9


def load_drop_after(power_w: float) -> tuple[list[Tick], list[Tick]]:
    """20 minutes at `power_w` per board, then the load drops to 1100 W."""
    plant = ThermalPlant(power_w=power_w, duty=1.0)
    try:
        loop = controller()
        before = run(plant, loop, 1200)
        plant.power_w = [1100.0] * 3
        return before, run(plant, loop, 900, start_s=1200)
    finally:
        plant.close()


def test_overloaded_fans_sit_at_max_and_do_not_wind_up() -> None:
    pinned, after = load_drop_after(1600.0)  # more than full airflow holds at the target
    assert all(d == DUTY_MAX for d in duties(pinned[-600:]))
    assert temps(pinned)[-1] > TARGET_C + 2
    # No integral stored up while pinned: the fans leave full speed as soon as the board
    # is back at the target, and it undershoots no more than after the same drop from a
    # load the fans could hold unsaturated.
    back = next(i for i, t in enumerate(temps(after)) if t <= TARGET_C)
    assert duties(after)[back + 10] < DUTY_MAX
    unsaturated, reference = load_drop_after(1450.0)
    assert duties(unsaturated)[-1] < DUTY_MAX
    assert min(temps(after)) >= min(temps(reference)) - 0.5
    assert all(abs(t - TARGET_C) <= 0.5 for t in temps(after[-300:]))


def test_quiet_cap_holds_the_noise_and_lowers_power_instead_of_the_temperature_limit(
    plant: ThermalPlant,
) -> None:
    settings = ThermalSettings()
    loop = controller()
    run(plant, loop, 600, power_w=1300.0)
    quiet = run(plant, loop, 2400, start_s=600, cap_dba=65.0, power_w=1300.0)
    cap_duty = NOISE.duty_for_cap(65.0)
    assert all(d <= cap_duty + 1e-9 for d in duties(quiet))
    # The rotors take a few seconds to coast down to the capped speed, then stay under it.
    assert all(tick.noise_dba <= 65.0 + 0.01 for tick in quiet[30:])
    hold_c = settings.target_c + settings.power_margin_c
    assert max(temps(quiet)) <= hold_c + 2.0  # under protection's warning (80 °C)
    assert all(abs(t - hold_c) <= 0.5 for t in temps(quiet[-600:]))
    last = quiet[-1].command
    assert last.capped and last.code == "quiet_capped"
    assert 0.8 < last.power_scale < 0.98
    assert last.power_code == "quiet_limited"
    assert "quiet mode: power at" in last.power_reason
    # The cap lifts (morning): the fans take the heat again and power grows back.
    day = run(plant, loop, 900, start_s=3000, power_w=1300.0)
    assert day[-1].command.power_scale == 1.0
    assert day[-1].command.power_code == "full"
    assert all(abs(t - TARGET_C) <= 0.5 for t in temps(day[-200:]))


def test_a_passing_warm_spell_under_the_cap_costs_no_power() -> None:
    loop = controller(duty=0.6)
    for t in range(20):  # hot, capped, but for less than power_after_s
        command = loop.update(float(t), TARGET_C + 5.0, cap_duty=0.6)
        assert command.capped
        assert command.power_scale == 1.0


def test_a_stalled_fan_drives_the_others_to_full_speed_whatever_the_cap_or_override(
    plant: ThermalPlant,
) -> None:
    loop = controller()
    run(plant, loop, 600, cap_dba=60.0)
    plant.fans[1].stall()
    stalled = run(plant, loop, 5, start_s=600, cap_dba=60.0, override=0.3)
    first = stalled[0].command
    assert first.duty == DUTY_MAX and first.forced and first.throttle_boards
    assert first.code == "fan_stalled"
    assert "1 fan stalled" in first.reason
    assert all(fan.duty == DUTY_MAX for fan in plant.fans if not fan.stalled)
    plant.fans[1].unstall()
    after = run(plant, loop, 3, start_s=605, cap_dba=60.0)
    assert after[0].command.duty < DUTY_MAX  # back under the cap at once (caps cut instantly)
    assert not after[0].command.throttle_boards


def test_a_hashing_board_without_a_readable_sensor_gets_full_speed() -> None:
    loop = controller(duty=0.4)
    command = loop.update(0.0, None, heating=True, cap_duty=0.5, override=0.3)
    assert (command.duty, command.code, command.forced) == (DUTY_MAX, "sensors_lost", True)
    nan = loop.update(1.0, float("nan"), heating=True)
    assert nan.code == "sensors_lost"


def test_at_the_throttle_limit_safety_beats_quiet_and_override() -> None:
    loop = controller(duty=0.4)
    command = loop.update(0.0, THROTTLE_C, cap_duty=0.4, override=0.3)
    assert command.duty == DUTY_MAX and command.code == "overheat"
    assert "whatever the quiet cap or override" in command.reason


def test_an_override_is_clamped_and_control_resumes_from_it_without_a_bump() -> None:
    loop = controller(duty=0.8)
    low = loop.update(0.0, TARGET_C, override=0.05)
    assert (low.duty, low.code) == (DUTY_MIN, "override")
    assert "asked 5%" in low.reason
    held = loop.update(1.0, TARGET_C, override=0.5)
    assert held.duty == 0.5
    auto = loop.update(2.0, TARGET_C)
    assert auto.code == "holding_target"
    assert auto.duty == pytest.approx(0.5, abs=0.01)


def test_with_no_board_making_heat_the_fans_wind_down_gently() -> None:
    loop = controller(duty=1.0)
    first = loop.update(0.0, None, heating=False)
    assert first.code == "idle"
    assert first.duty == pytest.approx(1.0 - ThermalSettings().duty_down_per_s)
    for t in range(1, 100):
        last = loop.update(float(t), None, heating=False)
    assert last.duty == DUTY_MIN


def test_the_first_step_starts_from_the_fans_present_duty() -> None:
    loop = controller(duty=1.0)
    command = loop.update(0.0, 40.0)  # cold boards: the loop wants the minimum
    assert command.duty == pytest.approx(1.0 - ThermalSettings().duty_down_per_s)
