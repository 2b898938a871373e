"""BM13xx registers and the encodings of the values hashbay writes to them.

Sources: public protocol notes (skot/BM1397, ESP-Miner, mujina). Where they are unsure
(the 3 Mbaud divisor, BM1366 details) hashbay only uses what they agree on.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import IntEnum

from hashbay.drivers.errors import ProtocolError

REFERENCE_CLOCK_MHZ = 25.0
DEFAULT_BAUD = 115_200
FAST_BAUD = 1_000_000
FAST_UART_VALUE = 0x1130_0200  # register 0x28: ≈1 Mbaud on BM1366/68/70


class Reg(IntEnum):
    CHIP_ID = 0x00
    PLL0 = 0x08
    TICKET_MASK = 0x14
    MISC_CONTROL = 0x18
    FAST_UART = 0x28
    CORE_REGISTER = 0x3C
    VERSION_MASK = 0xA4


CHIP_IDS = {0x1366: "BM1366", 0x1368: "BM1368", 0x1370: "BM1370"}
# Hash engines per chip: hashes per clock cycle, so expected hashrate = MHz * 1e6 * this.
SMALL_CORES = {0x1366: 894, 0x1368: 1276, 0x1370: 2040}


def chip_id_value(chip_id: int) -> int:
    """Register 0x00 as the chips answer it: the id in the top two bytes."""
    return chip_id << 16


def chip_id_of(value: int) -> int:
    return value >> 16


# -- PLL -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PllSetting:
    fbdiv: int
    refdiv: int
    postdiv1: int
    postdiv2: int

    @property
    def freq_mhz(self) -> float:
        return REFERENCE_CLOCK_MHZ * self.fbdiv / (self.refdiv * self.postdiv1 * self.postdiv2)

    def register_value(self) -> int:
        vco_mhz = REFERENCE_CLOCK_MHZ * self.fbdiv / self.refdiv
        vco_range = 0x50 if vco_mhz >= 2400 else 0x40
        post = ((self.postdiv1 - 1) << 4) | (self.postdiv2 - 1)
        return (vco_range << 24) | (self.fbdiv << 16) | (self.refdiv << 8) | post


def decode_pll(value: int) -> PllSetting:
    """Register 0x08 back into dividers; ProtocolError if it cannot be a valid setting."""
    fbdiv, refdiv, post = (value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF
    postdiv1, postdiv2 = (post >> 4) + 1, (post & 0x0F) + 1
    if fbdiv == 0 or refdiv == 0 or postdiv1 > 8 or postdiv2 > 8:
        raise ProtocolError(f"PLL register value {value:#010x} is not a valid setting")
    return PllSetting(fbdiv, refdiv, postdiv1, postdiv2)


def _pll_candidates() -> list[PllSetting]:
    settings = []
    for refdiv in (2, 1):
        for postdiv1 in range(7, 0, -1):
            for postdiv2 in range(postdiv1, 0, -1):
                for fbdiv in range(0xA0, 0xF0):
                    settings.append(PllSetting(fbdiv, refdiv, postdiv1, postdiv2))
    return settings


_CANDIDATES = sorted(_pll_candidates(), key=lambda s: s.freq_mhz)


@functools.lru_cache(maxsize=1024)
def pll_for(freq_mhz: float) -> PllSetting:
    """The divider setting closest to the wanted frequency (VCO kept in its usual range).

    A search over every divider combination (about 1.4 ms); cached, because a ramp asks
    the same value for every chip of a board in each step."""
    best = min(_CANDIDATES, key=lambda s: (abs(s.freq_mhz - freq_mhz), -s.fbdiv))
    return best


# -- ticket mask (how hard a nonce must be before a chip reports it) ---------------------


def _reverse_bits(byte: int) -> int:
    return int(f"{byte:08b}"[::-1], 2)


def ticket_mask_value(difficulty: int) -> int:
    """Register 0x14 for a ticket difficulty (rounded down to a power of two)."""
    if not 1 <= difficulty <= 2**32:
        raise ValueError(f"ticket difficulty {difficulty} outside 1..2^32")
    mask = (1 << (difficulty.bit_length() - 1)) - 1
    raw = mask.to_bytes(4, "big")
    return int.from_bytes(bytes(_reverse_bits(b) for b in raw), "big")


def ticket_difficulty(value: int) -> int:
    """Inverse of ticket_mask_value: the power-of-two difficulty a register holds."""
    raw = value.to_bytes(4, "big")
    mask = int.from_bytes(bytes(_reverse_bits(b) for b in raw), "big")
    if mask & (mask + 1):
        raise ProtocolError(f"ticket mask {value:#010x} is not a contiguous low-bit mask")
    return mask + 1


# -- version rolling ---------------------------------------------------------------------


def version_mask_value(mask: int) -> int:
    """Register 0xA4: enable bits 0x9000 then the rollable version bits shifted down by 13."""
    if mask & ~0x1FFF_E000:
        raise ValueError(f"version mask {mask:#x} has bits outside 0x1fffe000")
    return (0x9000 << 16) | (mask >> 13)


def version_mask_of(value: int) -> int:
    if value >> 16 != 0x9000:
        return 0
    return (value & 0xFFFF) << 13


# -- baud rate ---------------------------------------------------------------------------

BAUD_VALUES = {FAST_UART_VALUE: FAST_BAUD}


def baud_of(value: int) -> int | None:
    """The line rate a register 0x28 value selects, or None when it is not one we know."""
    return BAUD_VALUES.get(value)
