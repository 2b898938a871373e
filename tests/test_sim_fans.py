"""The simulated 4-wire fan: follows the PWM pin with inertia, pulses the tach pin exactly."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gpiozero import DigitalInputDevice, PWMOutputDevice
from hypothesis import given, settings
from hypothesis import strategies as st

from hashbay.drivers.envelope import BoardLimits, FanLimits, SafetyEnvelope
from hashbay.drivers.fan import Fan
from hashbay.tools.sim.fans import SimFan
from hashbay.tools.sim.pins import sim_pin_factory

from .support import Clock

PWM, TACH = 12, 16


@pytest.fixture
def factory() -> Any:
    return sim_pin_factory()


def pwm(factory: Any, duty: float) -> PWMOutputDevice:
    """The agent's side of the PWM line, as gpiozero drives it.

    Keep it referenced: a collected device frees the line, which then floats high.
    """
    return PWMOutputDevice(PWM, frequency=25_000, initial_value=duty, pin_factory=factory)


@pytest.fixture
def line(factory: Any) -> Iterator[PWMOutputDevice]:
    device = pwm(factory, 1.0)
    yield device
    device.close()


def run(fan: SimFan, seconds: float, dt_s: float = 0.01) -> int:
    pulses = 0
    for _ in range(round(seconds / dt_s)):
        pulses += fan.step(dt_s)
    return pulses


def test_fan_spins_up_with_its_time_constant_towards_rpm_max_times_duty(
    factory: Any, line: PWMOutputDevice
) -> None:
    line.value = 0.5
    fan = SimFan(factory, PWM, TACH, rpm_max=6000.0, spin_up_s=1.5)
    assert fan.target_rpm == pytest.approx(3000.0)
    run(fan, 1.5)
    assert fan.rpm == pytest.approx(3000.0 * (1 - math.exp(-1)), rel=1e-6)
    run(fan, 20.0)
    assert fan.rpm == pytest.approx(3000.0, rel=1e-4)
    assert fan.airflow == pytest.approx(0.5, rel=1e-4)


def test_fan_coasts_down_more_slowly_than_it_spins_up(factory: Any, line: PWMOutputDevice) -> None:
    fan = SimFan(factory, PWM, TACH, spin_up_s=1.0, spin_down_s=3.0, rpm=0.0)
    run(fan, 1.0)
    gained = fan.rpm
    fan = SimFan(factory, PWM, TACH, spin_up_s=1.0, spin_down_s=3.0, rpm=6000.0)
    line.value = 0.2  # the envelope's lowest duty: target 1200 rpm
    run(fan, 1.0)
    lost = 6000.0 - fan.rpm
    assert lost / 4800.0 < gained / 6000.0


def test_below_the_minimum_duty_the_rotor_stops(factory: Any, line: PWMOutputDevice) -> None:
    line.value = 0.05
    fan = SimFan(factory, PWM, TACH, rpm=3000.0)
    run(fan, 30.0)
    assert fan.rpm < 1.0
    assert fan.noise_dba < 0.0


def test_an_undriven_pwm_line_runs_the_fan_at_full_speed(factory: Any) -> None:
    fan = SimFan(factory, PWM, TACH)
    assert fan.duty == 1.0  # nobody has opened the pin yet
    run(fan, 10.0)
    assert fan.rpm == pytest.approx(6000.0, rel=1e-3)
    line = pwm(factory, 0.3)
    run(fan, 30.0)
    assert fan.rpm == pytest.approx(1800.0, rel=1e-3)
    line.close()  # the agent exits: the line floats high again
    run(fan, 10.0)
    assert fan.rpm == pytest.approx(6000.0, rel=1e-3)


def test_tach_pulses_are_exact_over_a_long_run(factory: Any, line: PWMOutputDevice) -> None:
    line.value = 0.75
    fan = SimFan(factory, PWM, TACH, rpm=4500.0)
    seen = 0

    def count() -> None:
        nonlocal seen
        seen += 1

    tach = DigitalInputDevice(TACH, pull_up=True, pin_factory=factory)
    tach.when_activated = count
    emitted = run(fan, 120.0, dt_s=0.013)  # two minutes at 4500 rpm, an awkward step
    expected = 4500.0 / 60.0 * 2 * 120.0
    assert expected - 1 <= emitted <= expected
    assert seen == emitted == fan.pulses_emitted


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 0.5), min_size=1, max_size=60))
def test_pulse_count_is_the_true_rotation_whatever_the_step_sizes(steps: list[float]) -> None:
    factory = sim_pin_factory()
    line = pwm(factory, 0.6)
    chopped = SimFan(factory, PWM, TACH, rpm=500.0)
    whole = SimFan(factory, PWM, TACH, rpm=500.0)
    emitted = sum(chopped.step(dt_s) for dt_s in steps)
    in_one = whole.step(sum(steps))
    assert abs(emitted - in_one) <= 1
    assert chopped.rpm == pytest.approx(whole.rpm)
    line.close()


def test_a_stalled_fan_stops_pulsing_whatever_the_duty(factory: Any, line: PWMOutputDevice) -> None:
    fan = SimFan(factory, PWM, TACH, rpm=6000.0)
    fan.stall()
    assert fan.rpm == 0.0
    assert run(fan, 5.0) == 0
    assert fan.stalled
    assert fan.airflow == 0.0
    assert fan.noise_dba == -math.inf
    fan.unstall()
    assert run(fan, 10.0) > 0
    assert fan.rpm == pytest.approx(6000.0, rel=1e-3)


def test_a_worn_fan_never_reaches_its_rated_speed(factory: Any, line: PWMOutputDevice) -> None:
    fan = SimFan(factory, PWM, TACH, rpm=6000.0)
    fan.wear(0.7)
    run(fan, 30.0)
    assert fan.rpm == pytest.approx(4200.0, rel=1e-3)
    assert fan.airflow == pytest.approx(0.7, rel=1e-3)
    fan.wear(1.0)
    run(fan, 30.0)
    assert fan.rpm == pytest.approx(6000.0, rel=1e-3)
    with pytest.raises(ValueError, match="wear factor"):
        fan.wear(0.0)


def test_fan_noise_follows_its_speed(factory: Any, line: PWMOutputDevice) -> None:
    fan = SimFan(factory, PWM, TACH, rpm=6000.0, dba_at_max=69.0)
    assert fan.noise_dba == pytest.approx(69.0)
    line.value = 0.5
    run(fan, 60.0)
    assert fan.noise_dba == pytest.approx(69.0 - 15.05, abs=0.01)


def test_the_agents_fan_driver_measures_the_simulated_speed_within_2_percent(
    factory: Any,
) -> None:
    clock = Clock()
    envelope = SafetyEnvelope(FanLimits(0.2, 1.0), BoardLimits(11.0, 15.5, 50, 800, 1800), 4500)
    driver = Fan("fan0", PWM, TACH, factory, envelope, clock=clock)
    fan = SimFan(factory, PWM, TACH)

    def advance(seconds: float, dt_s: float = 0.01) -> None:
        for _ in range(round(seconds / dt_s)):
            fan.step(dt_s)
            clock.now += dt_s

    for duty in (0.6, 0.35, 1.0):
        driver.set_duty(duty)
        advance(20.0)  # settle
        driver.read()  # start a fresh window
        advance(2.0)
        reading = driver.read()
        assert reading.rpm == pytest.approx(fan.rpm, rel=0.02)
        assert reading.rpm == pytest.approx(6000.0 * duty, rel=0.02)
        assert not reading.stalled
    fan.stall()
    advance(1.0)
    driver.read()
    advance(1.0)
    assert driver.read().stalled
    driver.close()


def test_the_hosts_tach_callbacks_run_on_the_simulators_thread_are_counted(
    factory: Any, line: PWMOutputDevice
) -> None:
    tach = DigitalInputDevice(TACH, pull_up=True, pin_factory=factory)

    def slow_callback() -> None:
        end = time.thread_time() + 0.001
        while time.thread_time() < end:
            pass

    tach.when_activated = slow_callback
    fan = SimFan(factory, PWM, TACH, rpm=6000.0)
    started = time.perf_counter()
    pulses = run(fan, 0.2)
    took_s = time.perf_counter() - started
    assert pulses > 20
    assert pulses * 0.001 <= fan.host_callbacks_cpu_s <= took_s
    tach.close()
