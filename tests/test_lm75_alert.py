"""The LM75/TMP75 OS/ALERT comparator: programmed, read back, and behaving as the part does.

Register bytes are written out from the LM75/TMP75 datasheets (limits left-justified in
two's complement, 0.5 °C per LSB of the 9-bit limit; configuration bit 1 comparator or
interrupt, bit 2 polarity, bits 3-4 fault queue 1/2/4/6, TMP75 bits 5-6 resolution),
never taken from the driver under test.
"""

from __future__ import annotations

import pytest

from hashbay.drivers.errors import HardwareError, ProtocolError
from hashbay.drivers.lm75 import TemperatureSensor, encode_limit
from hashbay.tools.sim.i2c import SimI2CBus
from hashbay.tools.sim.i2c_devices import SimTemperatureSensor

ADDR = 0x49


def attach(model: SimTemperatureSensor) -> TemperatureSensor:
    bus = SimI2CBus()
    bus.attach(ADDR, model)
    return TemperatureSensor(bus, ADDR, "slot 0 outlet sensor")


@pytest.mark.parametrize(
    ("celsius", "register"),
    [
        (92.0, b"\x5c\x00"),
        (92.4, b"\x5c\x00"),  # rounded down: never above the limit asked for
        (92.5, b"\x5c\x80"),
        (87.0, b"\x57\x00"),
        (0.0, b"\x00\x00"),
        (-10.5, b"\xf5\x80"),
        (125.0, b"\x7d\x00"),
    ],
)
def test_limits_are_encoded_as_the_datasheet_shows(celsius: float, register: bytes) -> None:
    assert encode_limit(celsius) == register


def test_a_limit_the_part_cannot_hold_is_refused() -> None:
    with pytest.raises(ValueError, match="not a limit"):
        encode_limit(200.0)


def test_arming_writes_limits_and_comparator_config_and_keeps_the_resolution() -> None:
    model = SimTemperatureSensor(40.0)
    sensor = attach(model)
    assert sensor.configure() == 12  # 0x60: R1:R0 = 11
    limits = sensor.arm_alert(over_c=92.3, release_c=87.0, fault_queue=2)
    assert (limits.over_c, limits.release_c, limits.fault_queue) == (92.0, 87.0, 2)
    assert model.t_high == 0x5C00
    assert model.t_low == 0x5700
    assert model.config == 0x68  # 12-bit, fault queue 2 (F1:F0 = 01), comparator, active low


def test_a_part_that_does_not_keep_its_limits_is_not_trusted() -> None:
    class Forgetful(SimTemperatureSensor):
        def write(self, data: bytes) -> None:
            super().write(data)
            self.t_high = 80 << 8  # back to the power-on limit

    sensor = attach(Forgetful(40.0))
    with pytest.raises(ProtocolError, match="did not keep its alert limits"):
        sensor.arm_alert(over_c=92.0, release_c=87.0, fault_queue=1)


def test_arming_a_sensor_that_does_not_answer_is_a_hardware_error() -> None:
    model = SimTemperatureSensor(40.0)
    model.lost = True
    with pytest.raises(HardwareError):
        attach(model).arm_alert(over_c=92.0, release_c=87.0, fault_queue=1)


def test_release_must_lie_below_the_limit() -> None:
    with pytest.raises(ValueError, match="below"):
        attach(SimTemperatureSensor(40.0)).arm_alert(over_c=90.0, release_c=90.0, fault_queue=1)


def run(model: SimTemperatureSensor, temps: list[float]) -> list[bool]:
    """The OS line (True = pulled low) after each conversion at these temperatures."""
    seen = []
    for temp in temps:
        model.temp_c = temp
        model.convert()
        seen.append(model.pulls_os_low)
    return seen


def test_comparator_asserts_at_the_limit_and_releases_only_below_the_hysteresis() -> None:
    model = SimTemperatureSensor(40.0)
    attach(model).arm_alert(over_c=92.0, release_c=87.0, fault_queue=1)
    assert run(model, [91.5, 92.0, 90.0, 87.5, 86.5, 91.5]) == [
        False,
        True,  # at T_OS
        True,  # between the two: holds
        True,
        False,  # below T_HYST
        False,
    ]


def test_the_fault_queue_ignores_a_single_conversion_over_the_limit() -> None:
    model = SimTemperatureSensor(40.0)
    attach(model).arm_alert(over_c=92.0, release_c=87.0, fault_queue=2)
    assert run(model, [95.0, 80.0, 95.0, 95.0, 80.0, 95.0, 80.0, 80.0]) == [
        False,
        False,
        False,
        True,  # two in a row
        True,
        True,  # a single one below does not release either
        True,
        False,
    ]


def test_power_on_limits_apply_until_the_agent_programs_its_own() -> None:
    model = SimTemperatureSensor(40.0)
    assert run(model, [79.0, 80.0]) == [False, True]  # LM75 default T_OS: 80 °C


def test_interrupt_mode_latches_until_a_read_then_signals_the_fall() -> None:
    model = SimTemperatureSensor(40.0)
    sensor = attach(model)
    sensor.arm_alert(over_c=92.0, release_c=87.0, fault_queue=1)
    model.config |= 0x02  # interrupt mode
    assert run(model, [93.0, 93.0]) == [True, True]
    sensor.read_c()  # any read clears it
    assert not model.pulls_os_low
    assert run(model, [90.0, 86.0]) == [False, True]  # the fall below T_HYST is an event too


def test_active_high_polarity_releases_the_line_while_asserted() -> None:
    model = SimTemperatureSensor(40.0)
    attach(model).arm_alert(over_c=92.0, release_c=87.0, fault_queue=1)
    model.config |= 0x04
    assert run(model, [80.0, 93.0]) == [True, False]


def test_a_shut_down_sensor_does_not_convert() -> None:
    model = SimTemperatureSensor(40.0)
    attach(model).arm_alert(over_c=92.0, release_c=87.0, fault_queue=1)
    model.config |= 0x01
    assert run(model, [99.0]) == [False]
