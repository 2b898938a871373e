"""PMBus: codecs as properties, and the drivers against the simulated PSU, hot-swap and DC-DC."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smbus2 import i2c_msg

from hashbay.drivers.envelope import BoardLimits, FanLimits, SafetyEnvelope
from hashbay.drivers.errors import HardwareError, ProtocolError, SafetyViolation
from hashbay.drivers.pmbus import (
    HOTSWAP_COEFFICIENTS,
    Cmd,
    DcDc,
    DirectCoefficients,
    HotSwap,
    PMBusDevice,
    Psu,
    Status,
    StatusCml,
    StatusInput,
    StatusIout,
    StatusTemperature,
    StatusWord,
    crc8,
    direct_decode,
    linear11_decode,
    linear16_decode,
    linear16_encode,
    pec_read,
    pec_write,
    vout_mode_exponent,
)
from hashbay.tools.sim import pmbus_wire as sim_wire
from hashbay.tools.sim.i2c import SimI2CBus
from hashbay.tools.sim.pmbus_devices import BLOCK, Register, SimDcDc, SimHotSwap, SimPsu

PSU_ADDR = 0x58
HOTSWAP_ADDR = 0x10
DCDC_ADDR = 0x20
SLOT = 1
CAPS = BoardLimits(11.0, 15.5, 50, 800, 1800)
MODULE = BoardLimits(12.0, 14.5, 400, 650, 1600)

words = st.integers(0, 0xFFFF)


# -- codecs ------------------------------------------------------------------------------


def crc8_bitwise(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def test_pec_is_crc8_smbus_with_its_check_value() -> None:
    assert crc8(b"123456789") == 0xF4


def test_pec_covers_address_bytes_command_and_data() -> None:
    assert pec_read(0x58, 0x8B, b"\x00\x6c") == crc8(bytes((0xB0, 0x8B, 0xB1, 0x00, 0x6C)))
    assert pec_write(0x58, b"\x01\x80") == crc8(bytes((0xB0, 0x01, 0x80)))


@given(st.binary(max_size=64))
def test_table_crc8_equals_the_bitwise_definition(data: bytes) -> None:
    assert crc8(data) == crc8_bitwise(data)


def test_linear11_known_words() -> None:
    assert linear11_decode(((-2 & 0x1F) << 11) | 100) == 25.0
    assert linear11_decode(0x07FF) == -1.0
    assert sim_wire.linear11(25.0) == ((-5 & 0x1F) << 11) | 800  # most precise exponent


@settings(max_examples=300)
@given(st.floats(-1023 * 2**15, 1023 * 2**15))
def test_linear11_round_trip_within_resolution(value: float) -> None:
    decoded = linear11_decode(sim_wire.linear11(value))
    assert abs(decoded - value) <= max(abs(value) / 1000, 2**-17)


@given(words)
def test_linear11_decodes_any_word(word: int) -> None:
    assert math.isfinite(linear11_decode(word))


def test_vout_mode_must_be_linear() -> None:
    assert vout_mode_exponent(0x17) == -9
    assert vout_mode_exponent(sim_wire.vout_mode(-10)) == -10
    for mode in (0x20, 0x40, 0x60, 0x97):
        with pytest.raises(ProtocolError, match="not linear"):
            vout_mode_exponent(mode)


@given(st.integers(0, 0xFF))
def test_vout_mode_parsing_never_raises_anything_but_protocol_error(mode: int) -> None:
    try:
        assert -16 <= vout_mode_exponent(mode) <= 15
    except ProtocolError:
        assert mode >> 5


@settings(max_examples=300)
@given(st.integers(-16, 15), st.floats(0, 1))
def test_linear16_round_trip_within_resolution(exponent: int, fraction: float) -> None:
    value = fraction * math.ldexp(0xFFFF, exponent)
    decoded = linear16_decode(linear16_encode(value, exponent), exponent)
    assert abs(decoded - value) <= math.ldexp(0.5, exponent)


@given(words, st.integers(-16, 15))
def test_linear16_decodes_any_word(word: int, exponent: int) -> None:
    assert linear16_decode(word, exponent) >= 0


@pytest.mark.parametrize("bad", [-1, 0x10000])
def test_a_value_that_is_not_a_word_is_a_protocol_error(bad: int) -> None:
    for decode in (linear11_decode, lambda w: linear16_decode(w, -9)):
        with pytest.raises(ProtocolError):
            decode(bad)
    with pytest.raises(ProtocolError):
        direct_decode(bad, HOTSWAP_COEFFICIENTS[Cmd.READ_VIN])


coefficient_tables = st.sampled_from(list(HOTSWAP_COEFFICIENTS.values()))


@settings(max_examples=300)
@given(coefficient_tables, st.floats(0, 1))
def test_direct_round_trip_within_resolution(coefficients: DirectCoefficients, f: float) -> None:
    c = coefficients
    top = (0x7FFF * 10.0**-c.r - c.b) / c.m
    value = f * top
    decoded = direct_decode(sim_wire.direct(value, sim_wire.Direct(c.m, c.b, c.r)), c)
    assert abs(decoded - value) <= c.resolution / 2 + 1e-9


@given(words, coefficient_tables)
def test_direct_decodes_any_word(word: int, coefficients: DirectCoefficients) -> None:
    assert math.isfinite(direct_decode(word, coefficients))


def test_direct_uses_all_three_coefficients() -> None:
    c = DirectCoefficients(m=6000, b=-200, r=-2)
    assert sim_wire.direct(30.0, sim_wire.Direct(6000, -200, -2)) == 1798  # (6000·30-200)/100
    assert direct_decode(1798, c) == pytest.approx(30.0)
    assert direct_decode(0xFFFE, c) == pytest.approx(0.0)  # -2 counts is 0 A


@given(words, st.integers(0, 0xFF), st.integers(0, 0xFF), st.integers(0, 0xFF))
def test_status_decoding_of_any_registers_never_raises(
    word: int, vout: int, iout: int, cml: int
) -> None:
    status = Status.decode(word, vout=vout, iout=iout, input=vout ^ iout, temperature=cml, cml=cml)
    assert isinstance(status.describe(), str)
    assert status.power_good == (not word & 0x0800)


def test_status_in_words_for_an_operator() -> None:
    clean_off = Status.decode(int(StatusWord.OFF | StatusWord.POWER_GOOD_N))
    assert clean_off.ok and not clean_off.power_good
    assert clean_off.describe() == "output off; power not good"
    tripped = Status.decode(
        int(StatusWord.IOUT_POUT | StatusWord.IOUT_OC_FAULT | StatusWord.OFF),
        iout=int(StatusIout.OC_FAULT),
    )
    assert not tripped.ok
    assert tripped.describe() == "output over-current fault; output off"
    assert Status.decode(0).describe() == "ok"


# -- the simulated power train -----------------------------------------------------------


@dataclass
class Rig:
    bus: SimI2CBus
    psu: SimPsu
    hotswap: SimHotSwap
    dcdc: SimDcDc
    envelope: SafetyEnvelope
    board_w: float = 0.0

    def ramp(self, seconds: float = 0.06, dt_s: float = 0.005) -> None:
        """Physics in miniature: the board draws only once its converter is powered."""
        for _ in range(round(seconds / dt_s)):
            self.hotswap.vin_v = self.psu.vout_v
            self.hotswap.load_w = self.board_w if self.dcdc.powered else 0.0
            self.hotswap.step(dt_s)
            self.dcdc.vin_v = self.hotswap.vout_v
            self.dcdc.step(dt_s)


@pytest.fixture
def rig() -> Rig:
    bus = SimI2CBus()
    psu, hotswap, dcdc = SimPsu(PSU_ADDR), SimHotSwap(HOTSWAP_ADDR), SimDcDc(DCDC_ADDR)
    bus.attach(PSU_ADDR, psu)
    bus.attach(HOTSWAP_ADDR, hotswap)
    bus.attach(DCDC_ADDR, dcdc)
    envelope = SafetyEnvelope(FanLimits(0.2, 1.0), CAPS, 4500)
    return Rig(bus, psu, hotswap, dcdc, envelope)


@pytest.fixture(params=[True, False], ids=["pec", "no-pec"])
def pec(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def powered_module(rig: Rig, pec: bool) -> DcDc:
    rig.envelope.admit_board(SLOT, MODULE)
    rig.hotswap.enable_pin = True
    rig.ramp()
    return DcDc(rig.bus, SLOT, DCDC_ADDR, rig.envelope, pec=pec)


def test_psu_readings_match_the_model(rig: Rig, pec: bool) -> None:
    m = rig.psu
    m.vin_v, m.pout_w, m.temp_c, m.fan_rpm = 228.4, 2400.0, 41.3, 7350.0
    t = Psu(rig.bus, PSU_ADDR, pec=pec).read_telemetry()
    expected = {
        "vin_v": m.vin_v,
        "iin_a": m.iin_a,
        "pin_w": m.pin_w,
        "vout_v": 54.0,
        "iout_a": 2400.0 / 54.0,
        "pout_w": m.pout_w,
        "temp_c": m.temp_c,
        "fan_rpm": m.fan_rpm,
    }
    for field, value in expected.items():
        assert getattr(t, field) == pytest.approx(value, rel=1e-3, abs=1e-3), field
    assert t.pin_w > t.pout_w  # losses


def test_psu_identity_is_read_as_blocks(rig: Rig, pec: bool) -> None:
    identity = Psu(rig.bus, PSU_ADDR, pec=pec).identity()
    assert (identity.mfr_id, identity.mfr_model) == ("HASHBAY-SIM", "PSU5000-54")


def test_every_pmbus_part_names_itself_by_mfr_id_and_model(rig: Rig, pec: bool) -> None:
    """What a bring-up check shows to tell which part answers at an address."""
    hotswap = HotSwap(rig.bus, SLOT, HOTSWAP_ADDR, rig.envelope, pec=pec).identity()
    dcdc = powered_module(rig, pec).identity()
    assert str(hotswap) == "HASHBAY-SIM HSC60-54"
    assert (dcdc.mfr_id, dcdc.mfr_model) == ("HASHBAY-SIM", "DCDC120-16")


def test_hot_swap_readings_match_the_model(rig: Rig, pec: bool) -> None:
    rig.hotswap.enable_pin = True
    rig.ramp()
    m = rig.hotswap
    m.load_w, m.temp_c = 1450.0, 47.5
    t = HotSwap(rig.bus, SLOT, HOTSWAP_ADDR, rig.envelope, pec=pec).read_telemetry()
    c = HOTSWAP_COEFFICIENTS
    assert t.vin_v == pytest.approx(m.vin_v, abs=c[Cmd.READ_VIN].resolution)
    assert t.vout_v == pytest.approx(m.vout_v, abs=c[Cmd.READ_VOUT].resolution)
    assert t.iout_a == pytest.approx(1450.0 / 54.0, abs=c[Cmd.READ_IOUT].resolution)
    assert t.pin_w == pytest.approx(m.pin_w, abs=c[Cmd.READ_PIN].resolution)
    assert t.temp_c == pytest.approx(47.5, abs=1e-3)


def test_dc_dc_readings_match_the_model(rig: Rig, pec: bool) -> None:
    dcdc = powered_module(rig, pec)
    assert dcdc.set_vout(13.8) == pytest.approx(13.8, abs=2**-10)
    dcdc.on()
    m = rig.dcdc
    m.iout_a, m.temp_c = 95.5, 66.2
    t = dcdc.read_telemetry()
    assert t.vin_v == pytest.approx(m.vin_v, rel=1e-3)
    assert t.vout_v == pytest.approx(13.8, abs=2**-10)
    assert t.vout_command_v == pytest.approx(m.vout_command_v)
    assert t.iout_a == pytest.approx(95.5, rel=1e-3)
    assert t.temp_c == pytest.approx(66.2, rel=1e-3)


def test_a_flipped_bit_is_caught_by_pec(rig: Rig) -> None:
    rig.bus.corrupt_next_read(PSU_ADDR, byte_index=1, bit=2)
    with pytest.raises(ProtocolError, match=r"PSU \(0x58\) READ_VIN: PEC mismatch"):
        Psu(rig.bus, PSU_ADDR, pec=True).read_telemetry()


def test_without_pec_the_same_flipped_bit_is_a_wrong_value(rig: Rig) -> None:
    psu = Psu(rig.bus, PSU_ADDR, pec=False)
    rig.bus.corrupt_next_read(PSU_ADDR, byte_index=1, bit=2)
    assert psu.read_telemetry().vin_v != pytest.approx(230.0, rel=1e-2)


def test_a_write_with_a_bad_pec_is_ignored_and_reported(rig: Rig) -> None:
    frame = bytes((Cmd.OPERATION, 0x00))
    bad = (pec_write(PSU_ADDR, frame) ^ 0x01).to_bytes(1, "little")
    rig.bus.i2c_rdwr(i2c_msg.write(PSU_ADDR, frame + bad))
    assert rig.psu.output_on
    status = Psu(rig.bus, PSU_ADDR, pec=True).status()
    assert status.cml & StatusCml.PEC_FAILED
    assert "bad PEC" in status.describe()


def test_an_absent_device_is_a_hardware_error_naming_it(rig: Rig) -> None:
    with pytest.raises(
        HardwareError,
        match=r"^PSU \(0x59\) READ_VIN: Remote I/O error \(device did not answer; "
        r"is the module seated and powered\?\)$",
    ):
        Psu(rig.bus, 0x59).read_telemetry()


def test_an_unpowered_dc_dc_is_not_on_the_bus(rig: Rig) -> None:
    rig.envelope.admit_board(SLOT, MODULE)
    with pytest.raises(HardwareError, match=r"slot 1 DC-DC \(0x20\) VOUT_MODE: Remote I/O"):
        DcDc(rig.bus, SLOT, DCDC_ADDR, rig.envelope).read_telemetry()


def test_an_unsupported_command_is_nacked_and_flagged(rig: Rig) -> None:
    device = PMBusDevice(rig.bus, PSU_ADDR, "PSU", pec=True)
    with pytest.raises(HardwareError, match=r"PSU \(0x58\) command 0xD0"):
        device.read_word(0xD0)
    assert device.status().cml & StatusCml.INVALID_COMMAND


def test_status_reads_only_the_detail_registers_it_points_to(rig: Rig) -> None:
    psu = Psu(rig.bus, PSU_ADDR)
    before = rig.bus.transactions
    assert psu.status().describe() == "ok"
    assert rig.bus.transactions == before + 1
    rig.psu.vin_v = 195.0
    before = rig.bus.transactions
    psu.status()
    assert rig.bus.transactions == before + 2  # STATUS_WORD, then STATUS_INPUT


@pytest.mark.parametrize(
    ("reply", "words"),
    [(b"", "block count 0"), (b"X" * 33, "block count 33"), (b"PSU\x07", "not printable")],
)
def test_bad_blocks_are_protocol_errors(rig: Rig, pec: bool, reply: bytes, words: str) -> None:
    rig.psu.registers[Cmd.MFR_MODEL] = Register(BLOCK, lambda: reply)
    with pytest.raises(ProtocolError, match=words):
        Psu(rig.bus, PSU_ADDR, pec=pec).identity()


def test_psu_input_sag_warns_then_shuts_off_with_hysteresis(rig: Rig) -> None:
    psu = Psu(rig.bus, PSU_ADDR)
    rig.psu.vin_v = 195.0
    status = psu.status()
    assert status.input & StatusInput.VIN_UV_WARNING and status.power_good
    assert "input under-voltage warning" in status.describe()
    rig.psu.vin_v = 160.0
    assert psu.read_telemetry().vout_v == 0.0
    status = psu.status()
    assert status.word & StatusWord.VIN_UV_FAULT and not status.power_good and status.off
    assert status.input & StatusInput.UNIT_OFF_LOW_INPUT
    rig.psu.vin_v = 175.0  # above the shut-off level, not yet above recovery
    assert psu.read_telemetry().vout_v == 0.0
    rig.psu.vin_v = 230.0
    assert psu.read_telemetry().vout_v == pytest.approx(54.0)
    assert psu.status().input & StatusInput.VIN_UV_FAULT  # latched until cleared
    psu.clear_faults()
    assert psu.status().describe() == "ok"


def test_set_vout_outside_the_envelope_writes_nothing(rig: Rig) -> None:
    dcdc = powered_module(rig, pec=True)
    dcdc.set_vout(14.0)
    for volts in (14.6, 11.5, float("nan")):
        with pytest.raises(SafetyViolation):
            dcdc.set_vout(volts)
        assert rig.dcdc.vout_command_v == pytest.approx(14.0)


def test_set_vout_without_module_limits_writes_nothing(rig: Rig) -> None:
    dcdc = powered_module(rig, pec=True)
    rig.envelope.forget_board(SLOT)
    before = rig.dcdc.vout_command
    with pytest.raises(SafetyViolation, match="no trusted module identity"):
        dcdc.set_vout(13.0)
    assert rig.dcdc.vout_command == before


def test_set_vout_never_rounds_past_a_limit(rig: Rig) -> None:
    dcdc = powered_module(rig, pec=True)
    rig.envelope.admit_board(SLOT, BoardLimits(12.0, 12.3, 400, 650, 1600))
    written = dcdc.set_vout(12.3)
    assert 12.3 - 2**-9 <= written <= 12.3
    assert rig.dcdc.vout_command_v == written


def test_a_converter_without_linear_vout_mode_is_refused(rig: Rig) -> None:
    dcdc = powered_module(rig, pec=True)
    rig.dcdc.registers[Cmd.VOUT_MODE] = Register(1, lambda: b"\x40")
    before = rig.dcdc.vout_command
    with pytest.raises(ProtocolError, match="not linear"):
        dcdc.set_vout(13.0)
    assert rig.dcdc.vout_command == before


def test_on_needs_admitted_limits_and_off_is_always_allowed(rig: Rig) -> None:
    rig.hotswap.enable_pin = True
    rig.ramp()
    dcdc = DcDc(rig.bus, SLOT, DCDC_ADDR, rig.envelope)
    hotswap = HotSwap(rig.bus, SLOT, HOTSWAP_ADDR, rig.envelope)
    hotswap.off()
    with pytest.raises(SafetyViolation):
        hotswap.on()
    with pytest.raises(SafetyViolation):
        dcdc.on()
    assert rig.hotswap.operation == 0x00 and not rig.hotswap.on
    rig.hotswap.operation = 0x80  # as at power-up; the GPIO enable decides
    rig.ramp()
    assert not rig.dcdc.output_on
    dcdc.off()
    hotswap.off()
    assert not rig.hotswap.on


def test_hot_swap_soft_start_reaches_power_good_after_the_ramp(rig: Rig) -> None:
    rig.envelope.admit_board(SLOT, MODULE)
    hotswap = HotSwap(rig.bus, SLOT, HOTSWAP_ADDR, rig.envelope)
    hotswap.on()
    rig.hotswap.vin_v = 54.0
    rig.hotswap.enable_pin = True
    assert not hotswap.power_good()
    rig.hotswap.step(0.02)
    assert rig.hotswap.vout_v == pytest.approx(54.0 * 0.4)
    assert hotswap.read_telemetry().iout_a == pytest.approx(2e-3 * 54.0 / 0.05, abs=0.02)
    assert not hotswap.power_good()
    rig.hotswap.step(0.02)
    rig.hotswap.step(0.02)
    assert hotswap.power_good()
    assert hotswap.status().describe() == "ok"


def test_hot_swap_over_current_latches_until_clear_faults(rig: Rig) -> None:
    rig.envelope.admit_board(SLOT, MODULE)
    hotswap = HotSwap(rig.bus, SLOT, HOTSWAP_ADDR, rig.envelope)
    rig.hotswap.enable_pin = True
    rig.ramp()
    assert hotswap.power_good()
    rig.board_w = 54.0 * 50.0
    rig.ramp(0.005)
    status = hotswap.status()
    assert status.iout & StatusIout.OC_FAULT and status.word & StatusWord.IOUT_OC_FAULT
    assert not status.power_good and "output over-current fault" in status.describe()
    rig.board_w = 800.0
    rig.ramp()
    assert not hotswap.power_good() and rig.hotswap.vout_v == 0.0
    hotswap.clear_faults()
    rig.ramp()
    assert hotswap.power_good()
    rig.hotswap.inject_overcurrent()
    assert not hotswap.power_good()


def test_dc_dc_faults_turn_the_rail_off_until_cleared(rig: Rig) -> None:
    dcdc = powered_module(rig, pec=True)
    dcdc.set_vout(13.5)
    dcdc.on()
    rig.dcdc.inject_overcurrent()
    assert dcdc.read_telemetry().vout_v == 0.0
    assert dcdc.status().iout & StatusIout.OC_FAULT
    dcdc.clear_faults()
    assert dcdc.read_telemetry().vout_v == pytest.approx(13.5)
    rig.dcdc.temp_c = 126.0
    status = dcdc.status()
    assert status.temperature & StatusTemperature.OT_FAULT and status.off
    rig.dcdc.temp_c = 80.0
    dcdc.clear_faults()
    assert dcdc.status().describe() == "ok"


def test_dc_dc_forgets_its_settings_when_its_input_goes(rig: Rig) -> None:
    dcdc = powered_module(rig, pec=True)
    dcdc.set_vout(13.5)
    dcdc.on()
    rig.hotswap.enable_pin = False
    rig.ramp(0.01)
    rig.hotswap.enable_pin = True
    rig.ramp()
    assert not rig.dcdc.output_on
    assert rig.dcdc.vout_command_v == pytest.approx(12.0)
