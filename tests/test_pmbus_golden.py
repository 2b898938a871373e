"""PMBus against the specification, as literal bytes.

Command codes, status bits, LINEAR11 / LINEAR16 / DIRECT words and PEC bytes are written
out here from PMBus Part II rev 1.3, the SMBus specification (PEC: CRC-8, x^8+x^2+x+1)
and our hot-swap controller's datasheet table; the PEC bytes were worked out by hand with
the bitwise definition. Nothing expected is imported from drivers/pmbus.py, so a wrong
code, bit or format there fails here even where driver and simulator would agree.

The wire captures are what a host reads on the bus: data bytes, then the PEC byte.
"""

from __future__ import annotations

import ctypes
import errno
import math
from collections.abc import Sequence

import pytest
from smbus2 import i2c_msg

from hashbay.drivers.envelope import BoardLimits, FanLimits, SafetyEnvelope
from hashbay.drivers.errors import HardwareError, ProtocolError
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
    StatusVout,
    StatusWord,
    crc8,
    direct_decode,
    linear11_decode,
    linear16_decode,
    linear16_encode,
    vout_mode_exponent,
)
from hashbay.tools.sim import pmbus_wire as sim_wire

I2C_M_RD = 0x0001

# -- the specification, written out ------------------------------------------------------

COMMAND_CODES = {  # PMBus Part II rev 1.3, appendix I
    "OPERATION": 0x01,
    "ON_OFF_CONFIG": 0x02,
    "CLEAR_FAULTS": 0x03,
    "CAPABILITY": 0x19,
    "VOUT_MODE": 0x20,
    "VOUT_COMMAND": 0x21,
    "VOUT_MAX": 0x24,
    "STATUS_BYTE": 0x78,
    "STATUS_WORD": 0x79,
    "STATUS_VOUT": 0x7A,
    "STATUS_IOUT": 0x7B,
    "STATUS_INPUT": 0x7C,
    "STATUS_TEMPERATURE": 0x7D,
    "STATUS_CML": 0x7E,
    "READ_VIN": 0x88,
    "READ_IIN": 0x89,
    "READ_VOUT": 0x8B,
    "READ_IOUT": 0x8C,
    "READ_TEMPERATURE_1": 0x8D,
    "READ_FAN_SPEED_1": 0x90,
    "READ_POUT": 0x96,
    "READ_PIN": 0x97,
    "PMBUS_REVISION": 0x98,
    "MFR_ID": 0x99,
    "MFR_MODEL": 0x9A,
}

# Bit number -> (name, what an operator reads). Part II 17.1 (STATUS_BYTE) and 17.2.
STATUS_WORD_BITS = {
    0: ("NONE_OF_THE_ABOVE", "other fault or warning"),
    1: ("CML", "communication/memory/logic fault"),
    2: ("TEMPERATURE", "temperature warning or fault"),
    3: ("VIN_UV_FAULT", "input under-voltage fault"),
    4: ("IOUT_OC_FAULT", "output over-current fault"),
    5: ("VOUT_OV_FAULT", "output over-voltage fault"),
    6: ("OFF", "output off"),
    7: ("BUSY", "busy, not accepting commands"),
    8: ("UNKNOWN", "unknown fault"),
    9: ("OTHER", "other fault (see STATUS_OTHER)"),
    10: ("FANS", "fan fault or warning"),
    11: ("POWER_GOOD_N", "power not good"),
    12: ("MFR", "manufacturer-specific fault"),
    13: ("INPUT", "input fault or warning"),
    14: ("IOUT_POUT", "output current/power fault or warning"),
    15: ("VOUT", "output voltage fault or warning"),
}

# Detail registers, Part II 17.3-17.7: bit -> (name, words, latched fault?). A fault turns
# the output off by itself; a warning does not.
DETAIL_BITS = {
    "vout": (
        StatusVout,
        {
            7: ("OV_FAULT", "output over-voltage fault", True),
            6: ("OV_WARNING", "output over-voltage warning", False),
            5: ("UV_WARNING", "output under-voltage warning", False),
            4: ("UV_FAULT", "output under-voltage fault", True),
            3: ("VOUT_MAX_MIN_WARNING", "output voltage command clamped to VOUT_MAX/MIN", False),
            2: ("TON_MAX_FAULT", "output failed to rise in time", True),
            1: ("TOFF_MAX_WARNING", "output failed to fall in time", False),
            0: ("TRACKING_ERROR", "output tracking error", False),
        },
    ),
    "iout": (
        StatusIout,
        {
            7: ("OC_FAULT", "output over-current fault", True),
            6: ("OC_LV_FAULT", "output over-current with low-voltage shutdown", True),
            5: ("OC_WARNING", "output over-current warning", False),
            4: ("UC_FAULT", "output under-current fault", True),
            3: ("CURRENT_SHARE_FAULT", "current share fault", False),
            2: ("POWER_LIMITING", "in power-limiting mode", False),
            1: ("POUT_OP_FAULT", "output over-power fault", True),
            0: ("POUT_OP_WARNING", "output over-power warning", False),
        },
    ),
    "input": (
        StatusInput,
        {
            7: ("VIN_OV_FAULT", "input over-voltage fault", True),
            6: ("VIN_OV_WARNING", "input over-voltage warning", False),
            5: ("VIN_UV_WARNING", "input under-voltage warning", False),
            4: ("VIN_UV_FAULT", "input under-voltage fault", True),
            3: ("UNIT_OFF_LOW_INPUT", "unit off for low input voltage", True),
            2: ("IIN_OC_FAULT", "input over-current fault", True),
            1: ("IIN_OC_WARNING", "input over-current warning", False),
            0: ("PIN_OP_WARNING", "input over-power warning", False),
        },
    ),
    "temperature": (
        StatusTemperature,
        {
            7: ("OT_FAULT", "over-temperature fault", True),
            6: ("OT_WARNING", "over-temperature warning", False),
            5: ("UT_WARNING", "under-temperature warning", False),
            4: ("UT_FAULT", "under-temperature fault", True),
        },
    ),
    "cml": (
        StatusCml,
        {
            7: ("INVALID_COMMAND", "received an invalid or unsupported command", False),
            6: ("INVALID_DATA", "received invalid or unsupported data", False),
            5: ("PEC_FAILED", "received a message with a bad PEC (bus noise?)", False),
            4: ("MEMORY_FAULT", "memory fault", False),
            3: ("PROCESSOR_FAULT", "processor fault", False),
            1: ("OTHER_COMMUNICATION_FAULT", "other communication fault", False),
            0: ("OTHER_MEMORY_LOGIC_FAULT", "other memory or logic fault", False),
        },
    ),
}
SUMMARY_BIT = {"vout": 15, "iout": 14, "input": 13, "temperature": 2, "cml": 1}

LINEAR11 = [  # (word, value): 5-bit exponent above an 11-bit mantissa, both signed
    (0xF398, 230.0),  # N = -2, Y = 920
    (0xD2B0, 10.75),  # N = -6, Y = 688
    (0x126A, 2472.0),  # N = 2, Y = 618
    (0xE2C8, 44.5),  # N = -4, Y = 712
    (0xE294, 41.25),  # N = -4, Y = 660
    (0x1B97, 7352.0),  # N = 3, Y = 919
    (0x0001, 1.0),  # N = 0, Y = 1
    (0x8001, 2.0**-16),  # N = -16, the smallest exponent
    (0x7BFF, 1023.0 * 2**15),  # N = 15, Y = 1023: the largest value
    (0x07FF, -1.0),  # N = 0, Y = -1
    (0xE7FF, -0.0625),  # N = -4, Y = -1
    (0x0400, -1024.0),  # N = 0, Y = -1024: the most negative mantissa
]
# Values the encoder must put in the most precise word (the smallest exponent that fits).
LINEAR11_MOST_PRECISE = [word for word, value in LINEAR11[:6]]

VOUT_MODES = [(0x17, -9), (0x16, -10), (0x14, -12), (0x00, 0), (0x0F, 15), (0x10, -16)]
NOT_LINEAR_MODES = [0x20, 0x37, 0x40, 0x5F, 0x60, 0x80, 0xE0, 0xFF]  # VID, DIRECT, half, …

LINEAR16 = [  # (word, exponent, value)
    (0x1B00, -9, 13.5),
    (0xD800, -10, 54.0),
    (0xC000, -12, 12.0),
    (0xFFFF, -9, 65535 / 512),
    (0x0003, 2, 12.0),
]

# Our hot-swap controller's datasheet: (m, b, R) per reading, and one worked example each.
HOTSWAP_DIRECT = {  # (m, b, R), one word and its value, the value of one count
    "READ_VIN": ((6200, 0, -2), 0x0D14, 54.0, 0.0161),  # (6200·54)/100 = 3348
    "READ_VOUT": ((6250, 0, -2), 0x0D2F, 54.0, 0.0160),  # 3375
    "READ_IOUT": ((6000, -200, -2), 0x0706, 30.0, 0.0167),  # (6000·30 - 200)/100 = 1798
    "READ_PIN": ((9000, 0, -3), 0x38F4, 1620.0, 0.111),  # 9000·1620/1000 = 14580
}

# -- a bus that replays captured bytes -----------------------------------------------------

PSU, HOTSWAP, DCDC = 0x58, 0x10, 0x20

PSU_CAPTURE = {  # command -> bytes read after it (data, then PEC)
    0x20: "16 E3",  # VOUT_MODE: LINEAR16, N = -10
    0x88: "98 F3 5F",  # READ_VIN 230.0 V
    0x89: "B0 D2 A8",  # READ_IIN 10.75 A
    0x97: "6A 12 7D",  # READ_PIN 2472 W
    0x8B: "00 D8 FD",  # READ_VOUT 54.0 V (LINEAR16)
    0x8C: "C8 E2 7C",  # READ_IOUT 44.5 A
    0x96: "59 12 AD",  # READ_POUT 2404 W
    0x8D: "94 E2 9A",  # READ_TEMPERATURE_1 41.25 °C
    0x90: "97 1B DD",  # READ_FAN_SPEED_1 7352 rpm
    0x99: "06 48 42 2D 50 53 55 B3",  # MFR_ID block "HB-PSU"
    0x9A: "09 50 53 55 35 30 30 30 2D 48 D3",  # MFR_MODEL block "PSU5000-H"
}
HOTSWAP_CAPTURE = {
    0x88: "14 0D ED",  # READ_VIN 54.0 V (DIRECT)
    0x8B: "2F 0D B9",  # READ_VOUT 54.0 V
    0x8C: "06 07 FE",  # READ_IOUT 30.0 A
    0x97: "F4 38 90",  # READ_PIN 1620 W
    0x8D: "F8 E2 9F",  # READ_TEMPERATURE_1 47.5 °C (LINEAR11)
    0x79: "00 08 E0",  # STATUS_WORD: POWER_GOOD# only
}
DCDC_CAPTURE = {
    0x20: "17 F3",  # VOUT_MODE: LINEAR16, N = -9
    0x79: "41 88 4E",  # STATUS_WORD 0x8841: VOUT, POWER_GOOD#, OFF, NONE_OF_THE_ABOVE
    0x7A: "90 CC",  # STATUS_VOUT: OV_FAULT and UV_FAULT
}


class WireCapture:
    """Answers reads from captured bytes (0xFF past them, as a device does) and records
    writes; a command it has no capture for is NACKed, so a wrong command code fails."""

    def __init__(self, devices: dict[int, dict[int, str]]) -> None:
        self.devices = {
            address: {command: bytes.fromhex(text) for command, text in capture.items()}
            for address, capture in devices.items()
        }
        self.writes: list[tuple[int, bytes]] = []
        self.reads: list[tuple[int, int, int]] = []  # address, command, bytes read

    def i2c_rdwr(self, *msgs: i2c_msg) -> None:
        if len(msgs) == 1 and not msgs[0].flags & I2C_M_RD:
            self.writes.append((msgs[0].addr, ctypes.string_at(msgs[0].buf, msgs[0].len)))
            return
        request, response = msgs
        command = ctypes.string_at(request.buf, request.len)[0]
        self.reads.append((request.addr, command, response.len))
        data = self.devices.get(request.addr, {}).get(command)
        if data is None:
            raise OSError(errno.EREMOTEIO, "Remote I/O error")
        reply = data[: response.len].ljust(response.len, b"\xff")
        ctypes.memmove(response.buf, reply, response.len)

    # The PMBus drivers build every transaction from i2c_rdwr; nothing else is spoken.
    def read_byte_data(self, i2c_addr: int, register: int) -> int:
        raise AssertionError("PMBus drivers use i2c_rdwr only")

    def write_byte_data(self, i2c_addr: int, register: int, value: int) -> None:
        raise AssertionError("PMBus drivers use i2c_rdwr only")

    def read_word_data(self, i2c_addr: int, register: int) -> int:
        raise AssertionError("PMBus drivers use i2c_rdwr only")

    def write_word_data(self, i2c_addr: int, register: int, value: int) -> None:
        raise AssertionError("PMBus drivers use i2c_rdwr only")

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        raise AssertionError("PMBus drivers use i2c_rdwr only")

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Sequence[int]) -> None:
        raise AssertionError("PMBus drivers use i2c_rdwr only")

    def close(self) -> None:
        pass


def envelope_with_slot(slot: int) -> SafetyEnvelope:
    envelope = SafetyEnvelope(FanLimits(0.2, 1.0), BoardLimits(11.0, 15.5, 50, 800, 1800), 4500)
    envelope.admit_board(slot, BoardLimits(12.0, 14.5, 400, 650, 1600))
    return envelope


# -- tables --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "code"), COMMAND_CODES.items())
def test_command_codes_are_the_specifications(name: str, code: int) -> None:
    assert Cmd[name] == code


@pytest.mark.parametrize("bit", sorted(STATUS_WORD_BITS))
def test_each_status_word_bit_is_where_the_specification_puts_it_and_has_its_words(
    bit: int,
) -> None:
    name, words = STATUS_WORD_BITS[bit]
    assert StatusWord[name] == 1 << bit
    assert Status.decode(1 << bit).problems() == (words,)


@pytest.mark.parametrize(
    ("register", "bit"),
    [(register, bit) for register, (_, bits) in DETAIL_BITS.items() for bit in bits],
)
def test_each_detail_bit_is_where_the_specification_puts_it_and_only_faults_are_faults(
    register: str, bit: int
) -> None:
    flags, bits = DETAIL_BITS[register]
    name, words, latched = bits[bit]
    assert flags[name] == 1 << bit
    status = Status.decode(1 << SUMMARY_BIT[register], **{register: 1 << bit})
    assert status.problems() == (words,)  # the summary bit adds nothing the detail says
    assert status.faults() == ((words,) if latched else ())


def test_unassigned_bits_are_reported_not_dropped() -> None:
    status = Status.decode(0x0001, temperature=0x0F)
    assert status.problems() == ("reserved STATUS_TEMPERATURE bits 0x0F",)
    assert Status.decode(0, cml=0x04).problems() == ("reserved STATUS_CML bits 0x04",)


def test_power_good_and_off_are_read_from_their_own_bits() -> None:
    assert Status.decode(0x0000).power_good and not Status.decode(0x0000).off
    assert not Status.decode(0x0800).power_good
    assert Status.decode(0x0040).off and Status.decode(0x0040).power_good
    assert Status.decode(0x0840).ok  # off and so not good: nothing to report
    assert not Status.decode(0x0841).ok


@pytest.mark.parametrize(("word", "value"), LINEAR11)
def test_linear11_words_decode_as_the_specification_defines(word: int, value: float) -> None:
    assert linear11_decode(word) == value


@pytest.mark.parametrize("word", LINEAR11_MOST_PRECISE)
def test_the_simulated_parts_report_linear11_in_the_most_precise_word(word: int) -> None:
    assert sim_wire.linear11(linear11_decode(word)) == word


def test_linear11_has_no_word_beyond_its_range() -> None:
    assert sim_wire.linear11(-1024.0 * 2**15) == 0x7C00  # N = 15, Y = -1024
    with pytest.raises(ValueError, match="LINEAR11 cannot hold"):
        sim_wire.linear11(2.0**25)


@pytest.mark.parametrize(("mode", "exponent"), VOUT_MODES)
def test_vout_mode_carries_the_linear16_exponent(mode: int, exponent: int) -> None:
    assert vout_mode_exponent(mode) == exponent


@pytest.mark.parametrize("mode", NOT_LINEAR_MODES)
def test_vout_modes_other_than_linear_are_refused(mode: int) -> None:
    with pytest.raises(ProtocolError, match="not linear"):
        vout_mode_exponent(mode)


@pytest.mark.parametrize("mode", [-1, 0x100])
def test_a_vout_mode_that_is_not_a_byte_is_a_protocol_error(mode: int) -> None:
    with pytest.raises(ProtocolError, match="is not a byte"):
        vout_mode_exponent(mode)


def test_linear16_refuses_what_sixteen_bits_cannot_carry() -> None:
    assert linear16_encode(65535 / 512, -9) == 0xFFFF
    for value in (128.0, -0.01, math.nan, math.inf):
        with pytest.raises(ValueError, match="LINEAR16 cannot encode"):
            linear16_encode(value, -9)


def test_direct_coefficients_need_a_slope() -> None:
    with pytest.raises(ValueError, match="m must not be 0"):
        DirectCoefficients(m=0, b=0, r=0)


@pytest.mark.parametrize(("word", "exponent", "value"), LINEAR16)
def test_linear16_words_decode_and_encode_as_the_specification_defines(
    word: int, exponent: int, value: float
) -> None:
    assert linear16_decode(word, exponent) == value
    assert linear16_encode(value, exponent) == word


@pytest.mark.parametrize("reading", sorted(HOTSWAP_DIRECT))
def test_hot_swap_direct_coefficients_are_the_datasheets(reading: str) -> None:
    (m, b, r), word, value, one_count = HOTSWAP_DIRECT[reading]
    coefficients = HOTSWAP_COEFFICIENTS[Cmd[reading]]
    assert coefficients == DirectCoefficients(m=m, b=b, r=r)
    assert coefficients.resolution == pytest.approx(one_count, rel=0.01)
    assert direct_decode(word, coefficients) == pytest.approx(value, abs=1e-9)
    assert sim_wire.direct(value, sim_wire.HOTSWAP_DIRECT[sim_wire.Cmd[reading]]) == word


def test_direct_words_are_twos_complement() -> None:
    current = DirectCoefficients(m=6000, b=-200, r=-2)
    assert direct_decode(0xFFFE, current) == pytest.approx(0.0)  # Y = -2
    assert direct_decode(0x8000, DirectCoefficients(m=1, b=0, r=0)) == -32768.0
    assert sim_wire.direct(-1.0, sim_wire.Direct(1, 0, 0)) == 0xFFFF


def test_pec_is_the_smbus_crc8() -> None:
    assert crc8(b"123456789") == 0xF4  # the CRC-8/SMBus check value
    assert crc8(b"") == 0x00
    assert crc8(bytes.fromhex("B0 88 B1 98 F3")) == 0x5F  # the PSU's READ_VIN below


# -- the drivers on the wire -----------------------------------------------------------------


def read_everything(psu: Psu) -> None:
    psu.read_telemetry()
    psu.identity()


def test_psu_telemetry_decodes_a_literal_wire_capture() -> None:
    t = Psu(WireCapture({PSU: PSU_CAPTURE}), PSU).read_telemetry()
    assert (t.vin_v, t.iin_a, t.pin_w, t.vout_v) == (230.0, 10.75, 2472.0, 54.0)
    assert (t.iout_a, t.pout_w, t.temp_c, t.fan_rpm) == (44.5, 2404.0, 41.25, 7352.0)


def test_psu_identity_is_read_from_literal_blocks() -> None:
    identity = Psu(WireCapture({PSU: PSU_CAPTURE}), PSU).identity()
    assert (identity.mfr_id, identity.mfr_model) == ("HB-PSU", "PSU5000-H")


@pytest.mark.parametrize("command", sorted(PSU_CAPTURE))
def test_drivers_check_pec_unless_told_not_to(command: int) -> None:
    corrupted = dict(PSU_CAPTURE)
    raw = bytes.fromhex(corrupted[command])
    corrupted[command] = (raw[:-1] + bytes((raw[-1] ^ 0x01,))).hex(" ")
    bus = WireCapture({PSU: corrupted})
    with pytest.raises(ProtocolError, match="PEC mismatch"):
        read_everything(Psu(bus, PSU))  # PEC is the default
    read_everything(Psu(bus, PSU, pec=False))


def test_hot_swap_telemetry_decodes_a_literal_wire_capture() -> None:
    bus = WireCapture({HOTSWAP: HOTSWAP_CAPTURE})
    hotswap = HotSwap(bus, 1, HOTSWAP, envelope_with_slot(1))
    t = hotswap.read_telemetry()
    assert t.vin_v == pytest.approx(54.0) and t.vout_v == pytest.approx(54.0)
    assert t.iout_a == pytest.approx(30.0) and t.pin_w == pytest.approx(1620.0)
    assert t.temp_c == 47.5
    assert not hotswap.power_good()


def test_switching_writes_operation_on_and_off_with_their_pec() -> None:
    bus = WireCapture({HOTSWAP: HOTSWAP_CAPTURE, DCDC: DCDC_CAPTURE})
    envelope = envelope_with_slot(1)
    hotswap = HotSwap(bus, 1, HOTSWAP, envelope)
    dcdc = DcDc(bus, 1, DCDC, envelope)
    hotswap.on()
    dcdc.on()
    dcdc.off()
    hotswap.off()
    assert bus.writes == [
        (HOTSWAP, bytes.fromhex("01 80 DF")),
        (DCDC, bytes.fromhex("01 80 1A")),
        (DCDC, bytes.fromhex("01 00 93")),
        (HOTSWAP, bytes.fromhex("01 00 56")),
    ]


def test_dc_dc_vout_command_is_a_linear16_word_little_endian_with_pec() -> None:
    bus = WireCapture({DCDC: DCDC_CAPTURE})
    assert DcDc(bus, 1, DCDC, envelope_with_slot(1)).set_vout(13.5) == 13.5
    assert bus.writes == [(DCDC, bytes.fromhex("21 00 1B F2"))]


def test_clear_faults_is_a_send_byte_with_pec() -> None:
    bus = WireCapture({PSU: PSU_CAPTURE, DCDC: DCDC_CAPTURE})
    Psu(bus, PSU).clear_faults()
    DcDc(bus, 1, DCDC, envelope_with_slot(1)).clear_faults()
    assert bus.writes == [(PSU, bytes.fromhex("03 46")), (DCDC, bytes.fromhex("03 52"))]


def test_dc_dc_output_voltage_faults_reach_the_fault_list() -> None:
    status = DcDc(WireCapture({DCDC: DCDC_CAPTURE}), 1, DCDC, envelope_with_slot(1)).status()
    assert status.faults() == ("output over-voltage fault", "output under-voltage fault")
    assert status.off and not status.power_good
    assert "output over-voltage fault" in status.describe()


def test_psu_input_faults_reach_the_fault_list() -> None:
    capture = {**PSU_CAPTURE, 0x79: "08 20 9C", 0x7C: "30 CF"}  # INPUT|VIN_UV; UV fault+warn
    status = Psu(WireCapture({PSU: capture}), PSU).status()
    assert status.faults() == ("input under-voltage fault",)
    assert status.problems() == ("input under-voltage warning", "input under-voltage fault")


def test_a_device_missing_from_the_bus_is_a_hardware_error() -> None:
    with pytest.raises(HardwareError, match=r"PSU \(0x59\) READ_VIN"):
        Psu(WireCapture({PSU: PSU_CAPTURE}), 0x59).read_telemetry()


def test_a_status_built_from_its_word_alone_has_clear_detail_registers() -> None:
    status = Status(StatusWord(0x0040))
    assert (status.vout, status.iout, status.input, status.temperature, status.cml) == (0,) * 5
    assert status.problems() == ("output off",) and status.faults() == ()


def test_a_read_takes_exactly_its_data_and_the_pec_byte_off_the_wire() -> None:
    bus = WireCapture({PSU: PSU_CAPTURE})
    Psu(bus, PSU).read_telemetry()
    Psu(bus, PSU, pec=False).read_telemetry()
    with_pec, without = bus.reads[:9], bus.reads[9:]
    assert (PSU, 0x88, 3) in with_pec and (PSU, 0x20, 2) in with_pec
    assert (PSU, 0x88, 2) in without and (PSU, 0x20, 1) in without
    bus.reads.clear()
    Psu(bus, PSU).identity()
    assert bus.reads == [(PSU, 0x99, 34), (PSU, 0x9A, 34)]  # count, 32 bytes at most, PEC


@pytest.mark.parametrize("address", [0x02, 0x78, 0x80])
def test_an_address_outside_the_7_bit_device_range_is_refused(address: int) -> None:
    with pytest.raises(ValueError, match="is not a 7-bit device address"):
        Psu(WireCapture({}), address)


def test_the_first_and_last_device_addresses_are_accepted() -> None:
    for address in (0x03, 0x77):
        assert PMBusDevice(WireCapture({}), address, "edge", pec=True).address == address


def test_a_write_to_a_device_that_is_gone_is_a_hardware_error() -> None:
    class Gone(WireCapture):
        def i2c_rdwr(self, *msgs: i2c_msg) -> None:
            raise OSError(errno.EREMOTEIO, "Remote I/O error")

    with pytest.raises(HardwareError, match=r"slot 1 DC-DC \(0x20\) OPERATION: Remote I/O"):
        DcDc(Gone({}), 1, DCDC, envelope_with_slot(1)).off()
    with pytest.raises(HardwareError, match=r"^slot 1 hot-swap \(0x10\) OPERATION: Remote I/O"):
        HotSwap(Gone({}), 1, HOTSWAP, envelope_with_slot(1)).off()
    with pytest.raises(HardwareError, match=r"^PSU B \(0x58\) CLEAR_FAULTS: Remote I/O"):
        Psu(Gone({}), PSU, name="PSU B").clear_faults()


def block(text: bytes, command: int) -> str:
    data = bytes((len(text),)) + text
    return (data + bytes((sim_wire.pec_of_read(PSU, command, data),))).hex(" ")


def test_a_block_of_32_bytes_is_read_and_longer_asks_are_refused() -> None:
    longest = b"PSU 5000~" + b"M" * 22 + b" "  # trailing padding dropped, the rest kept
    bus = WireCapture({PSU: {**PSU_CAPTURE, 0x9A: block(longest, 0x9A)}})
    assert Psu(bus, PSU).identity().mfr_model == "PSU 5000~" + "M" * 22
    device = PMBusDevice(bus, PSU, "PSU", pec=True)
    for size in (0, 33):
        with pytest.raises(ValueError, match="block length"):
            device.read_block(0x9A, size)
    assert device.read_block(0x99, 6) == b"HB-PSU"
    one = WireCapture({PSU: {0x99: block(b"X", 0x99)}})
    assert PMBusDevice(one, PSU, "PSU", pec=True).read_block(0x99, 1) == b"X"
    with pytest.raises(ProtocolError, match=r"block count 6 outside 1\.\.5"):
        device.read_block(0x99, 5)


@pytest.mark.parametrize("bad", [b"HB\x7fPSU", b"HB\x1fPSU"])
def test_text_with_a_byte_outside_printable_ascii_is_refused(bad: bytes) -> None:
    bus = WireCapture({PSU: {**PSU_CAPTURE, 0x99: block(bad, 0x99)}})
    with pytest.raises(ProtocolError, match="is not printable ASCII"):
        Psu(bus, PSU).identity()


@pytest.mark.parametrize("volts", [12.0, 12.5, 13.0])
def test_a_rail_voltage_on_a_limit_is_written_exactly(volts: float) -> None:
    bus = WireCapture({DCDC: DCDC_CAPTURE})
    envelope = envelope_with_slot(1)
    envelope.admit_board(1, BoardLimits(volts if volts < 13 else 12.0, volts, 400, 650, 1600))
    assert DcDc(bus, 1, DCDC, envelope).set_vout(volts) == volts
    ((_, written),) = bus.writes
    assert int.from_bytes(written[1:3], "little") == round(volts * 512)


def test_a_rail_voltage_between_words_is_rounded_inside_the_limits() -> None:
    envelope = envelope_with_slot(1)
    envelope.admit_board(1, BoardLimits(12.301, 12.31, 400, 650, 1600))
    bus = WireCapture({DCDC: DCDC_CAPTURE})
    written = DcDc(bus, 1, DCDC, envelope).set_vout(12.301)
    # 12.301 V is 6298.1 counts: the nearest word (6298) lies below the minimum, so the
    # next one up is written.
    assert written == 6299 / 512
