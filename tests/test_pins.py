"""Fan and slot pins through gpiozero's MockFactory: duty via the envelope, tach, debounce."""

from __future__ import annotations

from typing import Any

import pytest

from hashbay.drivers.envelope import BoardLimits, FanLimits, SafetyEnvelope
from hashbay.drivers.errors import SafetyViolation
from hashbay.drivers.fan import Fan
from hashbay.drivers.slot_pins import SlotPins
from hashbay.tools.sim.pins import sim_pin_factory

from .support import Clock


@pytest.fixture
def factory() -> Any:
    return sim_pin_factory()


CAPS = BoardLimits(11.0, 15.5, 50, 800, 1800)


def make_fan(factory: Any, clock: Clock) -> Fan:
    envelope = SafetyEnvelope(FanLimits(0.2, 1.0), CAPS, 4500)
    return Fan("fan0", 12, 16, factory, envelope, clock=clock)


def test_fan_starts_at_full_duty_and_follows_accepted_settings(factory: Any) -> None:
    fan = make_fan(factory, Clock())
    assert fan.duty == 1.0
    assert fan.set_duty(0.35) == 0.35
    assert factory.pin(12).state == pytest.approx(0.35)


@pytest.mark.parametrize("duty", [0.1, 1.5, float("nan"), float("inf"), -0.0])
def test_fan_duty_outside_the_envelope_is_refused_and_nothing_is_written(
    factory: Any, duty: float
) -> None:
    fan = make_fan(factory, Clock())
    fan.set_duty(0.5)
    with pytest.raises(SafetyViolation, match="fan0 duty"):
        fan.set_duty(duty)
    assert factory.pin(12).state == pytest.approx(0.5)


CLOCKS = [100.0, 3 * 86_400.0 + 0.3]  # a monotonic clock soon after boot, and days after


@pytest.mark.parametrize("start", CLOCKS)
def test_rpm_is_measured_from_tach_pulses_over_the_window(factory: Any, start: float) -> None:
    clock = Clock(start)
    fan = make_fan(factory, clock)
    tach = factory.pin(16)
    for _ in range(100):  # 100 pulses = 50 revolutions
        tach.drive_low()
        tach.drive_high()
    clock.now += 0.5
    reading = fan.read()
    assert reading.rpm == pytest.approx(6000.0)
    assert not reading.stalled
    clock.now += 1.0
    first = fan.read()
    assert first.rpm == 0.0 and not first.stalled  # one silent window may be a late read
    clock.now += 1.0
    assert fan.read().stalled  # two in a row while commanded to spin: stalled
    clock.now += 0.1
    assert fan.read().stalled  # a read too soon after repeats the last honest figure


@pytest.mark.parametrize("start", CLOCKS)
def test_presence_is_believed_only_after_the_contact_stops_bouncing(
    factory: Any, start: float
) -> None:
    clock = Clock(start)
    pins = SlotPins(17, 27, 22, 23, factory, debounce_s=0.05, clock=clock)
    presence = factory.pin(17)
    assert not pins.present()
    for _ in range(5):  # contact bounce while the module slides in
        presence.drive_low()
        clock.now += 0.01
        presence.drive_high()
        clock.now += 0.01
    presence.drive_low()
    clock.now += 0.01
    assert pins.settling()
    assert not pins.present()
    clock.now += 0.05
    assert pins.present()
    assert not pins.settling()


def test_slot_outputs_start_safe_and_safe_restores_them(factory: Any) -> None:
    pins = SlotPins(17, 27, 22, 23, factory)
    assert not pins.power_enabled and pins.in_reset
    assert factory.pin(27).state == 0  # enable low: hot-swap controller off
    assert factory.pin(22).state == 0  # reset is active low
    pins.enable_power(True)
    pins.hold_reset(False)
    assert factory.pin(27).state == 1 and factory.pin(22).state == 1
    pins.safe()
    assert factory.pin(27).state == 0 and factory.pin(22).state == 0


def test_locate_led_modes(factory: Any) -> None:
    pins = SlotPins(17, 27, 22, 23, factory)
    led = factory.pin(23)
    pins.locate("on")
    assert led.state == 1
    pins.locate("off")
    assert led.state == 0
    with pytest.raises(ValueError, match="locate mode"):
        pins.locate("disco")


def test_sim_pins_keep_a_bounded_history(factory: Any) -> None:
    make_fan(factory, Clock())
    tach = factory.pin(16)
    for _ in range(10_000):
        tach.drive_low()
        tach.drive_high()
    assert len(tach.states) <= 256


def test_an_alert_edge_drops_power_in_the_callback_and_then_tells_the_agent(
    factory: Any,
) -> None:
    told: list[bool] = []
    pins = SlotPins(17, 27, 22, 23, factory, alert_pin=5, on_alert=lambda: told.append(True))
    pins.enable_power(True)
    pins.hold_reset(False)
    alert = factory.pin(5)

    def asserted() -> bool:  # read afresh each time (mypy would narrow a property)
        return pins.alert_asserted

    def powered() -> bool:
        return pins.power_enabled

    assert not asserted()
    alert.drive_low()  # a sensor's open-drain output pulls the line down: too hot
    # By the time anyone is told, the hardware is already off (no loop, no bus needed).
    assert told == [True]
    assert not powered() and pins.in_reset
    assert asserted()
    with pytest.raises(SafetyViolation, match="over-temperature alert"):
        pins.enable_power(True)
    assert not factory.pin(27).state
    alert.drive_high()  # cooled below T_HYST: the comparator lets go
    pins.enable_power(True)
    assert powered()
    pins.close()


def test_a_slot_without_an_alert_line_never_reports_one(factory: Any) -> None:
    pins = SlotPins(17, 27, 22, 23, factory)
    assert not pins.has_alert and not pins.alert_asserted
    pins.enable_power(True)
    assert pins.power_enabled
    pins.close()
