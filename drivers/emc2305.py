"""Microchip EMC2305 fan controller (and its EMC2303/2302/2301 siblings, same registers):
up to five 4-wire fans, PWM drive out and tachometer measured in the chip, over I2C.

Why a controller: counting tach pulses on GPIO costs one Python callback per pulse,
hundreds a second for four fans. The EMC2305 times each fan's revolution against its own
32.768 kHz clock, so reading a fan is one I2C transaction per poll.

How the part is set up (datasheet DS20006532A):

- Direct Setting mode: each fan's drive is the FAN SETTING register, duty = value / 255,
  written only after the safety envelope accepts the duty (rounded to the register's
  step towards the inside of the limits). The chip's closed-loop RPM mode stays off: it
  would choose the duty itself, outside the envelope's `fan_duty_min`/`max`.
- PWM at 26 kHz (base 26.00 kHz, divide 1; 4-wire fans want 21-28 kHz), normal
  polarity, open drain (the fan pulls its PWM input up).
- Tachometer: 5 edges per reading (a two-pole fan: two pulses per revolution) and
  RANGE 500 rpm (multiplier m = 1), so RPM = 3,932,160 x m / COUNT (Equation 4-3); the
  13-bit count saturates at 8191 below 480 rpm, which reads as stopped.
- The watchdog runs continuously (CONFIG.WD_EN): after four seconds without any access
  the chip drives every fan at 100 % and sets WATCH, with no software involved. That is
  the safe state for an agent that died, hung or lost the bus. A live agent reads every
  fan each poll, so it never lets the watchdog fire; when it has fired (or the chip was
  reset and lost its configuration), the next reading restores configuration and drives
  and says so to `on_restore`.
- Before it is configured after power-up, the chip's power-up watchdog does the same:
  full drive four seconds after power-up unless the host wrote a drive first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from smbus2 import i2c_msg

from hashbay.drivers.envelope import SafetyEnvelope
from hashbay.drivers.errors import HardwareError
from hashbay.drivers.fan import FanReading
from hashbay.drivers.i2c import I2CBus, message_bytes, transaction_error

ADDRESSES = (0x2C, 0x2D, 0x2E, 0x2F, 0x4C, 0x4D)
"""What the ADDR_SEL resistor can strap (Table 5-1); the EMC2301/2302 answer at 0x2E/0x2F."""

# Chip-wide registers.
CONFIG = 0x20
FAN_STATUS = 0x24
PWM_POLARITY = 0x2A
PWM_OUTPUT = 0x2B
PWM_BASE_45 = 0x2C
PWM_BASE_123 = 0x2D
PRODUCT_ID = 0xFD
MANUFACTURER_ID = 0xFE

# Each channel's registers, at CHANNEL_BASE + CHANNEL_STRIDE * (channel - 1) + offset.
CHANNEL_BASE = 0x30
CHANNEL_STRIDE = 0x10
FAN_SETTING = 0x0
PWM_DIVIDE = 0x1
FAN_CONFIG1 = 0x2
TACH_READING_HIGH = 0xE
TACH_READING_LOW = 0xF

CONFIG_WD_EN = 0x20
CONFIG_DIS_TO = 0x40  # SMBus time-out off: plain I2C, as the Pi's controller speaks (POR value)
STATUS_WATCH = 0x80  # FAN STATUS: the watchdog fired (cleared by reading it)

MANUFACTURER = 0x5D
PRODUCTS = {0x34: ("EMC2305", 5), 0x35: ("EMC2303", 3), 0x36: ("EMC2302", 2), 0x37: ("EMC2301", 1)}

CONFIG_VALUE = CONFIG_DIS_TO | CONFIG_WD_EN
FAN_CONFIG1_VALUE = 0b0_00_01_011  # ENAG off, RANGE 500 rpm (m = 1), 5 edges, 400 ms update
RANGE_SHIFT = 5  # FAN CONFIG 1 bits 6-5: multiplier m = 1 << RANGE
RANGE_MULTIPLIER = 1
PWM_DIVIDE_VALUE = 1
PWM_BASE_26KHZ = 0b00  # for every channel of PWM_BASE_123 and PWM_BASE_45

RPM_PER_COUNT = 3_932_160  # Equation 4-3: two-pole fan, five edges, 32.768 kHz
COUNT_MAX = 0x1FFF  # the 13-bit count saturates: slower than it can measure, or stopped
DRIVE_MAX = 0xFF
WATCHDOG_S = 4.0


def channel_register(channel: int, offset: int) -> int:
    """Address of a channel's register (channels 1-5, as the chip's PWMn/TACHn pins)."""
    return CHANNEL_BASE + CHANNEL_STRIDE * (channel - 1) + offset


def tach_rpm(high: int, low: int, multiplier: int = RANGE_MULTIPLIER) -> float:
    """RPM from the TACH READING high and low bytes (bits 12-5 and 4-0 of the count)."""
    count = ((high << 8) | low) >> 3
    if count == 0 or count >= COUNT_MAX:
        return 0.0
    return RPM_PER_COUNT * multiplier / count


def drive_value(duty: float, low: float, high: float) -> int:
    """The FAN SETTING value nearest `duty`, stepped inside low..high if rounding left it
    (limits closer than one step apart get the value above: more air, not less)."""
    value = round(duty * DRIVE_MAX)
    if value / DRIVE_MAX > high:
        value -= 1
    if value / DRIVE_MAX < low:
        value += 1
    return value


class Emc2305:
    """One EMC2305-family controller: configures the part, drives and reads its channels.

    Thread-safe: transactions go through the (locked) bus, and the drives it has written
    are kept under a lock so the safe state may set a fan from any thread.
    """

    def __init__(
        self,
        bus: I2CBus,
        address: int,
        envelope: SafetyEnvelope,
        *,
        name: str = "fan controller",
        on_restore: Callable[[str], None] = lambda what: None,
    ) -> None:
        """`on_restore` hears, in words, each time the part had to be put right (its
        watchdog fired, or it was reset): the drivers do not log, the agent does."""
        self._bus = bus
        self.address = address
        self.name = name
        self._envelope = envelope
        self._on_restore = on_restore
        self._lock = threading.Lock()
        self._drives: dict[int, int] = {}  # channel -> FAN SETTING the agent wrote
        self.model = ""
        self.channels = 0

    # -- set-up ----------------------------------------------------------------------

    def configure(self, channels: Sequence[int]) -> None:
        """Identify the part, set it up for `channels` and read every setting back; the
        channels start at the envelope's highest duty, like an undriven PWM line."""
        self._identify(channels)
        highest = self._envelope.fans.duty_max
        with self._lock:
            for channel in channels:
                self._drives.setdefault(channel, self._accepted(channel, highest))
        self._apply()

    def _identify(self, channels: Sequence[int]) -> None:
        manufacturer = self._read_byte(MANUFACTURER_ID, "read manufacturer id")
        product = self._read_byte(PRODUCT_ID, "read product id")
        known = PRODUCTS.get(product)
        if manufacturer != MANUFACTURER or known is None:
            raise HardwareError(
                f"{self.name} (0x{self.address:02x}): manufacturer 0x{manufacturer:02x} "
                f"product 0x{product:02x} is not an EMC2301/2/3/5; check "
                "hardware.fan_controller_address against the board's ADDR_SEL strap"
            )
        self.model, self.channels = known
        missing = [c for c in channels if not 1 <= c <= self.channels]
        if missing:
            raise HardwareError(
                f"{self.name} (0x{self.address:02x}) is an {self.model} with "
                f"{self.channels} channel(s); fan channel(s) {missing} do not exist on it"
            )

    def _apply(self) -> None:
        """Write the chip-wide and per-channel settings and the drives, then check them.

        Under the lock, so a drive set from another thread meanwhile is not overwritten by
        an older one."""
        with self._lock:
            self._write_all(self._settings())

    def _settings(self) -> dict[int, int]:
        wanted = {
            CONFIG: CONFIG_VALUE,
            PWM_POLARITY: 0x00,
            PWM_OUTPUT: 0x00,
            PWM_BASE_123: PWM_BASE_26KHZ,
            PWM_BASE_45: PWM_BASE_26KHZ,
        }
        for channel, drive in self._drives.items():
            wanted[channel_register(channel, PWM_DIVIDE)] = PWM_DIVIDE_VALUE
            wanted[channel_register(channel, FAN_CONFIG1)] = FAN_CONFIG1_VALUE
            wanted[channel_register(channel, FAN_SETTING)] = drive
        return wanted

    def _write_all(self, wanted: dict[int, int]) -> None:
        for register, value in wanted.items():
            self._write_byte(register, value, f"write register 0x{register:02x}")
        for register, value in wanted.items():
            got = self._read_byte(register, f"read back register 0x{register:02x}")
            if got != value:
                raise HardwareError(
                    f"{self.name} (0x{self.address:02x}) register 0x{register:02x} reads "
                    f"0x{got:02x} after writing 0x{value:02x}: its software lock is set "
                    "(power-cycle the controller) or another device answers at this address"
                )

    # -- driving and reading -----------------------------------------------------------

    def _accepted(self, channel: int, duty: float, what: str = "") -> int:
        accepted = self._envelope.fan_duty(duty, what=what or f"{self.name} channel {channel}")
        limits = self._envelope.fans
        return drive_value(accepted, limits.duty_min, limits.duty_max)

    def set_duty(self, channel: int, duty: float, *, what: str = "") -> float:
        """Drive a channel at `duty` once the envelope accepts it; returns the duty the
        register holds (a multiple of 1/255)."""
        value = self._accepted(channel, duty, what)
        with self._lock:
            self._write_byte(channel_register(channel, FAN_SETTING), value, f"set fan {channel}")
            self._drives[channel] = value
        return value / DRIVE_MAX

    def duty(self, channel: int) -> float:
        """The duty last written to a channel."""
        with self._lock:
            return self._drives.get(channel, 0) / DRIVE_MAX

    def read_channel(self, channel: int) -> tuple[float, float]:
        """(duty the chip drives, rpm it measures) for one channel, in one transaction.

        A fired watchdog or a configuration lost to a reset is put right here and told to
        `on_restore`; the reading is what the part was doing until then (decoded with the
        tach range it was using), the next one is under the agent's drive again.
        """
        base = channel_register(channel, 0)
        status = i2c_msg.read(self.address, 1)
        block = i2c_msg.read(self.address, TACH_READING_LOW + 1)  # setting .. tach
        try:
            self._bus.i2c_rdwr(
                i2c_msg.write(self.address, bytes((FAN_STATUS,))),
                status,
                i2c_msg.write(self.address, bytes((base,))),
                block,
            )
        except OSError as exc:
            raise transaction_error(self.name, self.address, f"read fan {channel}", exc) from exc
        flags = message_bytes(status)[0]
        data = message_bytes(block)
        config1 = data[FAN_CONFIG1]
        if flags & STATUS_WATCH:
            self._restore("its watchdog fired (no bus access for 4 s): every fan ran at 100 %")
        elif config1 != FAN_CONFIG1_VALUE:
            self._restore("it lost its configuration (reset or power glitch)")
        multiplier = 1 << (config1 >> RANGE_SHIFT & 0b11)
        rpm = tach_rpm(data[TACH_READING_HIGH], data[TACH_READING_LOW], multiplier)
        return data[FAN_SETTING] / DRIVE_MAX, rpm

    def _restore(self, what: str) -> None:
        self._apply()
        self._on_restore(
            f"{self.name} (0x{self.address:02x}): {what}; configuration and drives restored"
        )

    def fan(self, channel: int, name: str, *, stall_rpm: float = 300.0) -> ControllerFan:
        return ControllerFan(self, channel, name, stall_rpm=stall_rpm)

    # -- the wire ----------------------------------------------------------------------

    def _read_byte(self, register: int, what: str) -> int:
        try:
            return self._bus.read_byte_data(self.address, register)
        except OSError as exc:
            raise transaction_error(self.name, self.address, what, exc) from exc

    def _write_byte(self, register: int, value: int, what: str) -> None:
        try:
            self._bus.write_byte_data(self.address, register, value)
        except OSError as exc:
            raise transaction_error(self.name, self.address, what, exc) from exc


class ControllerFan:
    """One fan on a controller channel, driven and read like drivers.fan.Fan: the same
    reading, the same stall rule (commanded to spin but below stall_rpm in two readings
    running), so nothing above the drivers can tell the backends apart."""

    def __init__(self, chip: Emc2305, channel: int, name: str, *, stall_rpm: float = 300.0) -> None:
        self._chip = chip
        self.channel = channel
        self.name = name
        self._stall_rpm = stall_rpm
        self._slow = False

    @property
    def duty(self) -> float:
        return self._chip.duty(self.channel)

    def set_duty(self, duty: float) -> float:
        """Write a duty cycle (0..1) after the envelope accepts it; returns what was written."""
        return self._chip.set_duty(self.channel, duty, what=self.name)

    def read(self) -> FanReading:
        """The chip's latest measurement (it times every revolution, so there is no window
        to wait for); HardwareError if the bus fails."""
        duty, rpm = self._chip.read_channel(self.channel)
        slow = duty > 0 and rpm < self._stall_rpm
        reading = FanReading(duty=duty, rpm=rpm, stalled=slow and self._slow)
        self._slow = slow
        return reading

    def close(self) -> None:
        """Nothing to release: the chip keeps the last drive, and its watchdog runs the fan
        at full speed four seconds after the agent stops talking to it."""
