"""The I2C bus as the drivers see it: the few smbus2.SMBus methods hashbay uses.

Drivers take an `I2CBus` and never learn whether it is `smbus2.SMBus("/dev/i2c-1")` or
the simulator's bus. The agent serialises bus traffic on one worker thread, but the
safe-state path may run from another, so the bus it hands out is wrapped in `LockedI2C`:
one lock per transaction, so two threads never interleave bytes of different
transactions on the wire.

`LockedI2C` also counts, per device address, every transaction and how each failed one
failed (`BusErrors`): a NACK (absent or unpowered), a timeout (a device holding the bus),
another bus error (EIO: noise, arbitration) and, told by the PMBus driver that checks
it, a PEC mismatch. A device that keeps failing is a connector or a part going bad.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from smbus2 import SMBus, i2c_msg

from hashbay.drivers.errors import DeviceMissingError, HardwareError

DEFAULT_LOCK_TIMEOUT_S = 2.0
_NACK = frozenset({errno.EREMOTEIO, errno.ENXIO})


class I2CBus(Protocol):
    """The subset of smbus2.SMBus that hashbay's drivers use."""

    def i2c_rdwr(self, *i2c_msgs: i2c_msg) -> None: ...

    def read_byte_data(self, i2c_addr: int, register: int) -> int: ...

    def write_byte_data(self, i2c_addr: int, register: int, value: int) -> None: ...

    def read_word_data(self, i2c_addr: int, register: int) -> int: ...

    def write_word_data(self, i2c_addr: int, register: int, value: int) -> None: ...

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]: ...

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Sequence[int]) -> None: ...

    def close(self) -> None: ...


def open_i2c(path: str) -> I2CBus:
    """Open a Linux i2c-dev bus such as "/dev/i2c-1"."""
    try:
        return SMBus(path)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise DeviceMissingError(
            f"I2C bus {path} cannot be opened ({reason}); enable I2C on the controller "
            "(dtparam=i2c_arm=on), check the path in hardware.i2c_bus and that the hashbay "
            "user is in the i2c group"
        ) from exc


@dataclass(frozen=True)
class DeviceCounts:
    """How one address's transactions went, since the bus was opened."""

    transactions: int = 0
    nacks: int = 0
    pec_errors: int = 0
    timeouts: int = 0
    bus_errors: int = 0

    @property
    def failed(self) -> int:
        return self.nacks + self.pec_errors + self.timeouts + self.bus_errors


class BusErrors:
    """Per-address transaction and failure counts; thread-safe, cheap (a dict update)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[int, list[int]] = {}

    def _bump(self, address: int, field: int) -> None:
        with self._lock:
            counts = self._counts.get(address)
            if counts is None:
                counts = self._counts[address] = [0, 0, 0, 0, 0]
            counts[field] += 1

    def transaction(self, address: int) -> None:
        self._bump(address, 0)

    def failure(self, address: int, exc: BaseException) -> None:
        """Count a failed transaction by what the kernel (or the bus lock) said."""
        code = exc.errno if isinstance(exc, OSError) else errno.ETIMEDOUT
        self._bump(address, 1 if code in _NACK else 3 if code == errno.ETIMEDOUT else 4)

    def pec_error(self, address: int) -> None:
        """A transaction that went through but whose PEC did not match."""
        self._bump(address, 2)

    def counts(self, address: int) -> DeviceCounts:
        with self._lock:
            counts = self._counts.get(address)
            return DeviceCounts(*counts) if counts is not None else DeviceCounts()


@runtime_checkable
class CountsPecErrors(Protocol):
    """A bus that wants to hear of PEC mismatches (only the driver that checks PEC sees them)."""

    def count_pec_error(self, address: int) -> None: ...


class LockedI2C:
    """An I2CBus whose transactions are serialised by a lock taken with a timeout, and
    counted per device (`errors`).

    A stuck transaction (a device holding SCL low) must not freeze the safe-state path
    for ever, so waiting for the bus gives up with HardwareError after `timeout_s`.
    """

    def __init__(self, bus: I2CBus, *, timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> None:
        self._bus = bus
        self._timeout_s = timeout_s
        self._lock = threading.RLock()
        self.errors = BusErrors()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the bus across several transactions (e.g. select a page, then read it)."""
        if not self._lock.acquire(timeout=self._timeout_s):
            raise HardwareError(
                f"I2C bus busy for {self._timeout_s:g} s: another transaction has not "
                "finished; a device may be holding the bus (power-cycle the module or "
                "the controller if this repeats)"
            )
        try:
            yield
        finally:
            self._lock.release()

    @contextmanager
    def _counted(self, address: int) -> Iterator[None]:
        self.errors.transaction(address)
        try:
            with self.exclusive():
                yield
        except (OSError, HardwareError) as exc:
            self.errors.failure(address, exc)
            raise

    def count_pec_error(self, address: int) -> None:
        self.errors.pec_error(address)

    def i2c_rdwr(self, *i2c_msgs: i2c_msg) -> None:
        with self._counted(int(i2c_msgs[0].addr) if i2c_msgs else 0):
            self._bus.i2c_rdwr(*i2c_msgs)

    def read_byte_data(self, i2c_addr: int, register: int) -> int:
        with self._counted(i2c_addr):
            return self._bus.read_byte_data(i2c_addr, register)

    def write_byte_data(self, i2c_addr: int, register: int, value: int) -> None:
        with self._counted(i2c_addr):
            self._bus.write_byte_data(i2c_addr, register, value)

    def read_word_data(self, i2c_addr: int, register: int) -> int:
        with self._counted(i2c_addr):
            return self._bus.read_word_data(i2c_addr, register)

    def write_word_data(self, i2c_addr: int, register: int, value: int) -> None:
        with self._counted(i2c_addr):
            self._bus.write_word_data(i2c_addr, register, value)

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        with self._counted(i2c_addr):
            return self._bus.read_i2c_block_data(i2c_addr, register, length)

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Sequence[int]) -> None:
        with self._counted(i2c_addr):
            self._bus.write_i2c_block_data(i2c_addr, register, data)

    def close(self) -> None:
        with self.exclusive():
            self._bus.close()


# What an errno from i2c-dev means for the person standing at the miner.
_HINTS = {
    errno.EREMOTEIO: "device did not answer; is the module seated and powered?",
    errno.ENXIO: "device did not answer; is the module seated and powered?",
    errno.EIO: "bus error; check the module connector and cabling, then retry",
    errno.ETIMEDOUT: "bus timed out; a device may be holding the clock low, power-cycle the module",
    errno.EAGAIN: "lost bus arbitration; another master is on the bus, retry",
    errno.EBADF: "the I2C bus is closed; the agent is shutting down or lost the bus",
}


def transaction_error(name: str, address: int, what: str, exc: OSError) -> HardwareError:
    """A HardwareError that says which device, which operation, and what to check."""
    code = exc.errno
    reason = exc.strerror or (os.strerror(code) if code else str(exc) or type(exc).__name__)
    hint = _HINTS.get(code) if code is not None else None
    suffix = f" ({hint})" if hint else ""
    return HardwareError(f"{name} (0x{address:02x}) {what}: {reason}{suffix}")


def message_bytes(message: i2c_msg) -> bytes:
    """The bytes in an i2c_msg buffer (what a read message received)."""
    return ctypes.string_at(message.buf, message.len)
