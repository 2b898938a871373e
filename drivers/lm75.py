"""LM75/TMP75-class temperature sensors on the modules and the controller board.

The temperature register holds a left-justified two's-complement value, so dividing the
signed 16-bit word by 256 gives °C whatever the resolution (9-bit LM75, up to 12-bit
TMP75). A value outside what the part can measure is a bus or sensor fault, not a
temperature, and must never reach the thermal loop as one.
"""

from __future__ import annotations

from smbus2 import i2c_msg

from hashbay.drivers.errors import ProtocolError
from hashbay.drivers.i2c import I2CBus, message_bytes, transaction_error

TEMPERATURE_REGISTER = 0
CONFIG_REGISTER = 1
RESOLUTION_SHIFT = 5  # TMP75 configuration bits R1:R0
RESOLUTION_MASK = 0b11 << RESOLUTION_SHIFT
RANGE_C = (-55.0, 150.0)


def resolution_bits(config: int) -> int:
    """Conversion resolution selected by a TMP75 configuration byte: 9..12 bits."""
    return 9 + ((config & RESOLUTION_MASK) >> RESOLUTION_SHIFT)


def decode_temperature(msb: int, lsb: int) -> float:
    return int.from_bytes(bytes((msb, lsb)), "big", signed=True) / 256


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
