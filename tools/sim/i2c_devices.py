"""Plain I2C device models: a module's 24C02 EEPROM and a TMP75-class temperature sensor.

They behave like the parts on the wire, including the awkward bits drivers must cope
with: the EEPROM ignores its address while it programs a page and wraps writes inside a
page; the sensor powers up at 9-bit resolution. PMBus devices are in pmbus_devices.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from hashbay.tools.sim.i2c import nack

EEPROM_SIZE = 256
EEPROM_PAGE = 8


class SimEeprom:
    """A 24C02: 256 bytes, 8-byte pages, a write cycle during which it does not ACK."""

    def __init__(
        self,
        contents: bytes = b"\xff" * EEPROM_SIZE,
        *,
        clock: Callable[[], float] = time.monotonic,
        write_cycle_s: float = 0.005,
    ) -> None:
        if len(contents) != EEPROM_SIZE:
            raise ValueError(f"a 24C02 holds {EEPROM_SIZE} bytes, not {len(contents)}")
        self.memory = bytearray(contents)
        self.programmed = bytes(contents)  # what the factory wrote (a damaged one heals to it)
        self.write_protected = False  # the WP pin: writes are ACKed and ignored
        self.lost = False
        self.writes = 0  # page writes performed, for wear/behaviour checks
        self._clock = clock
        self._write_cycle_s = write_cycle_s
        self._busy_until = float("-inf")
        self._pointer = 0

    @property
    def busy(self) -> bool:
        return self._clock() < self._busy_until

    def _answer(self) -> None:
        if self.lost or self.busy:
            raise nack()

    def write(self, data: bytes) -> None:
        self._answer()
        if not data:
            return  # address-only probe (ACK polling)
        self._pointer = data[0]
        payload = data[1:]
        if not payload:
            return  # word address for a following read
        page = self._pointer - self._pointer % EEPROM_PAGE
        start = self._pointer % EEPROM_PAGE
        if not self.write_protected:
            for i, byte in enumerate(payload):
                self.memory[page + (start + i) % EEPROM_PAGE] = byte
        self._pointer = page + (start + len(payload)) % EEPROM_PAGE
        self.writes += 1
        self._busy_until = self._clock() + self._write_cycle_s

    def read(self, length: int) -> bytes:
        self._answer()
        out = bytes(self.memory[(self._pointer + i) % EEPROM_SIZE] for i in range(length))
        self._pointer = (self._pointer + length) % EEPROM_SIZE
        return out

    def stop(self) -> None:
        pass


TMP75_RANGE_C = (-55.0, 127.9375)


class SimTemperatureSensor:
    """A TMP75: pointer register, temperature (0), configuration (1), T_LOW/T_HIGH (2/3).

    `temp_c` is set by the physics; the register shows it quantised to the configured
    resolution (9 bits at power-up) and clamped to what a 12-bit register can hold.
    Faults: `lost` (does not ACK) and `stuck` (keeps showing the value it had when stuck).
    With `configurable_resolution=False` it is a plain LM75: the resolution bits read
    back as 0 and conversions stay 9-bit.
    """

    def __init__(self, temp_c: float = 25.0, *, configurable_resolution: bool = True) -> None:
        self.temp_c = temp_c
        self.configurable_resolution = configurable_resolution
        self.lost = False
        self.config = 0x00
        self.t_low = 75 << 8  # power-on T_HYST: not anybody's limit
        self.t_high = 80 << 8  # power-on T_OS
        self.alert_active = False
        self._in_a_row = 0  # conversions in a row that move the alert
        self._waiting_to_release = False  # interrupt mode: the next event is a fall
        self._pointer = 0
        self._stuck_raw: int | None = None

    @property
    def resolution_bits(self) -> int:
        return 9 + ((self.config >> 5) & 0b11)

    @property
    def pulls_os_low(self) -> bool:
        """Whether the open-drain OS/ALERT output pulls its line low now (POL = 0:
        active low; POL = 1: low while inactive)."""
        return self.alert_active != bool(self.config & 0x04)

    def convert(self) -> None:
        """One conversion (called every physics step): the OS/ALERT thermostat.

        Comparator mode: asserts after `fault queue` conversions in a row at or above
        T_OS, releases after as many below T_HYST. Interrupt mode: asserts on the same
        events, alternately a rise past T_OS and a fall below T_HYST, and stays asserted
        until the host reads any register. Shutdown: no conversions, the output holds."""
        if self.config & 0x01 or self.lost:
            return
        value = self.shown_c()
        over_c = _signed(self.t_high) / 256
        release_c = _signed(self.t_low) / 256
        queue = (1, 2, 4, 6)[(self.config >> 3) & 0b11]
        interrupt = bool(self.config & 0x02)
        falling = self._waiting_to_release if interrupt else self.alert_active
        moving = value < release_c if falling else value >= over_c
        self._in_a_row = self._in_a_row + 1 if moving else 0
        if self._in_a_row < queue:
            return
        self._in_a_row = 0
        if interrupt:
            if not self.alert_active:
                self.alert_active = True
                self._waiting_to_release = not self._waiting_to_release
        else:
            self.alert_active = not self.alert_active

    def _raw(self) -> int:
        if self._stuck_raw is not None:
            return self._stuck_raw
        shift = 16 - self.resolution_bits
        low, high = TMP75_RANGE_C
        counts = round(min(max(self.temp_c, low), high) * 256 / (1 << shift))
        return (counts << shift) & 0xFFFF

    def shown_c(self) -> float:
        """What the temperature register reads right now, in °C."""
        return int.from_bytes(self._raw().to_bytes(2, "big"), "big", signed=True) / 256

    @property
    def stuck(self) -> bool:
        return self._stuck_raw is not None

    @stuck.setter
    def stuck(self, value: bool) -> None:
        self._stuck_raw = self._raw() if value else None

    def write(self, data: bytes) -> None:
        if self.lost:
            raise nack()
        if not data:
            return
        self._pointer = data[0] & 0b11
        payload = data[1:]
        if not payload:
            return
        if self._pointer == 1:
            self.config = payload[0] if self.configurable_resolution else payload[0] & 0x1F
        elif self._pointer == 2 and len(payload) >= 2:
            self.t_low = int.from_bytes(payload[:2], "big") & 0xFFF0
        elif self._pointer == 3 and len(payload) >= 2:
            self.t_high = int.from_bytes(payload[:2], "big") & 0xFFF0

    def read(self, length: int) -> bytes:
        """The pointed register, MSB first, repeated for as long as the host reads."""
        if self.lost:
            raise nack()
        if self.config & 0x02:
            self.alert_active = False  # interrupt mode: any read clears the alert
        if self._pointer == 1:
            register = bytes((self.config,))
        else:
            value = {0: self._raw(), 2: self.t_low, 3: self.t_high}[self._pointer]
            register = value.to_bytes(2, "big")
        return (register * length)[:length]

    def stop(self) -> None:
        pass


def _signed(register: int) -> int:
    return register - 0x10000 if register & 0x8000 else register
