"""The two checksums of the BM13xx UART protocol.

CRC5 (poly 0x05, init 0x1F, MSB first, no reflection, no final XOR) guards commands and
responses; CRC-16/CCITT-FALSE guards jobs and is exactly what binascii.crc_hqx computes
with init 0xFFFF, so it runs in C. CRC5 uses a byte table with the 5-bit register kept in
the top bits of a byte, one lookup per byte.
"""

from __future__ import annotations

import binascii

CRC5_INIT = 0x1F


def _crc5_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        reg = byte  # register aligned to bits 7..3
        for _ in range(8):
            reg = ((reg << 1) ^ (0x05 << 3)) & 0xFF if reg & 0x80 else (reg << 1) & 0xFF
        table.append(reg)
    return tuple(table)


CRC5_TABLE = _crc5_table()


def crc5(data: bytes | bytearray | memoryview) -> int:
    """CRC5 of data; a frame whose CRC5 byte is appended gives crc5(...) == 0."""
    table = CRC5_TABLE
    reg = CRC5_INIT << 3
    for byte in data:
        reg = table[reg ^ byte]
    return reg >> 3


def crc5_bits(data: bytes | bytearray | memoryview, trailing_bits: int, bit_count: int) -> int:
    """CRC5 over data followed by the top `bit_count` bits of `trailing_bits` (a byte).

    Responses put the CRC in the low 5 bits of their last byte and flags in the top 3, so
    the CRC covers those 3 flag bits too.
    """
    reg = crc5(data) << 3
    for i in range(bit_count):
        bit = (trailing_bits >> (7 - i)) & 1
        top = (reg >> 7) & 1
        reg = (reg << 1) & 0xFF
        if top ^ bit:
            reg ^= 0x05 << 3
    return reg >> 3


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF), sent big-endian after a job."""
    return binascii.crc_hqx(data, 0xFFFF)
