"""LM75/TMP75-class temperature sensors on the modules and the controller board.

The temperature register holds a left-justified two's-complement value, so dividing the
signed 16-bit word by 256 gives °C whatever the resolution (9-bit LM75, up to 12-bit
TMP75). A value outside what the part can measure is a bus or sensor fault, not a
temperature, and must never reach the thermal loop as one.

The OS (LM75) / ALERT (TMP75) output is a thermostat in the part itself: in comparator
mode it asserts once `fault_queue` conversions in a row read at or above T_OS (TMP75:
T_HIGH) and releases once as many read below T_HYST (T_LOW), with no host involved. Wired
to a GPIO (or straight to the hot-swap enable) it is the over-temperature cut that does
not wait for any software loop. Its power-on limits (LM75: 80/75 °C) are not ours: they
are programmed, and read back, for every module. Limit registers are compared at 0.5 °C
(the LM75's 9 bits), so limits are rounded down to a half degree: never above what was
asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from smbus2 import i2c_msg

from hashbay.drivers.errors import ProtocolError
from hashbay.drivers.i2c import I2CBus, message_bytes, transaction_error

TEMPERATURE_REGISTER = 0
CONFIG_REGISTER = 1
T_HYST_REGISTER = 2  # TMP75: T_LOW
T_OS_REGISTER = 3  # TMP75: T_HIGH
SHUTDOWN = 0x01
INTERRUPT_MODE = 0x02  # 0: comparator
ACTIVE_HIGH = 0x04  # 0: OS/ALERT pulls low when active (open drain)
FAULT_QUEUE_SHIFT = 3  # bits F1:F0: 1, 2, 4 or 6 conversions in a row
FAULT_QUEUES = {1: 0b00, 2: 0b01, 4: 0b10, 6: 0b11}
ALERT_MASK = SHUTDOWN | INTERRUPT_MODE | ACTIVE_HIGH | (0b11 << FAULT_QUEUE_SHIFT)
RESOLUTION_SHIFT = 5  # TMP75 configuration bits R1:R0
RESOLUTION_MASK = 0b11 << RESOLUTION_SHIFT
RANGE_C = (-55.0, 150.0)
LIMIT_STEP_C = 0.5


def resolution_bits(config: int) -> int:
    """Conversion resolution selected by a TMP75 configuration byte: 9..12 bits."""
    return 9 + ((config & RESOLUTION_MASK) >> RESOLUTION_SHIFT)


def decode_temperature(msb: int, lsb: int) -> float:
    return int.from_bytes(bytes((msb, lsb)), "big", signed=True) / 256


def encode_limit(celsius: float) -> bytes:
    """A T_OS/T_HYST register value: `celsius` rounded down to 0.5 °C, left-justified."""
    halves = math.floor(celsius / LIMIT_STEP_C)
    low, high = RANGE_C
    if not low <= halves * LIMIT_STEP_C <= min(high, 127.5):
        raise ValueError(f"{celsius} °C is not a limit the sensor can hold")
    return (halves << 7 & 0xFFFF).to_bytes(2, "big")


def alert_config(current: int, fault_queue: int) -> int:
    """The configuration byte for comparator mode, active low, with this fault queue;
    everything else (the TMP75's resolution) kept as it is."""
    if fault_queue not in FAULT_QUEUES:
        raise ValueError(f"fault queue must be one of {sorted(FAULT_QUEUES)}, got {fault_queue}")
    return (current & ~ALERT_MASK & 0xFF) | FAULT_QUEUES[fault_queue] << FAULT_QUEUE_SHIFT


@dataclass(frozen=True)
class AlertLimits:
    """What a sensor's comparator was programmed to, as read back from the part."""

    over_c: float  # asserts at or above this
    release_c: float  # releases below this
    fault_queue: int


class TemperatureSensor:
    """One LM75/TMP75-class sensor."""

    def __init__(self, bus: I2CBus, address: int, name: str) -> None:
        self._bus = bus
        self.address = address
        self.name = name

    def configure(self) -> int:
        """Ask for 12-bit conversions; returns the resolution the part actually took.

        A plain LM75 ignores the resolution bits and stays at 9 bits, which is fine: the
        value is read the same way.
        """
        try:
            config = self._bus.read_byte_data(self.address, CONFIG_REGISTER)
            self._bus.write_byte_data(self.address, CONFIG_REGISTER, config | RESOLUTION_MASK)
            return resolution_bits(self._bus.read_byte_data(self.address, CONFIG_REGISTER))
        except OSError as exc:
            raise transaction_error(self.name, self.address, "configure", exc) from exc

    def arm_alert(self, over_c: float, release_c: float, fault_queue: int) -> AlertLimits:
        """Program the OS/ALERT comparator and prove, by reading back, that the part took
        it; ProtocolError if it did not (a part that ignores its limits cannot be trusted
        to cut). Limits are rounded down to 0.5 °C."""
        if not release_c < over_c:
            raise ValueError(f"release {release_c} °C must be below the limit {over_c} °C")
        hyst, over = encode_limit(release_c), encode_limit(over_c)
        try:
            config = alert_config(
                self._bus.read_byte_data(self.address, CONFIG_REGISTER), fault_queue
            )
            self._write_register(T_HYST_REGISTER, hyst)
            self._write_register(T_OS_REGISTER, over)
            self._bus.write_byte_data(self.address, CONFIG_REGISTER, config)
            read_hyst = self._read_register(T_HYST_REGISTER)
            read_over = self._read_register(T_OS_REGISTER)
            read_config = self._bus.read_byte_data(self.address, CONFIG_REGISTER)
        except OSError as exc:
            raise transaction_error(self.name, self.address, "program its alert", exc) from exc
        if (read_hyst, read_over, read_config & ALERT_MASK) != (hyst, over, config & ALERT_MASK):
            raise ProtocolError(
                f"{self.name} (0x{self.address:02x}) did not keep its alert limits (wrote "
                f"{over.hex()}/{hyst.hex()}/{config:#04x}, read {read_over.hex()}/"
                f"{read_hyst.hex()}/{read_config:#04x}): its over-temperature output "
                "cannot be trusted; the module needs service"
            )
        return AlertLimits(
            over_c=decode_temperature(*over),
            release_c=decode_temperature(*hyst),
            fault_queue=fault_queue,
        )

    def _write_register(self, register: int, value: bytes) -> None:
        self._bus.i2c_rdwr(i2c_msg.write(self.address, bytes((register,)) + value))

    def _read_register(self, register: int) -> bytes:
        """A two-byte register, MSB first (as the part sends it; SMBus words are LSB first)."""
        request = i2c_msg.write(self.address, bytes((register,)))
        response = i2c_msg.read(self.address, 2)
        self._bus.i2c_rdwr(request, response)
        return bytes(message_bytes(response))

    def read_c(self) -> float:
        request = i2c_msg.write(self.address, bytes((TEMPERATURE_REGISTER,)))
        response = i2c_msg.read(self.address, 2)
        try:
            self._bus.i2c_rdwr(request, response)
        except OSError as exc:
            raise transaction_error(self.name, self.address, "read temperature", exc) from exc
        msb, lsb = message_bytes(response)
        temp_c = decode_temperature(msb, lsb)
        low, high = RANGE_C
        if not low <= temp_c <= high:
            raise ProtocolError(
                f"{self.name} (0x{self.address:02x}) read {temp_c:.2f} °C, outside the "
                f"sensor's {low:.0f}..{high:.0f} °C range: the sensor or its bus is faulty"
            )
        return temp_c
