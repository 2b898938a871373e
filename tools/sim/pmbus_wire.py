"""The PMBus wire format as the simulated parts speak it, written from the specification.

Deliberately independent of drivers/pmbus.py: command codes, status bits, the numeric
formats and the PEC are spelled out here again (PMBus Part II rev 1.3 and the SMBus
specification), so a wrong code, bit or codec in the driver makes the driver and the
simulated parts disagree, and a test fails, instead of both sides sharing the mistake.
"""

from __future__ import annotations

import math
from enum import IntEnum, IntFlag
from typing import NamedTuple


class Cmd(IntEnum):
    """Command codes (PMBus Part II, appendix I)."""

    OPERATION = 0x01
    CLEAR_FAULTS = 0x03
    CAPABILITY = 0x19
    VOUT_MODE = 0x20
    VOUT_COMMAND = 0x21
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


OPERATION_ON = 0x80  # OPERATION bit 7: on


class StatusWord(IntFlag):
    """STATUS_WORD (the low byte is STATUS_BYTE), PMBus Part II 17.1 and 17.2."""

    NONE_OF_THE_ABOVE = 0x0001
    CML = 0x0002
    TEMPERATURE = 0x0004
    VIN_UV_FAULT = 0x0008
    IOUT_OC_FAULT = 0x0010
    VOUT_OV_FAULT = 0x0020
    OFF = 0x0040
    BUSY = 0x0080
    POWER_GOOD_N = 0x0800
    INPUT = 0x2000
    IOUT_POUT = 0x4000
    VOUT = 0x8000


class StatusVout(IntFlag):
    VOUT_MAX_MIN_WARNING = 0x08
    UV_FAULT = 0x10
    OV_FAULT = 0x80


class StatusIout(IntFlag):
    OC_FAULT = 0x80


class StatusInput(IntFlag):
    UNIT_OFF_LOW_INPUT = 0x08
    VIN_UV_FAULT = 0x10
    VIN_UV_WARNING = 0x20


class StatusTemperature(IntFlag):
    OT_WARNING = 0x40
    OT_FAULT = 0x80


class StatusCml(IntFlag):
    OTHER_COMMUNICATION_FAULT = 0x02
    PEC_FAILED = 0x20
    INVALID_DATA = 0x40
    INVALID_COMMAND = 0x80


class Direct(NamedTuple):
    """DIRECT coefficients of one reading: Y = (m·X + b)·10^R."""

    m: int
    b: int
    r: int


# The hot-swap controller's datasheet table (the simulated part's own copy).
HOTSWAP_DIRECT = {
    Cmd.READ_VIN: Direct(6200, 0, -2),
    Cmd.READ_VOUT: Direct(6250, 0, -2),
    Cmd.READ_IOUT: Direct(6000, -200, -2),
    Cmd.READ_PIN: Direct(9000, 0, -3),
}


def pec(data: bytes) -> int:
    """SMBus PEC: CRC-8, polynomial x^8+x^2+x+1, bit by bit as the specification states it."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def pec_of_read(address: int, command: int, data: bytes) -> int:
    """A read's PEC: address+W, command, address+R, then the data bytes."""
    return pec(bytes((address << 1, command, (address << 1) | 1)) + data)


def pec_of_write(address: int, payload: bytes) -> int:
    """A write's PEC: address+W, then the command and data bytes."""
    return pec(bytes((address << 1,)) + payload)


def linear11(value: float) -> int:
    """The LINEAR11 word for value: mantissa in 11 bits as large as fits, for precision."""
    for exponent in range(-16, 16):
        mantissa = round(value * 2.0**-exponent)
        if -1024 <= mantissa <= 1023:
            return ((exponent % 32) << 11) | (mantissa % 2048)
    raise ValueError(f"LINEAR11 cannot hold {value}")


def linear16(value: float, exponent: int) -> int:
    """The unsigned LINEAR16 word for value with the VOUT_MODE exponent."""
    word = round(value * 2.0**-exponent)
    if not 0 <= word <= 0xFFFF:
        raise ValueError(f"LINEAR16 cannot hold {value} with exponent {exponent}")
    return word


def linear16_value(word: int, exponent: int) -> float:
    return word * 2.0**exponent


def vout_mode(exponent: int) -> int:
    """VOUT_MODE for LINEAR16: mode bits 000, the exponent as 5-bit two's complement."""
    return exponent % 32


def direct(value: float, c: Direct) -> int:
    """The DIRECT word (16-bit two's complement) for value."""
    y = round((c.m * value + c.b) * 10.0**c.r)
    if not -0x8000 <= y <= 0x7FFF:
        raise ValueError(f"DIRECT cannot hold {value} with {c}")
    return y % 0x10000


def direct_range(c: Direct) -> tuple[float, float]:
    """The lowest and highest value a DIRECT reading can carry."""
    ends = ((y * 10.0**-c.r - c.b) / c.m for y in (-0x8000, 0x7FFF))
    low, high = sorted(ends)
    return low, high


def saturated(value: float, low: float, high: float) -> float:
    """What an ADC reports: clipped to its range, 0 for a value that is not a number."""
    return 0.0 if math.isnan(value) else min(max(value, low), high)
