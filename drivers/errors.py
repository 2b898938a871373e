"""A small error hierarchy: callers tell a bad frame from a dead bus from a refused setting.

Every message should tell an operator what failed and what to do about it.
"""


class HashbayError(Exception):
    """Base of every error hashbay raises on purpose."""


class ConfigError(HashbayError):
    """A configuration file or value is not acceptable; nothing has been touched."""


class HardwareError(HashbayError):
    """A device or bus did not answer or answered with a fault."""


class DeviceMissingError(HardwareError):
    """A device path (serial port, I2C bus, GPIO chip) does not exist or cannot be opened."""


class ProtocolError(HashbayError):
    """Bytes arrived that do not follow the protocol (bad CRC, bad length, bad value)."""


class SafetyViolation(HashbayError):
    """A requested setting lies outside the safe envelope; nothing was written to hardware."""


class PecError(ProtocolError):
    """An SMBus packet error code did not match: the bytes were damaged on the wire."""
