"""PMBus: the codecs, the status registers, and the three power devices of the miner.

The numeric formats and the SMBus PEC are pure functions over ints and bytes, so they
are tested on their own against golden words from the specification; the simulator
encodes with its own code (tools/sim/pmbus_wire.py), so the two sides check each other.
Transactions are built from raw `i2c_rdwr` messages (write the command, repeated start,
read) rather than the kernel's SMBus calls: that way PEC is computed and checked here,
identically on an i2c-dev bus and on the simulated one, and a flipped bit on a noisy
backplane becomes a ProtocolError instead of a wrong voltage.

Devices:
- `Psu`: the PSU feeding the 54 V backplane (LINEAR11 readings, READ_VOUT LINEAR16).
- `HotSwap`: each slot's backplane hot-swap controller (DIRECT readings, see
  `HOTSWAP_COEFFICIENTS`, our controller's datasheet).
- `DcDc`: each module's converter making the board rail (LINEAR11/LINEAR16).
Anything that powers or raises a rail asks the SafetyEnvelope first; turning off is
always allowed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from types import MappingProxyType

from smbus2 import i2c_msg

from hashbay.drivers.envelope import SafetyEnvelope
from hashbay.drivers.errors import PecError, ProtocolError
from hashbay.drivers.i2c import CountsPecErrors, I2CBus, message_bytes, transaction_error


class Cmd(IntEnum):
    """PMBus command codes (PMBus Part II, appendix I)."""

    OPERATION = 0x01
    ON_OFF_CONFIG = 0x02
    CLEAR_FAULTS = 0x03
    CAPABILITY = 0x19
    VOUT_MODE = 0x20
    VOUT_COMMAND = 0x21
    VOUT_MAX = 0x24
    STATUS_BYTE = 0x78
    STATUS_WORD = 0x79
    STATUS_VOUT = 0x7A
    STATUS_IOUT = 0x7B
    STATUS_INPUT = 0x7C
    STATUS_TEMPERATURE = 0x7D
    STATUS_CML = 0x7E
    READ_VIN = 0x88
    READ_IIN = 0x89
    READ_VOUT = 0x8B
    READ_IOUT = 0x8C
    READ_TEMPERATURE_1 = 0x8D
    READ_FAN_SPEED_1 = 0x90
    READ_POUT = 0x96
    READ_PIN = 0x97
    PMBUS_REVISION = 0x98
    MFR_ID = 0x99
    MFR_MODEL = 0x9A


OPERATION_ON = 0x80
OPERATION_OFF = 0x00
BLOCK_MAX = 32


def command_name(command: int) -> str:
    try:
        return Cmd(command).name
    except ValueError:
        return f"command 0x{command:02X}"


# -- numeric formats ---------------------------------------------------------------------


def _word(word: int, what: str) -> int:
    if not 0 <= word <= 0xFFFF:
        raise ProtocolError(f"{what}: {word!r} is not a 16-bit word")
    return word


def _signed(value: int, bits: int) -> int:
    sign = 1 << (bits - 1)
    return (value & (sign - 1)) - (value & sign)


def linear11_decode(word: int) -> float:
    """LINEAR11: 5-bit two's-complement exponent N above an 11-bit mantissa Y; X = Y·2^N."""
    _word(word, "LINEAR11")
    return math.ldexp(_signed(word & 0x7FF, 11), _signed(word >> 11, 5))


def vout_mode_exponent(mode: int) -> int:
    """The LINEAR16 exponent from a VOUT_MODE byte; other modes are not spoken here."""
    if not 0 <= mode <= 0xFF:
        raise ProtocolError(f"VOUT_MODE {mode!r} is not a byte")
    if mode >> 5:
        raise ProtocolError(
            f"VOUT_MODE 0x{mode:02X} is not linear (mode bits {mode >> 5:03b}); hashbay "
            "supports only LINEAR16 output voltages, so this device model is not supported"
        )
    return _signed(mode & 0x1F, 5)


def linear16_decode(word: int, exponent: int) -> float:
    """LINEAR16: an unsigned 16-bit mantissa V with the exponent from VOUT_MODE; X = V·2^N."""
    return math.ldexp(_word(word, "LINEAR16"), exponent)


def linear16_encode(value: float, exponent: int) -> int:
    if not math.isfinite(value):
        raise ValueError(f"LINEAR16 cannot encode {value!r}")
    word = round(math.ldexp(value, -exponent))
    if not 0 <= word <= 0xFFFF:
        raise ValueError(f"LINEAR16 cannot encode {value!r} with exponent {exponent}")
    return word


@dataclass(frozen=True)
class DirectCoefficients:
    """DIRECT format: Y = (m·X + b)·10^R, Y a 16-bit two's-complement word."""

    m: int
    b: int
    r: int

    def __post_init__(self) -> None:
        if self.m == 0:
            raise ValueError("DIRECT coefficient m must not be 0")

    @property
    def resolution(self) -> float:
        """The value of one count."""
        return 10.0**-self.r / abs(self.m)


def direct_decode(word: int, coefficients: DirectCoefficients) -> float:
    """X = (Y·10^-R - b) / m."""
    y = _signed(_word(word, "DIRECT"), 16)
    c = coefficients
    return (y * 10.0**-c.r - c.b) / c.m


# Our hot-swap controller's datasheet (a 48-60 V, 0-60 A, ADM1272/LTC4282-class part).
#
#   quantity    command    m      b      R    one count   example
#   input V     READ_VIN   6200   0      -2   16.1 mV     54.0 V  -> 3348
#   output V    READ_VOUT  6250   0      -2   16.0 mV     54.0 V  -> 3375
#   output I    READ_IOUT  6000   -200   -2   16.7 mA     30.0 A  -> 1798 (0 A -> -2)
#   input P     READ_PIN   9000   0      -3   111 mW      1620 W  -> 14580
HOTSWAP_COEFFICIENTS: Mapping[Cmd, DirectCoefficients] = MappingProxyType(
    {
        Cmd.READ_VIN: DirectCoefficients(m=6200, b=0, r=-2),
        Cmd.READ_VOUT: DirectCoefficients(m=6250, b=0, r=-2),
        Cmd.READ_IOUT: DirectCoefficients(m=6000, b=-200, r=-2),
        Cmd.READ_PIN: DirectCoefficients(m=9000, b=0, r=-3),
    }
)


# -- SMBus packet error code ----------------------------------------------------------------


def _crc8_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


_CRC8 = _crc8_table()


def crc8(data: bytes | bytearray) -> int:
    """CRC-8, polynomial x^8+x^2+x+1 (0x07), init 0, no reflection: the SMBus PEC."""
    crc = 0
    for byte in data:
        crc = _CRC8[crc ^ byte]
    return crc


def write_address(address: int) -> int:
    return (address << 1) & 0xFF


def read_address(address: int) -> int:
    return ((address << 1) | 1) & 0xFF


def pec_write(address: int, payload: bytes) -> int:
    """PEC of a write (command and data) as it crosses the wire after the address byte."""
    return crc8(bytes((write_address(address),)) + payload)


def pec_read(address: int, command: int, data: bytes) -> int:
    """PEC of a read: address+W, command, repeated start, address+R, then the data read."""
    return crc8(bytes((write_address(address), command, read_address(address))) + data)


# -- status ------------------------------------------------------------------------------


class StatusWord(IntFlag):
    """STATUS_WORD; the low byte is STATUS_BYTE."""

    NONE_OF_THE_ABOVE = 1 << 0
    CML = 1 << 1
    TEMPERATURE = 1 << 2
    VIN_UV_FAULT = 1 << 3
    IOUT_OC_FAULT = 1 << 4
    VOUT_OV_FAULT = 1 << 5
    OFF = 1 << 6
    BUSY = 1 << 7
    UNKNOWN = 1 << 8
    OTHER = 1 << 9
    FANS = 1 << 10
    POWER_GOOD_N = 1 << 11  # set means power is NOT good
    MFR = 1 << 12
    INPUT = 1 << 13
    IOUT_POUT = 1 << 14
    VOUT = 1 << 15


class StatusVout(IntFlag):
    TRACKING_ERROR = 1 << 0
    TOFF_MAX_WARNING = 1 << 1
    TON_MAX_FAULT = 1 << 2
    VOUT_MAX_MIN_WARNING = 1 << 3
    UV_FAULT = 1 << 4
    UV_WARNING = 1 << 5
    OV_WARNING = 1 << 6
    OV_FAULT = 1 << 7


class StatusIout(IntFlag):
    POUT_OP_WARNING = 1 << 0
    POUT_OP_FAULT = 1 << 1
    POWER_LIMITING = 1 << 2
    CURRENT_SHARE_FAULT = 1 << 3
    UC_FAULT = 1 << 4
    OC_WARNING = 1 << 5
    OC_LV_FAULT = 1 << 6
    OC_FAULT = 1 << 7


class StatusInput(IntFlag):
    PIN_OP_WARNING = 1 << 0
    IIN_OC_WARNING = 1 << 1
    IIN_OC_FAULT = 1 << 2
    UNIT_OFF_LOW_INPUT = 1 << 3
    VIN_UV_FAULT = 1 << 4
    VIN_UV_WARNING = 1 << 5
    VIN_OV_WARNING = 1 << 6
    VIN_OV_FAULT = 1 << 7


class StatusTemperature(IntFlag):
    UT_FAULT = 1 << 4
    UT_WARNING = 1 << 5
    OT_WARNING = 1 << 6
    OT_FAULT = 1 << 7


class StatusCml(IntFlag):
    OTHER_MEMORY_LOGIC_FAULT = 1 << 0
    OTHER_COMMUNICATION_FAULT = 1 << 1
    PROCESSOR_FAULT = 1 << 3
    MEMORY_FAULT = 1 << 4
    PEC_FAILED = 1 << 5
    INVALID_DATA = 1 << 6
    INVALID_COMMAND = 1 << 7


# Operator words for each bit. STATUS_WORD summary bits that only say "look at the detail
# register" are left out when the detail register was read.
_WORD_WORDS: dict[IntFlag, str] = {
    StatusWord.BUSY: "busy, not accepting commands",
    StatusWord.OFF: "output off",
    StatusWord.VOUT_OV_FAULT: "output over-voltage fault",
    StatusWord.IOUT_OC_FAULT: "output over-current fault",
    StatusWord.VIN_UV_FAULT: "input under-voltage fault",
    StatusWord.TEMPERATURE: "temperature warning or fault",
    StatusWord.CML: "communication/memory/logic fault",
    StatusWord.NONE_OF_THE_ABOVE: "other fault or warning",
    StatusWord.UNKNOWN: "unknown fault",
    StatusWord.OTHER: "other fault (see STATUS_OTHER)",
    StatusWord.FANS: "fan fault or warning",
    StatusWord.POWER_GOOD_N: "power not good",
    StatusWord.MFR: "manufacturer-specific fault",
    StatusWord.INPUT: "input fault or warning",
    StatusWord.IOUT_POUT: "output current/power fault or warning",
    StatusWord.VOUT: "output voltage fault or warning",
}
_VOUT_WORDS: dict[IntFlag, str] = {
    StatusVout.OV_FAULT: "output over-voltage fault",
    StatusVout.OV_WARNING: "output over-voltage warning",
    StatusVout.UV_WARNING: "output under-voltage warning",
    StatusVout.UV_FAULT: "output under-voltage fault",
    StatusVout.VOUT_MAX_MIN_WARNING: "output voltage command clamped to VOUT_MAX/MIN",
    StatusVout.TON_MAX_FAULT: "output failed to rise in time",
    StatusVout.TOFF_MAX_WARNING: "output failed to fall in time",
    StatusVout.TRACKING_ERROR: "output tracking error",
}
_IOUT_WORDS: dict[IntFlag, str] = {
    StatusIout.OC_FAULT: "output over-current fault",
    StatusIout.OC_LV_FAULT: "output over-current with low-voltage shutdown",
    StatusIout.OC_WARNING: "output over-current warning",
    StatusIout.UC_FAULT: "output under-current fault",
    StatusIout.CURRENT_SHARE_FAULT: "current share fault",
    StatusIout.POWER_LIMITING: "in power-limiting mode",
    StatusIout.POUT_OP_FAULT: "output over-power fault",
    StatusIout.POUT_OP_WARNING: "output over-power warning",
}
_INPUT_WORDS: dict[IntFlag, str] = {
    StatusInput.VIN_OV_FAULT: "input over-voltage fault",
    StatusInput.VIN_OV_WARNING: "input over-voltage warning",
    StatusInput.VIN_UV_WARNING: "input under-voltage warning",
    StatusInput.VIN_UV_FAULT: "input under-voltage fault",
    StatusInput.UNIT_OFF_LOW_INPUT: "unit off for low input voltage",
    StatusInput.IIN_OC_FAULT: "input over-current fault",
    StatusInput.IIN_OC_WARNING: "input over-current warning",
    StatusInput.PIN_OP_WARNING: "input over-power warning",
}
_TEMPERATURE_WORDS: dict[IntFlag, str] = {
    StatusTemperature.OT_FAULT: "over-temperature fault",
    StatusTemperature.OT_WARNING: "over-temperature warning",
    StatusTemperature.UT_WARNING: "under-temperature warning",
    StatusTemperature.UT_FAULT: "under-temperature fault",
}
_CML_WORDS: dict[IntFlag, str] = {
    StatusCml.INVALID_COMMAND: "received an invalid or unsupported command",
    StatusCml.INVALID_DATA: "received invalid or unsupported data",
    StatusCml.PEC_FAILED: "received a message with a bad PEC (bus noise?)",
    StatusCml.MEMORY_FAULT: "memory fault",
    StatusCml.PROCESSOR_FAULT: "processor fault",
    StatusCml.OTHER_COMMUNICATION_FAULT: "other communication fault",
    StatusCml.OTHER_MEMORY_LOGIC_FAULT: "other memory or logic fault",
}

# Each detail register: its Status field, the STATUS_WORD bit that says it has news, the
# command that reads it, and its words.
_DETAILS = (
    ("vout", StatusWord.VOUT, Cmd.STATUS_VOUT, _VOUT_WORDS),
    ("iout", StatusWord.IOUT_POUT, Cmd.STATUS_IOUT, _IOUT_WORDS),
    ("input", StatusWord.INPUT, Cmd.STATUS_INPUT, _INPUT_WORDS),
    ("temperature", StatusWord.TEMPERATURE, Cmd.STATUS_TEMPERATURE, _TEMPERATURE_WORDS),
    ("cml", StatusWord.CML, Cmd.STATUS_CML, _CML_WORDS),
)


_DETAIL_WORDS: dict[str, Mapping[IntFlag, str]] = {f: w for f, _, _, w in _DETAILS}
_FAULT_BITS = (
    ("vout", StatusVout.OV_FAULT | StatusVout.UV_FAULT | StatusVout.TON_MAX_FAULT),
    (
        "iout",
        StatusIout.OC_FAULT
        | StatusIout.OC_LV_FAULT
        | StatusIout.UC_FAULT
        | StatusIout.POUT_OP_FAULT,
    ),
    (
        "input",
        StatusInput.VIN_OV_FAULT
        | StatusInput.VIN_UV_FAULT
        | StatusInput.IIN_OC_FAULT
        | StatusInput.UNIT_OFF_LOW_INPUT,
    ),
    ("temperature", StatusTemperature.OT_FAULT | StatusTemperature.UT_FAULT),
)


@dataclass(frozen=True)
class Status:
    """STATUS_WORD and the detail registers its summary bits pointed to (others are 0)."""

    word: StatusWord
    vout: StatusVout = StatusVout(0)
    iout: StatusIout = StatusIout(0)
    input: StatusInput = StatusInput(0)
    temperature: StatusTemperature = StatusTemperature(0)
    cml: StatusCml = StatusCml(0)

    @classmethod
    def decode(
        cls,
        word: int,
        *,
        vout: int = 0,
        iout: int = 0,
        input: int = 0,
        temperature: int = 0,
        cml: int = 0,
    ) -> Status:
        """Build from raw register values; any bits, known or reserved, are accepted."""
        return cls(
            word=StatusWord(word & 0xFFFF),
            vout=StatusVout(vout & 0xFF),
            iout=StatusIout(iout & 0xFF),
            input=StatusInput(input & 0xFF),
            temperature=StatusTemperature(temperature & 0xFF),
            cml=StatusCml(cml & 0xFF),
        )

    @property
    def power_good(self) -> bool:
        return not self.word & StatusWord.POWER_GOOD_N

    @property
    def off(self) -> bool:
        return bool(self.word & StatusWord.OFF)

    @property
    def ok(self) -> bool:
        """Nothing to report apart from being off (power good follows from on/off)."""
        quiet = StatusWord.OFF | StatusWord.POWER_GOOD_N
        return not self.word & ~quiet

    def problems(self) -> tuple[str, ...]:
        """What is wrong, in words, most specific first, without repeats."""
        found: list[str] = []
        summarised = StatusWord(0)
        for field, summary, _, words in _DETAILS:
            flags = int(getattr(self, field))
            if flags:
                summarised |= summary
                found.extend(_flag_words(flags, words, f"STATUS_{field.upper()}"))
        if summarised:
            summarised |= StatusWord.NONE_OF_THE_ABOVE
        for flag, text in _WORD_WORDS.items():  # every one of its 16 bits has words
            if self.word & flag and not summarised & flag:
                found.append(text)
        return tuple(dict.fromkeys(found))

    def describe(self) -> str:
        problems = self.problems()
        return "; ".join(problems) if problems else "ok"

    def faults(self) -> tuple[str, ...]:
        """Only the latched faults (not warnings): what turned the output off by itself."""
        found: list[str] = []
        for field, mask in _FAULT_BITS:
            flags = int(getattr(self, field)) & int(mask)
            found.extend(_flag_words(flags, _DETAIL_WORDS[field], f"STATUS_{field.upper()}"))
        return tuple(dict.fromkeys(found))


def _known(words: Mapping[IntFlag, str]) -> int:
    mask = 0
    for flag in words:
        mask |= int(flag)
    return mask


def _flag_words(flags: int, words: Mapping[IntFlag, str], register: str) -> list[str]:
    found = [text for flag, text in words.items() if flags & flag]
    reserved = flags & ~_known(words)
    if reserved:
        found.append(f"reserved {register} bits 0x{reserved:02X}")
    return found


# -- transactions ------------------------------------------------------------------------


class PMBusDevice:
    """SMBus/PMBus transactions with one device, PEC computed and checked here."""

    def __init__(self, bus: I2CBus, address: int, name: str, *, pec: bool) -> None:
        if not 0x03 <= address <= 0x77:
            raise ValueError(f"{name}: 0x{address:02x} is not a 7-bit device address")
        self._bus = bus
        self.address = address
        self.name = name
        self.pec = pec

    def _where(self, command: int) -> str:
        return f"{self.name} (0x{self.address:02x}) {command_name(command)}"

    def _read(self, command: int, length: int) -> bytes:
        """Command, repeated start, `length` data bytes (and the PEC byte when PEC is on)."""
        extra = 1 if self.pec else 0
        request = i2c_msg.write(self.address, bytes((command,)))
        response = i2c_msg.read(self.address, length + extra)
        try:
            self._bus.i2c_rdwr(request, response)
        except OSError as exc:
            raise transaction_error(self.name, self.address, command_name(command), exc) from exc
        return message_bytes(response)

    def _check_pec(self, command: int, data: bytes, received: int) -> None:
        expected = pec_read(self.address, command, data)
        if received != expected:
            if isinstance(self._bus, CountsPecErrors):
                self._bus.count_pec_error(self.address)
            raise PecError(
                f"{self._where(command)}: PEC mismatch (received 0x{received:02X}, "
                f"computed 0x{expected:02X}); bus noise or a poor connector, check the "
                "module seating if it repeats"
            )

    def _read_checked(self, command: int, length: int) -> bytes:
        raw = self._read(command, length)
        data = raw[:length]
        if self.pec:
            self._check_pec(command, data, raw[length])
        return data

    def _write(self, command: int, data: bytes) -> None:
        payload = bytes((command,)) + data
        if self.pec:
            payload += bytes((pec_write(self.address, payload),))
        try:
            self._bus.i2c_rdwr(i2c_msg.write(self.address, payload))
        except OSError as exc:
            raise transaction_error(self.name, self.address, command_name(command), exc) from exc

    def read_byte(self, command: int) -> int:
        return self._read_checked(command, 1)[0]

    def read_word(self, command: int) -> int:
        return int.from_bytes(self._read_checked(command, 2), "little")

    def write_byte(self, command: int, value: int) -> None:
        self._write(command, bytes((value & 0xFF,)))

    def write_word(self, command: int, value: int) -> None:
        self._write(command, (value & 0xFFFF).to_bytes(2, "little"))

    def send_byte(self, command: int) -> None:
        self._write(command, b"")

    def read_block(self, command: int, max_length: int = BLOCK_MAX) -> bytes:
        """A block read: the first byte is the count. We read max_length bytes after it
        because i2c-dev cannot size a read from the data (few adapters do I2C_M_RECV_LEN).
        """
        if not 1 <= max_length <= BLOCK_MAX:
            raise ValueError(f"block length {max_length} outside 1..{BLOCK_MAX}")
        raw = self._read(command, 1 + max_length)
        count = raw[0]
        if not 1 <= count <= max_length:
            raise ProtocolError(
                f"{self._where(command)}: block count {count} outside 1..{max_length}; "
                "the device is not the model configured at this address, or the bus is noisy"
            )
        data = raw[1 : 1 + count]
        if self.pec:
            self._check_pec(command, raw[: 1 + count], raw[1 + count])
        return data

    def read_string(self, command: int) -> str:
        """A block of printable ASCII (trailing NUL or space padding dropped)."""
        data = self.read_block(command).rstrip(b"\x00 ")
        if not data or any(not 0x20 <= byte <= 0x7E for byte in data):
            raise ProtocolError(
                f"{self._where(command)}: {data!r} is not printable ASCII; the device "
                "answered garbage (noise, or not the part configured at this address)"
            )
        return data.decode("ascii")

    def vout_exponent(self) -> int:
        return vout_mode_exponent(self.read_byte(Cmd.VOUT_MODE))

    def identity(self) -> DeviceIdentity:
        """MFR_ID and MFR_MODEL: which part answers at this address (bring-up checks)."""
        return DeviceIdentity(
            mfr_id=self.read_string(Cmd.MFR_ID), mfr_model=self.read_string(Cmd.MFR_MODEL)
        )

    def status(self) -> Status:
        """STATUS_WORD, and each detail register that STATUS_WORD says has news."""
        word = StatusWord(self.read_word(Cmd.STATUS_WORD))
        read = {
            field: self.read_byte(command) if word & summary else 0
            for field, summary, command, _ in _DETAILS
        }
        return Status.decode(word, **read)

    def clear_faults(self) -> None:
        self.send_byte(Cmd.CLEAR_FAULTS)


# -- devices -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PsuTelemetry:
    vin_v: float
    iin_a: float
    pin_w: float
    vout_v: float
    iout_a: float
    pout_w: float
    temp_c: float
    fan_rpm: float


@dataclass(frozen=True)
class DeviceIdentity:
    mfr_id: str
    mfr_model: str

    def __str__(self) -> str:
        return f"{self.mfr_id} {self.mfr_model}"


class Psu:
    """The miner's PSU. Read-only apart from clearing faults: hashbay never switches it."""

    def __init__(self, bus: I2CBus, address: int, *, pec: bool = True, name: str = "PSU") -> None:
        self._dev = PMBusDevice(bus, address, name, pec=pec)
        self._vout_exponent: int | None = None

    @property
    def name(self) -> str:
        return self._dev.name

    def _exponent(self) -> int:
        if self._vout_exponent is None:
            self._vout_exponent = self._dev.vout_exponent()
        return self._vout_exponent

    def read_telemetry(self) -> PsuTelemetry:
        linear = self._linear11
        return PsuTelemetry(
            vin_v=linear(Cmd.READ_VIN),
            iin_a=linear(Cmd.READ_IIN),
            pin_w=linear(Cmd.READ_PIN),
            vout_v=linear16_decode(self._dev.read_word(Cmd.READ_VOUT), self._exponent()),
            iout_a=linear(Cmd.READ_IOUT),
            pout_w=linear(Cmd.READ_POUT),
            temp_c=linear(Cmd.READ_TEMPERATURE_1),
            fan_rpm=linear(Cmd.READ_FAN_SPEED_1),
        )

    def _linear11(self, command: Cmd) -> float:
        return linear11_decode(self._dev.read_word(command))

    def status(self) -> Status:
        return self._dev.status()

    def identity(self) -> DeviceIdentity:
        return self._dev.identity()

    def clear_faults(self) -> None:
        self._dev.clear_faults()


@dataclass(frozen=True)
class DcDcTelemetry:
    vin_v: float
    vout_v: float
    iout_a: float
    temp_c: float
    vout_command_v: float


class DcDc:
    """A module's DC-DC converter: sets and switches the board rail, within the envelope."""

    def __init__(
        self,
        bus: I2CBus,
        slot: int,
        address: int,
        envelope: SafetyEnvelope,
        *,
        pec: bool = True,
        name: str | None = None,
    ) -> None:
        self.slot = slot
        self._envelope = envelope
        self._dev = PMBusDevice(bus, address, name or f"slot {slot} DC-DC", pec=pec)
        self._vout_exponent: int | None = None

    @property
    def name(self) -> str:
        return self._dev.name

    def _exponent(self) -> int:
        if self._vout_exponent is None:
            self._vout_exponent = self._dev.vout_exponent()
        return self._vout_exponent

    def set_vout(self, volts: float) -> float:
        """Command the rail after the envelope accepts it; returns the volts written.

        The LINEAR16 word nearest the request may lie a fraction of a count outside the
        limits; then the neighbouring word inside them is written instead.
        """
        accepted = self._envelope.board_voltage(self.slot, volts)
        limits = self._envelope.board(self.slot)
        exponent = self._exponent()
        word = linear16_encode(accepted, exponent)
        if linear16_decode(word, exponent) > limits.vout_max_v:
            word -= 1
        elif linear16_decode(word, exponent) < limits.vout_min_v:
            word += 1
        written = self._envelope.board_voltage(self.slot, linear16_decode(word, exponent))
        self._dev.write_word(Cmd.VOUT_COMMAND, word)
        return written

    def on(self) -> None:
        self._envelope.power_on(self.slot)
        self._dev.write_byte(Cmd.OPERATION, OPERATION_ON)

    def off(self) -> None:
        """Always allowed: turning a rail off is never what hurts hardware."""
        self._dev.write_byte(Cmd.OPERATION, OPERATION_OFF)

    def read_telemetry(self) -> DcDcTelemetry:
        exponent = self._exponent()
        read = self._dev.read_word
        return DcDcTelemetry(
            vin_v=linear11_decode(read(Cmd.READ_VIN)),
            vout_v=linear16_decode(read(Cmd.READ_VOUT), exponent),
            iout_a=linear11_decode(read(Cmd.READ_IOUT)),
            temp_c=linear11_decode(read(Cmd.READ_TEMPERATURE_1)),
            vout_command_v=linear16_decode(read(Cmd.VOUT_COMMAND), exponent),
        )

    def status(self) -> Status:
        return self._dev.status()

    def identity(self) -> DeviceIdentity:
        return self._dev.identity()

    def clear_faults(self) -> None:
        self._dev.clear_faults()


@dataclass(frozen=True)
class HotSwapTelemetry:
    vin_v: float
    vout_v: float
    iout_a: float
    pin_w: float
    temp_c: float


class HotSwap:
    """A slot's backplane hot-swap controller: the FET between the 54 V bus and a module."""

    def __init__(
        self,
        bus: I2CBus,
        slot: int,
        address: int,
        envelope: SafetyEnvelope,
        *,
        pec: bool = True,
        name: str | None = None,
    ) -> None:
        self.slot = slot
        self._envelope = envelope
        self._dev = PMBusDevice(bus, address, name or f"slot {slot} hot-swap", pec=pec)

    @property
    def name(self) -> str:
        return self._dev.name

    def on(self) -> None:
        self._envelope.power_on(self.slot)
        self._dev.write_byte(Cmd.OPERATION, OPERATION_ON)

    def off(self) -> None:
        """Always allowed."""
        self._dev.write_byte(Cmd.OPERATION, OPERATION_OFF)

    def power_good(self) -> bool:
        return not self._dev.read_word(Cmd.STATUS_WORD) & StatusWord.POWER_GOOD_N

    def _direct(self, command: Cmd) -> float:
        return direct_decode(self._dev.read_word(command), HOTSWAP_COEFFICIENTS[command])

    def read_telemetry(self) -> HotSwapTelemetry:
        return HotSwapTelemetry(
            vin_v=self._direct(Cmd.READ_VIN),
            vout_v=self._direct(Cmd.READ_VOUT),
            iout_a=self._direct(Cmd.READ_IOUT),
            pin_w=self._direct(Cmd.READ_PIN),
            temp_c=linear11_decode(self._dev.read_word(Cmd.READ_TEMPERATURE_1)),
        )

    def status(self) -> Status:
        return self._dev.status()

    def identity(self) -> DeviceIdentity:
        return self._dev.identity()

    def clear_faults(self) -> None:
        self._dev.clear_faults()
