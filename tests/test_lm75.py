"""LM75/TMP75 sensors: resolution, quantisation, the sign, and sensors that lie or vanish."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hashbay.drivers.errors import HardwareError, ProtocolError
from hashbay.drivers.lm75 import TemperatureSensor, decode_temperature
from hashbay.tools.sim.i2c import SimI2CBus
from hashbay.tools.sim.i2c_devices import SimTemperatureSensor

ADDR = 0x48


def attach(model: SimTemperatureSensor) -> tuple[SimI2CBus, TemperatureSensor]:
    bus = SimI2CBus()
    bus.attach(ADDR, model)
    return bus, TemperatureSensor(bus, ADDR, "slot 0 inlet sensor")


def test_power_up_resolution_is_nine_bits() -> None:
    _, sensor = attach(SimTemperatureSensor(41.3))
    assert sensor.read_c() == 41.5


def test_configure_selects_twelve_bits() -> None:
    model = SimTemperatureSensor(41.3)
    _, sensor = attach(model)
    assert sensor.configure() == 12
    assert model.resolution_bits == 12
    assert sensor.read_c() == 41.3125  # 0.0625 °C steps


def test_a_plain_lm75_stays_at_nine_bits_and_still_reads() -> None:
    _, sensor = attach(SimTemperatureSensor(41.3, configurable_resolution=False))
    assert sensor.configure() == 9
    assert sensor.read_c() == 41.5


@pytest.mark.parametrize(("temp_c", "expected"), [(-10.3, -10.3125), (-0.0625, -0.0625)])
def test_negative_temperatures_keep_their_sign(temp_c: float, expected: float) -> None:
    _, sensor = attach(SimTemperatureSensor(temp_c))
    sensor.configure()
    assert sensor.read_c() == expected


def test_a_lost_sensor_is_a_hardware_error_naming_it() -> None:
    model = SimTemperatureSensor()
    _, sensor = attach(model)
    model.lost = True
    with pytest.raises(
        HardwareError, match=r"slot 0 inlet sensor \(0x48\) read temperature: Remote I/O"
    ):
        sensor.read_c()


def test_a_stuck_sensor_keeps_its_last_value() -> None:
    model = SimTemperatureSensor(55.0)
    _, sensor = attach(model)
    sensor.configure()
    model.stuck = True
    model.temp_c = 90.0
    assert sensor.read_c() == 55.0
    model.stuck = False
    assert sensor.read_c() == 90.0


def test_a_reading_the_part_cannot_make_is_a_protocol_error() -> None:
    bus, sensor = attach(SimTemperatureSensor(25.0))
    bus.corrupt_next_read(ADDR, byte_index=0, bit=7)  # 25 °C turns into -103 °C
    with pytest.raises(ProtocolError, match=r"slot 0 inlet sensor \(0x48\) read -103.00 °C"):
        sensor.read_c()
    assert sensor.read_c() == 25.0


@given(st.integers(0, 255), st.integers(0, 255))
def test_any_register_value_decodes_to_the_sensor_scale(msb: int, lsb: int) -> None:
    temp_c = decode_temperature(msb, lsb)
    assert -128.0 <= temp_c < 128.0
    assert temp_c * 256 == int.from_bytes(bytes((msb, lsb)), "big", signed=True)
