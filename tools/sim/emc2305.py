"""A simulated Microchip EMC2305 fan controller on the simulated I2C bus.

The register map is written out here from the datasheet (DS20006532A), not taken from
the driver: a model that shared the driver's constants would agree with any mistake in
them. What it does, as the part does:

- registers with their power-on values, auto-incrementing block reads and writes that
  wrap from FFh to 00h, read-only registers that ignore writes, and the software lock;
- each channel's FAN SETTING drives its fan (duty = value / 255, or inverted by the
  polarity bit); with the closed-loop algorithm enabled, writes to it are ignored;
- the tachometer: each channel's TACH READING is the count for the fan's real simulated
  speed, COUNT = 3,932,160 x m / (RPM x edge factor), saturating at 8191 for a fan
  slower than the range or stopped; reading the high byte latches the low byte;
- stalled fans (count above the VALID TACH limit while driven) in FAN STALL STATUS and
  FAN STATUS, cleared on read once the fan turns again;
- the watchdog in simulated time: after power-up it fires four seconds on unless a drive
  is written first; in continuous mode (CONFIG.WD_EN) any access restarts it. Firing
  sets WATCH and every drive to FFh, and turns the closed-loop algorithm off.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from hashbay.tools.sim.i2c import nack


class Rotor(Protocol):
    """What the controller measures of a fan: its speed."""

    @property
    def rpm(self) -> float: ...


WATCHDOG_S = 4.0
TACH_CONSTANT = 3_932_160  # RPM x COUNT for a two-pole fan, five edges, m = 1
COUNT_LIMIT = 0x1FFF

# ADDR_SEL decode as the PRODUCT FEATURES register reports it (ADR[2:0], Table 5-1).
ADDRESS_CODES = {0x2E: 0b000, 0x2F: 0b001, 0x2C: 0b010, 0x2D: 0b011, 0x4C: 0b100, 0x4D: 0b101}

# Power-on values of one channel's sixteen registers (30h-3Fh for fan 1).
CHANNEL_POR = (
    0x00,  # fan setting
    0x01,  # PWM divide
    0x2B,  # configuration 1: RANGE 1000 rpm (m = 2), 5 edges, 400 ms
    0x28,  # configuration 2
    0x00,  # (unused)
    0x2A,  # gain
    0x19,  # spin up configuration
    0x10,  # max step
    0x66,  # minimum drive (40 %)
    0xF5,  # valid TACH count
    0x00,  # drive fail band low
    0x00,  # drive fail band high
    0xF8,  # TACH target low
    0xFF,  # TACH target high
    0xFF,  # TACH reading high
    0xF8,  # TACH reading low
)
SOFTWARE_LOCKED_OFFSETS = (0x3, 0x5, 0x6, 0x7, 0x8, 0x9, 0xA, 0xB)
READ_ONLY_OFFSETS = (0xE, 0xF)
EDGE_FACTOR = (0.5, 1.0, 1.5, 2.0)  # by EDG bits, for a two-pole fan
RANGE_MULTIPLIER = (1, 2, 4, 8)  # by RNG bits


class SimEmc2305:
    """An EMC2305 at `address` whose channels 1-5 may each drive a fan.

    Thread-safe: the agent's hardware thread talks to it through the bus while the
    simulator thread steps it.
    """

    def __init__(self, address: int, clock: Callable[[], float], *, product_id: int = 0x34) -> None:
        if address not in ADDRESS_CODES:
            raise ValueError(f"an EMC2305 cannot be strapped to 0x{address:02x}")
        self.address = address
        self._clock = clock
        self._lock = threading.Lock()
        self.registers = bytearray(256)
        self.registers[0x20] = 0x40
        for channel in range(1, 6):
            base = self._base(channel)
            self.registers[base : base + 16] = bytes(CHANNEL_POR)
        self.registers[0xFC] = ADDRESS_CODES[address] << 3
        self.registers[0xFD] = product_id
        self.registers[0xFE] = 0x5D
        self.registers[0xFF] = 0x80
        self.fans: dict[int, Rotor] = {}
        self.lost = False  # does not answer (unpowered, or a broken trace)
        self.watchdog_fired = 0  # times it fired, for tests and status
        self._pointer = 0
        self._latched_low: dict[int, int] = {}
        self._last_access = clock()
        self._power_up_watch = True  # the power-up watchdog has not fired or been disabled
        self._tripped = False  # fired, and nobody has talked to the chip since

    @staticmethod
    def _base(channel: int) -> int:
        return 0x30 + 0x10 * (channel - 1)

    def connect(self, channel: int, fan: Rotor) -> None:
        if not 1 <= channel <= 5:
            raise ValueError(f"the EMC2305 has channels 1-5, not {channel}")
        self.fans[channel] = fan

    def drive(self, channel: int) -> Callable[[], float]:
        """The duty channel's PWM pin shows, as a fan wired to it sees it."""

        def duty() -> float:
            value = self.registers[self._base(channel)] / 255
            return 1.0 - value if self.registers[0x2A] >> (channel - 1) & 1 else value

        return duty

    # -- time ----------------------------------------------------------------------------

    def step(self) -> None:
        """The simulator's tick: the watchdog and the stall flags follow the clock."""
        with self._lock:
            self._watch()
            self._check_stalls()

    def _watch(self) -> None:
        if self._tripped:
            return
        idle_s = self._clock() - self._last_access
        continuous = bool(self.registers[0x20] & 0x20)
        if idle_s >= WATCHDOG_S and (continuous or self._power_up_watch):
            self._fire()

    def _fire(self) -> None:
        self._power_up_watch = False
        self._tripped = True
        self.watchdog_fired += 1
        self.registers[0x24] |= 0x80
        for channel in range(1, 6):
            base = self._base(channel)
            self.registers[base] = 0xFF
            self.registers[base + 2] &= 0x7F

    def _check_stalls(self) -> None:
        for channel in self.fans:
            base = self._base(channel)
            driven = self.registers[base] > 0
            if driven and self._count(channel) > self.registers[base + 9] << 5:
                self.registers[0x25] |= 1 << (channel - 1)
        if self.registers[0x25]:
            self.registers[0x24] |= 0x01

    def _count(self, channel: int) -> int:
        fan = self.fans.get(channel)
        config = self.registers[self._base(channel) + 2]
        reported = (fan.rpm if fan is not None else 0.0) * EDGE_FACTOR[config >> 3 & 0b11]
        multiplier = RANGE_MULTIPLIER[config >> 5 & 0b11]
        if reported <= TACH_CONSTANT * multiplier / COUNT_LIMIT:
            return COUNT_LIMIT
        return min(COUNT_LIMIT, round(TACH_CONSTANT * multiplier / reported))

    # -- the wire --------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        with self._lock:
            self._answer()
            if not data:
                return
            self._pointer = data[0]
            for value in data[1:]:
                self._store(self._pointer, value)
                self._pointer = (self._pointer + 1) & 0xFF

    def read(self, length: int) -> bytes:
        with self._lock:
            self._answer()
            out = bytearray()
            for _ in range(length):
                out.append(self._load(self._pointer))
                self._pointer = (self._pointer + 1) & 0xFF
            return bytes(out)

    def stop(self) -> None:
        with self._lock:
            if not self.lost:
                self._last_access = self._clock()
                self._tripped = False

    def _answer(self) -> None:
        if self.lost:
            raise nack()
        self._watch()  # silence before this access may already have fired it

    def _load(self, register: int) -> int:
        channel, offset = self._channel_of(register)
        if channel and offset == 0xE:
            count = self._count(channel)
            self._latched_low[channel] = (count & 0x1F) << 3
            return count >> 5
        if channel and offset == 0xF:
            latched = self._latched_low.get(channel)
            return latched if latched is not None else (self._count(channel) & 0x1F) << 3
        value = self.registers[register]
        if register == 0x24:
            self.registers[0x24] = 0
            self._check_stalls()  # what is still true is flagged again
        elif register == 0x25:
            self.registers[0x25] = 0
            self._check_stalls()
        return value

    def _store(self, register: int, value: int) -> None:
        channel, offset = self._channel_of(register)
        locked = self.registers[0xEF] & 1
        if channel:
            if offset in READ_ONLY_OFFSETS or (locked and offset in SOFTWARE_LOCKED_OFFSETS):
                return
            base = self._base(channel)
            if offset == 0x0:
                if self.registers[base + 2] & 0x80:
                    return  # the closed-loop algorithm owns the drive
                self._power_up_watch = False
            if offset == 0x2 and value & 0x80:
                self._power_up_watch = False
            self.registers[register] = value
        elif register == 0x20 and not locked:
            self.registers[0x20] = value & 0xE3
        elif register == 0x29:
            self.registers[0x29] = value & 0x1F
        elif register in (0x2A, 0x2B):
            self.registers[register] = value & 0x1F
        elif register == 0x2C:
            self.registers[0x2C] = value & 0x0F
        elif register == 0x2D:
            self.registers[0x2D] = value & 0x3F
        elif register == 0xEF:
            self.registers[0xEF] |= value & 1  # only a power cycle unlocks
        # status, identification and undefined registers ignore writes

    @staticmethod
    def _channel_of(register: int) -> tuple[int, int]:
        """(channel 1-5, offset) of a channel register, or (0, 0)."""
        if 0x30 <= register < 0x80:
            return (register - 0x30) // 0x10 + 1, register & 0x0F
        return 0, 0
