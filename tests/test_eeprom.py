"""The 24C02 driver against the simulated chip, and the identity record it carries."""

from __future__ import annotations

import binascii
import dataclasses
import datetime
import errno
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smbus2 import i2c_msg

from hashbay.drivers.eeprom import (
    RECORD_LEN,
    SIZE,
    BoardIdentity,
    Eeprom24C02,
    IdentityError,
    decode_identity,
    encode_identity,
)
from hashbay.drivers.envelope import BoardLimits, FanLimits, SafetyEnvelope
from hashbay.drivers.errors import HardwareError
from hashbay.tools.sim.i2c import SimI2CBus
from hashbay.tools.sim.i2c_devices import SimEeprom

ADDR = 0x50

IDENTITY = BoardIdentity(
    model="HB-S21-76",
    serial="HB24A0001234",
    chip_model=0x1368,
    chip_count=76,
    chips_per_domain=4,
    manufactured=datetime.date(2024, 11, 5),
    hardware_revision=3,
    nominal_vout_mv=13_200,
    nominal_freq_mhz=525,
    vout_min_mv=12_000,
    vout_max_mv=14_500,
    freq_min_mhz=400,
    freq_max_mhz=650,
    power_max_w=1600,
)


class Clock:
    """Simulated time that only moves when the driver sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def attach(clock: Clock, contents: bytes = b"\xff" * SIZE) -> tuple[SimI2CBus, SimEeprom]:
    bus = SimI2CBus()
    chip = SimEeprom(contents, clock=clock)
    bus.attach(ADDR, chip)
    return bus, chip


def eeprom(bus: SimI2CBus, clock: Clock) -> Eeprom24C02:
    return Eeprom24C02(bus, ADDR, "slot 2 EEPROM", sleep=clock.sleep)


def with_crc(record: bytes) -> bytes:
    body = record[: RECORD_LEN - 2]
    return (body + binascii.crc_hqx(body, 0xFFFF).to_bytes(2, "big")).ljust(SIZE, b"\xff")


# -- the chip ----------------------------------------------------------------------------


def test_writes_are_split_at_page_boundaries(clock: Clock) -> None:
    bus, chip = attach(clock)
    data = bytes(range(100, 120))
    eeprom(bus, clock).write(5, data)
    assert chip.memory[5:25] == data
    assert chip.writes == 4  # 5-7, 8-15, 16-23, 24
    assert eeprom(bus, clock).read(5, 20) == data


def test_the_chip_wraps_a_page_write_inside_its_page(clock: Clock) -> None:
    bus, chip = attach(clock)
    bus.i2c_rdwr(i2c_msg.write(ADDR, bytes((4, *range(1, 11)))))  # 10 bytes from 4
    assert chip.memory[0:8] == bytes((5, 6, 7, 8, 9, 10, 3, 4))  # 9, 10 overwrote 1, 2
    assert chip.memory[8] == 0xFF


def test_sequential_reads_wrap_at_the_end_of_the_chip(clock: Clock) -> None:
    bus, _ = attach(clock, bytes(range(256)))
    assert eeprom(bus, clock).read(250, 10) == bytes((250, 251, 252, 253, 254, 255, 0, 1, 2, 3))
    assert bus.read_byte(ADDR) == 4  # current-address read carries on from there


def test_the_chip_ignores_its_address_during_the_write_cycle(clock: Clock) -> None:
    bus, _ = attach(clock)
    bus.i2c_rdwr(i2c_msg.write(ADDR, b"\x00\x01"))
    with pytest.raises(OSError, match="Remote I/O error") as caught:
        bus.read_byte_data(ADDR, 0)
    assert caught.value.errno == errno.EREMOTEIO
    clock.now += 0.005
    assert bus.read_byte_data(ADDR, 0) == 1


def test_the_driver_ack_polls_through_the_write_cycle(clock: Clock) -> None:
    bus, _ = attach(clock)
    eeprom(bus, clock).write(0, b"\x42")
    assert 5 <= clock.sleeps <= 6  # 1 ms polls across the 5 ms cycle


def test_a_chip_that_never_finishes_writing_is_a_hardware_error(clock: Clock) -> None:
    bus, _ = attach(clock)
    stuck = Eeprom24C02(bus, ADDR, "slot 2 EEPROM", sleep=lambda _: None, max_polls=7)
    with pytest.raises(HardwareError, match=r"slot 2 EEPROM \(0x50\): still busy .* at 0"):
        stuck.write(0, b"\x42")


def test_a_missing_chip_is_a_hardware_error_naming_it(clock: Clock) -> None:
    bus, _ = attach(clock)
    bus.detach(ADDR)
    with pytest.raises(HardwareError, match=r"slot 2 EEPROM \(0x50\) read @0: Remote I/O"):
        eeprom(bus, clock).read_identity()


# -- the identity ------------------------------------------------------------------------


def test_identity_round_trips_through_real_page_writes(clock: Clock) -> None:
    bus, chip = attach(clock)
    device = eeprom(bus, clock)
    device.write_identity(IDENTITY)
    assert chip.writes == SIZE // 8
    assert device.read_identity() == IDENTITY


def test_identity_layout_matches_the_documented_table() -> None:
    image = encode_identity(IDENTITY)
    assert len(image) == SIZE and RECORD_LEN == 62
    assert image[0:5] == b"HBAY\x01"
    assert image[5:21] == b"HB-S21-76".ljust(16, b"\x00")
    assert image[21:37] == b"HB24A0001234".ljust(16, b"\x00")
    assert image[37:41] == bytes((0x13, 0x68, 76, 4))
    assert image[41:46] == bytes((0x07, 0xE8, 11, 5, 3))
    assert image[58:60] == (1600).to_bytes(2, "big")
    assert image[60:62] == binascii.crc_hqx(image[:60], 0xFFFF).to_bytes(2, "big")
    assert image[62:] == b"\xff" * (SIZE - 62)


def test_identity_gives_the_module_limits_for_the_envelope() -> None:
    limits = IDENTITY.limits
    assert limits == BoardLimits(12.0, 14.5, 400.0, 650.0, 1600.0)
    envelope = SafetyEnvelope(FanLimits(0.2, 1.0), BoardLimits(11.0, 15.5, 50, 800, 1800), 4500)
    assert envelope.admit_board(2, limits) == limits
    assert IDENTITY.domains == 19


@pytest.mark.parametrize("fill", [0xFF, 0x00])
def test_a_blank_eeprom_needs_programming(clock: Clock, fill: int) -> None:
    bus, _ = attach(clock, bytes((fill,)) * SIZE)
    with pytest.raises(
        IdentityError,
        match=r"^slot 2 EEPROM \(0x50\): blank EEPROM: module has no identity, "
        r"needs programming at the service bench$",
    ):
        eeprom(bus, clock).read_identity()


def test_a_flipped_byte_is_a_crc_error(clock: Clock) -> None:
    image = bytearray(encode_identity(IDENTITY))
    image[40] ^= 0x04
    bus, _ = attach(clock, bytes(image))
    with pytest.raises(IdentityError, match=r"corrupt EEPROM: CRC mismatch .*service bench"):
        eeprom(bus, clock).read_identity()


def corrupt(offset: int, value: bytes) -> bytes:
    image = bytearray(encode_identity(IDENTITY))
    image[offset : offset + len(value)] = value
    return with_crc(bytes(image))


@pytest.mark.parametrize(
    ("image", "words"),
    [
        (b"HBAX" + encode_identity(IDENTITY)[4:], "magic b'HBAX'"),
        (corrupt(4, b"\x02"), "layout version 2 unknown"),
        (corrupt(39, b"\x00"), "chip count 0"),
        (corrupt(40, b"\x05"), "5 chips per domain does not divide 76"),
        (corrupt(50, (15_000).to_bytes(2, "big")), "voltage limits 15000..14500"),
        (corrupt(54, (700).to_bytes(2, "big")), "frequency limits 700..650"),
        (corrupt(5, b"HB\x07S21"), "model .* is not printable ASCII"),
        (corrupt(5, b"HB\x7fS21"), r"model b'HB\\x7fS21-76\\x00.*' is not printable ASCII"),
        (corrupt(5, b"HB\x1fS21"), r"model b'HB\\x1fS21-76\\x00.*' is not printable ASCII"),
        (corrupt(21, b"\x00" * 16), "serial .* is not printable ASCII"),
        (corrupt(43, b"\x02\x1e"), "manufacture date 2024-02-30 does not exist"),
        (corrupt(41, b"\x07\x00"), "before 2000"),
        (corrupt(58, b"\x00\x00"), "power maximum is 0 W"),
        (encode_identity(IDENTITY)[:40], "only 40 bytes"),
    ],
)
def test_impossible_identities_are_corrupt(image: bytes, words: str) -> None:
    with pytest.raises(IdentityError, match=rf"^corrupt EEPROM: .*{words}"):
        decode_identity(image)


def test_a_write_protected_chip_is_noticed(clock: Clock) -> None:
    bus, chip = attach(clock)
    chip.write_protected = True
    with pytest.raises(HardwareError, match="write-protect"):
        eeprom(bus, clock).write_identity(IDENTITY)


def test_an_identity_that_cannot_exist_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="chip count"):
        dataclasses.replace(IDENTITY, chip_count=0)
    with pytest.raises(ValueError, match="model"):
        dataclasses.replace(IDENTITY, model="x" * 17)


@settings(max_examples=300)
@given(st.binary(min_size=SIZE, max_size=SIZE))
def test_any_256_bytes_decode_or_raise_identity_error(image: bytes) -> None:
    try:
        identity = decode_identity(image)
    except IdentityError:
        return
    assert encode_identity(identity)[:RECORD_LEN] == image[:RECORD_LEN]


@settings(max_examples=300)
@given(st.binary(min_size=RECORD_LEN - 7, max_size=RECORD_LEN - 7))
def test_any_fields_under_a_valid_crc_decode_or_raise_identity_error(fields: bytes) -> None:
    image = with_crc(b"HBAY\x01" + fields + b"\x00\x00")
    try:
        identity = decode_identity(image)
    except IdentityError as exc:
        assert str(exc).startswith("corrupt EEPROM: ")
        return
    assert identity.limits.vout_min_v <= identity.limits.vout_max_v


text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=16)


@st.composite
def identities(draw: st.DrawFn) -> BoardIdentity:
    chips_per_domain = draw(st.integers(1, 16))
    vmin = draw(st.integers(1, 20_000))
    vnom = draw(st.integers(vmin, 30_000))
    fmin = draw(st.integers(1, 1_000))
    fnom = draw(st.integers(fmin, 2_000))
    return BoardIdentity(
        model=draw(text),
        serial=draw(text),
        chip_model=draw(st.integers(0, 0xFFFF)),
        chip_count=chips_per_domain * draw(st.integers(1, 255 // chips_per_domain)),
        chips_per_domain=chips_per_domain,
        manufactured=draw(st.dates(datetime.date(2000, 1, 1))),
        hardware_revision=draw(st.integers(0, 255)),
        nominal_vout_mv=vnom,
        nominal_freq_mhz=fnom,
        vout_min_mv=vmin,
        vout_max_mv=draw(st.integers(vnom, 0xFFFF)),
        freq_min_mhz=fmin,
        freq_max_mhz=draw(st.integers(fnom, 0xFFFF)),
        power_max_w=draw(st.integers(1, 0xFFFF)),
    )


@given(identities())
def test_every_valid_identity_round_trips(identity: BoardIdentity) -> None:
    assert decode_identity(encode_identity(identity)) == identity


@pytest.mark.parametrize(
    ("field", "too_big", "words"),
    [
        ("chip_model", 0x10000, "chip model 65536 does not fit 16 bits"),
        ("vout_max_mv", 0x10000, "voltage maximum 65536 does not fit 16 bits"),
        ("freq_max_mhz", 0x10000, "frequency maximum 65536 does not fit 16 bits"),
        ("power_max_w", 0x10000, "power maximum 65536 does not fit 16 bits"),
        ("hardware_revision", 256, "hardware revision 256 does not fit 8 bits"),
    ],
)
def test_a_field_wider_than_its_bytes_in_the_record_is_refused(
    field: str, too_big: int, words: str
) -> None:
    fields: dict[str, Any] = {field: too_big}
    with pytest.raises(ValueError, match=f"^{words}$"):
        dataclasses.replace(IDENTITY, **fields)


def test_fields_at_the_top_of_their_bytes_fit_the_record() -> None:
    widest = dataclasses.replace(
        IDENTITY, chip_model=0xFFFF, hardware_revision=255, power_max_w=0xFFFF
    )
    assert decode_identity(encode_identity(widest)) == widest


def test_a_chain_of_255_chips_is_the_longest_a_record_can_describe() -> None:
    longest = dataclasses.replace(IDENTITY, chip_count=255, chips_per_domain=5)
    assert decode_identity(encode_identity(longest)).chip_count == 255
    with pytest.raises(ValueError, match=r"chip count 256 outside 1\.\.255"):
        dataclasses.replace(IDENTITY, chip_count=256, chips_per_domain=4)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"vout_min_mv": 0}, "voltage limits 0..14500 mV"),
        ({"freq_min_mhz": 0}, "frequency limits 0..650 MHz"),
        ({"manufactured": datetime.date(1999, 12, 31)}, "before 2000"),
    ],
)
def test_limits_from_zero_and_dates_before_2000_are_refused(
    changes: dict[str, Any], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        dataclasses.replace(IDENTITY, **changes)


def test_a_record_without_its_padding_still_decodes() -> None:
    image = encode_identity(IDENTITY)
    assert decode_identity(image[:RECORD_LEN]) == IDENTITY
    with pytest.raises(IdentityError, match=f"only {RECORD_LEN - 1} bytes"):
        decode_identity(image[: RECORD_LEN - 1])
    assert dataclasses.replace(IDENTITY, manufactured=datetime.date(2000, 1, 1)).limits


# -- the chip's edges ----------------------------------------------------------------------


def test_reads_and_writes_stay_inside_the_256_byte_chip(clock: Clock) -> None:
    bus, _ = attach(clock, bytes(range(256)))
    chip = eeprom(bus, clock)
    assert chip.read(255, 1) == b"\xff"
    assert chip.read(0, 256) == bytes(range(256))
    for offset, length in ((256, 1), (-1, 1), (0, 0), (0, 257)):
        with pytest.raises(ValueError, match="outside the 256-byte chip"):
            chip.read(offset, length)
    chip.write(249, b"\x01" * 7)
    for offset, data in ((250, b"\x01" * 7), (-1, b"\x01")):
        with pytest.raises(ValueError, match="outside the chip"):
            chip.write(offset, data)


def test_a_chip_that_stays_busy_is_given_25_polls_a_millisecond_apart(clock: Clock) -> None:
    bus = SimI2CBus()
    bus.attach(ADDR, SimEeprom(b"\xff" * SIZE, clock=clock, write_cycle_s=1.0))  # dying
    with pytest.raises(
        HardwareError,
        match=r"^slot 2 EEPROM \(0x50\): still busy 25 ms after a page write at 8 \(datasheet",
    ):
        eeprom(bus, clock).write(8, b"\x42")
    assert clock.sleeps == 25
    clock.now += 1.0  # the chip finished at last
    slow = Eeprom24C02(
        bus, ADDR, "slot 2 EEPROM", sleep=clock.sleep, poll_interval_s=0.005, max_polls=150
    )
    with pytest.raises(HardwareError, match="still busy 750 ms"):
        slow.write(8, b"\x42")


def test_a_bus_error_during_a_write_or_its_polling_is_a_hardware_error(clock: Clock) -> None:
    bus, _ = attach(clock)
    bus.set_error_rate(1.0, ADDR)
    with pytest.raises(HardwareError, match=r"slot 2 EEPROM \(0x50\) write @16: Input/output"):
        eeprom(bus, clock).write(16, b"\x42")
    bus.clear_faults()

    def sleep_then_fail(seconds: float) -> None:
        bus.set_error_rate(1.0, ADDR)

    failing = Eeprom24C02(bus, ADDR, "slot 2 EEPROM", sleep=sleep_then_fail)
    with pytest.raises(HardwareError, match=r"slot 2 EEPROM \(0x50\) write poll: Input/output"):
        failing.write(16, b"\x42")
