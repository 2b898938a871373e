"""A module's 24C02 EEPROM and the identity record it carries.

The identity is what makes a module trustworthy: its chip count and, above all, its own
voltage/frequency/power limits, which feed the safety envelope. So a record that is
blank, damaged or implausible is refused with IdentityError, and the slot stays unpowered
until the module is reprogrammed at the service bench.

Identity record, layout 1 (all integers big-endian; text is printable ASCII, NUL-padded):

    offset  size  field
    0       4     magic b"HBAY"
    4       1     layout version (1)
    5       16    model, e.g. "HB-S21-76"
    21      16    serial number
    37      2     chip model, e.g. 0x1368 for BM1368
    39      1     chip count (1..255)
    40      1     chips per voltage domain (divides the chip count)
    41      2     manufacture year
    43      1     manufacture month (1..12)
    44      1     manufacture day (1..31, a real date)
    45      1     hardware revision
    46      2     nominal board voltage, mV
    48      2     nominal chip frequency, MHz
    50      2     board voltage minimum, mV
    52      2     board voltage maximum, mV
    54      2     chip frequency minimum, MHz
    56      2     chip frequency maximum, MHz
    58      2     board power maximum, W
    60      2     CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over bytes 0..59
    62      194   0xFF (unused; a later layout may grow into it)

The layout version is checked before anything else is read, so a future layout 2 can be
added beside this one while older modules stay readable.
"""

from __future__ import annotations

import binascii
import datetime
import errno
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from smbus2 import i2c_msg

from hashbay.drivers.envelope import BoardLimits
from hashbay.drivers.errors import HardwareError
from hashbay.drivers.i2c import I2CBus, message_bytes, transaction_error

SIZE = 256
PAGE_SIZE = 8
MAGIC = b"HBAY"
LAYOUT_VERSION = 1
TEXT_LEN = 16

_LAYOUT_1 = struct.Struct(">4sB16s16sHBBHBBBHHHHHHH")
RECORD_LEN = _LAYOUT_1.size + 2  # record + CRC


class IdentityError(HardwareError):
    """A module's EEPROM holds no usable identity: blank, corrupt, or from the future."""


@dataclass(frozen=True)
class BoardIdentity:
    """Who a module is and how far it may be driven, as programmed at the factory."""

    model: str
    serial: str
    chip_model: int
    chip_count: int
    chips_per_domain: int
    manufactured: datetime.date
    hardware_revision: int
    nominal_vout_mv: int
    nominal_freq_mhz: int
    vout_min_mv: int
    vout_max_mv: int
    freq_min_mhz: int
    freq_max_mhz: int
    power_max_w: int

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem:
            raise ValueError(problem)

    @property
    def domains(self) -> int:
        return self.chip_count // self.chips_per_domain

    @property
    def limits(self) -> BoardLimits:
        """What the module declares it can take, for SafetyEnvelope.admit_board."""
        return BoardLimits(
            vout_min_v=self.vout_min_mv / 1000,
            vout_max_v=self.vout_max_mv / 1000,
            freq_min_mhz=float(self.freq_min_mhz),
            freq_max_mhz=float(self.freq_max_mhz),
            power_max_w=float(self.power_max_w),
        )


def _problem(identity: BoardIdentity) -> str | None:
    """Why these fields cannot describe a real module, or None."""
    i = identity
    for what, text in (("model", i.model), ("serial", i.serial)):
        if not 1 <= len(text) <= TEXT_LEN or not all(" " <= c <= "~" for c in text):
            return f"{what} {text!r} is not 1..{TEXT_LEN} printable ASCII characters"
    u8 = range(256)
    u16 = range(0x10000)
    fields_u16 = (
        ("chip model", i.chip_model),
        ("nominal voltage", i.nominal_vout_mv),
        ("nominal frequency", i.nominal_freq_mhz),
        ("voltage minimum", i.vout_min_mv),
        ("voltage maximum", i.vout_max_mv),
        ("frequency minimum", i.freq_min_mhz),
        ("frequency maximum", i.freq_max_mhz),
        ("power maximum", i.power_max_w),
    )
    for what, value in fields_u16:
        if value not in u16:
            return f"{what} {value} does not fit 16 bits"
    if i.hardware_revision not in u8:
        return f"hardware revision {i.hardware_revision} does not fit 8 bits"
    if not 1 <= i.chip_count <= 255:
        return f"chip count {i.chip_count} outside 1..255"
    if not 1 <= i.chips_per_domain <= i.chip_count or i.chip_count % i.chips_per_domain:
        return f"{i.chips_per_domain} chips per domain does not divide {i.chip_count} chips"
    if i.manufactured.year < 2000:  # and a date's year never outgrows its 16 bits
        return f"manufacture date {i.manufactured} is before 2000"
    if not 0 < i.vout_min_mv <= i.nominal_vout_mv <= i.vout_max_mv:
        return (
            f"voltage limits {i.vout_min_mv}..{i.vout_max_mv} mV with nominal "
            f"{i.nominal_vout_mv} mV are not ordered"
        )
    if not 0 < i.freq_min_mhz <= i.nominal_freq_mhz <= i.freq_max_mhz:
        return (
            f"frequency limits {i.freq_min_mhz}..{i.freq_max_mhz} MHz with nominal "
            f"{i.nominal_freq_mhz} MHz are not ordered"
        )
    if i.power_max_w <= 0:
        return "power maximum is 0 W"
    return None


def _crc(data: bytes) -> int:
    return binascii.crc_hqx(data, 0xFFFF)


def encode_identity(identity: BoardIdentity) -> bytes:
    """The full 256-byte EEPROM image for an identity (layout 1)."""
    i = identity
    record = _LAYOUT_1.pack(
        MAGIC,
        LAYOUT_VERSION,
        i.model.encode("ascii"),
        i.serial.encode("ascii"),
        i.chip_model,
        i.chip_count,
        i.chips_per_domain,
        i.manufactured.year,
        i.manufactured.month,
        i.manufactured.day,
        i.hardware_revision,
        i.nominal_vout_mv,
        i.nominal_freq_mhz,
        i.vout_min_mv,
        i.vout_max_mv,
        i.freq_min_mhz,
        i.freq_max_mhz,
        i.power_max_w,
    )
    record += _crc(record).to_bytes(2, "big")
    return record.ljust(SIZE, b"\xff")


_BLANK = "blank EEPROM: module has no identity, needs programming at the service bench"
_CORRUPT = "corrupt EEPROM: {}; the module needs reprogramming at the service bench"


def decode_identity(data: bytes) -> BoardIdentity:
    """The identity in an EEPROM image, or IdentityError saying why there is none."""
    if len(data) < RECORD_LEN:
        raise IdentityError(_CORRUPT.format(f"only {len(data)} bytes, need {RECORD_LEN}"))
    record = bytes(data[:RECORD_LEN])
    if record in (b"\xff" * RECORD_LEN, b"\x00" * RECORD_LEN):
        raise IdentityError(_BLANK)
    if record[:4] != MAGIC:
        raise IdentityError(_CORRUPT.format(f"magic {record[:4]!r} is not {MAGIC!r}"))
    if record[4] != LAYOUT_VERSION:
        raise IdentityError(
            _CORRUPT.format(
                f"layout version {record[4]} unknown (this hashbay reads layout "
                f"{LAYOUT_VERSION}; a newer module may need a newer hashbay)"
            )
        )
    stored = int.from_bytes(record[-2:], "big")
    computed = _crc(record[:-2])
    if stored != computed:
        raise IdentityError(
            _CORRUPT.format(f"CRC mismatch (stored 0x{stored:04X}, computed 0x{computed:04X})")
        )
    fields = _LAYOUT_1.unpack(record[:-2])
    (_, _, model, serial, chip_model, chip_count, per_domain, year, month, day) = fields[:10]
    (revision, nominal_mv, nominal_mhz, vmin, vmax, fmin, fmax, power) = fields[10:]
    try:
        return BoardIdentity(
            model=_text(model, "model"),
            serial=_text(serial, "serial"),
            chip_model=chip_model,
            chip_count=chip_count,
            chips_per_domain=per_domain,
            manufactured=_date(year, month, day),
            hardware_revision=revision,
            nominal_vout_mv=nominal_mv,
            nominal_freq_mhz=nominal_mhz,
            vout_min_mv=vmin,
            vout_max_mv=vmax,
            freq_min_mhz=fmin,
            freq_max_mhz=fmax,
            power_max_w=power,
        )
    except ValueError as exc:
        raise IdentityError(_CORRUPT.format(exc)) from None


def _text(raw: bytes, what: str) -> str:
    text = raw.rstrip(b"\x00")
    if not text or any(not 0x20 <= byte <= 0x7E for byte in text):
        raise ValueError(f"{what} {raw!r} is not printable ASCII")
    return text.decode("ascii")


def _date(year: int, month: int, day: int) -> datetime.date:
    try:
        return datetime.date(year, month, day)
    except ValueError:
        raise ValueError(f"manufacture date {year}-{month:02d}-{day:02d} does not exist") from None


class Eeprom24C02:
    """A 256-byte 24C02-class EEPROM: random/sequential reads, page writes, ACK polling."""

    def __init__(
        self,
        bus: I2CBus,
        address: int,
        name: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval_s: float = 0.001,
        max_polls: int = 25,
    ) -> None:
        self._bus = bus
        self.address = address
        self.name = name
        self._sleep = sleep
        self._poll_interval_s = poll_interval_s
        self._max_polls = max_polls

    def read(self, offset: int, length: int) -> bytes:
        """Set the word address, repeated start, read; the chip wraps from 255 to 0."""
        if not 0 <= offset < SIZE or not 1 <= length <= SIZE:
            raise ValueError(f"read of {length} bytes at {offset} outside the {SIZE}-byte chip")
        request = i2c_msg.write(self.address, bytes((offset,)))
        response = i2c_msg.read(self.address, length)
        try:
            self._bus.i2c_rdwr(request, response)
        except OSError as exc:
            raise transaction_error(self.name, self.address, f"read @{offset}", exc) from exc
        return message_bytes(response)

    def write(self, offset: int, data: bytes) -> None:
        """Write in page-sized pieces (a page write past a boundary would wrap onto the
        start of the page), waiting out each internal write cycle by ACK polling.
        """
        if offset < 0 or offset + len(data) > SIZE:
            raise ValueError(f"write of {len(data)} bytes at {offset} outside the chip")
        position = offset
        while position < offset + len(data):
            room = PAGE_SIZE - position % PAGE_SIZE
            chunk = data[position - offset : position - offset + room]
            try:
                self._bus.i2c_rdwr(i2c_msg.write(self.address, bytes((position,)) + chunk))
            except OSError as exc:
                raise transaction_error(self.name, self.address, f"write @{position}", exc) from exc
            self._wait_write_cycle(position)
            position += len(chunk)

    def _wait_write_cycle(self, position: int) -> None:
        """The chip ignores its address while it programs a page; poll until it answers."""
        for _ in range(self._max_polls):
            self._sleep(self._poll_interval_s)
            try:
                self._bus.i2c_rdwr(i2c_msg.write(self.address, bytes((position,))))
            except OSError as exc:
                if exc.errno in (errno.EREMOTEIO, errno.ENXIO):
                    continue
                raise transaction_error(self.name, self.address, "write poll", exc) from exc
            return
        waited_ms = self._max_polls * self._poll_interval_s * 1000
        raise HardwareError(
            f"{self.name} (0x{self.address:02x}): still busy {waited_ms:.0f} ms after a page "
            f"write at {position} (datasheet: 5 ms); the EEPROM is failing or was removed"
        )

    def read_identity(self) -> BoardIdentity:
        try:
            return decode_identity(self.read(0, SIZE))
        except IdentityError as exc:
            raise IdentityError(f"{self.name} (0x{self.address:02x}): {exc}") from None

    def write_identity(self, identity: BoardIdentity) -> None:
        """Program an identity and read it back: a write-protected chip ACKs and ignores."""
        image = encode_identity(identity)
        self.write(0, image)
        if self.read(0, SIZE) != image:
            raise HardwareError(
                f"{self.name} (0x{self.address:02x}): identity read back differs from what "
                "was written; is the EEPROM write-protect jumper set?"
            )
