"""An smbus2.SMBus look-alike whose far end is device models instead of silicon.

Drivers cannot tell it from `smbus2.SMBus(1)`: the same methods, real `smbus2.i2c_msg`
objects for combined transactions (read buffers are filled in place), and the errors
i2c-dev gives on a Raspberry Pi: a missing or unpowered device is
`OSError(EREMOTEIO, "Remote I/O error")`.

A device model sees only what crosses the wire: `write(data)` for a write message,
`read(length)` for a read message (after a write in the same transaction that is a
repeated start; alone it is a current-address read or SMBus receive-byte) and `stop()`
at the end of every transaction that addressed it, which is where real parts act on
what they were sent. The SMBus convenience calls are the same primitives, e.g.
`write_byte_data(a, c, v)` is `write(bytes([c, v]))` then `stop()`.

Faults for tests and the rig: per-address or bus-wide error rates (EIO), one flipped bit
in the next read from an address or a share of reads with a flipped bit (what PEC is
for), and a hung bus whose transactions block and then time out with ETIMEDOUT like the
bcm2835 adapter's.
"""

from __future__ import annotations

import ctypes
import errno
import random
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Protocol

from smbus2 import i2c_msg

from hashbay.drivers.i2c import message_bytes

I2C_M_RD = 0x0001
SMBUS_BLOCK_MAX = 32


def nack() -> OSError:
    """What the kernel reports when a device does not acknowledge."""
    return OSError(errno.EREMOTEIO, "Remote I/O error")


class SimI2CDevice(Protocol):
    def write(self, data: bytes) -> None: ...

    def read(self, length: int) -> bytes: ...

    def stop(self) -> None: ...


class SimI2CBus:
    """A simulated I2C bus; thread-safe, one transaction at a time like the real wire."""

    def __init__(
        self,
        *,
        rng: random.Random | None = None,
        adapter_timeout_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pec = 0  # accepted for smbus2 compatibility; hashbay computes PEC itself
        self.lock = threading.RLock()
        self.transactions = 0
        self.cpu_on_host_threads_s = 0.0
        self._devices: dict[int, SimI2CDevice] = {}
        self._rng = rng or random.Random()
        self._adapter_timeout_s = adapter_timeout_s
        self._sleep = sleep
        self._clock = clock
        self._closed = False
        self._error_rates: dict[int | None, float] = {}
        self._corrupt: dict[int, tuple[int, int]] = {}
        self._flip_rates: dict[int, float] = {}
        self._hung_until = 0.0

    # -- wiring --------------------------------------------------------------------------

    def attach(self, address: int, device: SimI2CDevice) -> None:
        if not 0x03 <= address <= 0x77:
            raise ValueError(f"0x{address:02x} is not a 7-bit device address")
        with self.lock:
            if address in self._devices:
                raise ValueError(f"address 0x{address:02x} is already taken on this bus")
            self._devices[address] = device

    def detach(self, address: int) -> SimI2CDevice | None:
        """Remove a device (a module pulled out takes its EEPROM and sensors with it)."""
        with self.lock:
            return self._devices.pop(address, None)

    def device(self, address: int) -> SimI2CDevice | None:
        with self.lock:
            return self._devices.get(address)

    def addresses(self) -> tuple[int, ...]:
        with self.lock:
            return tuple(sorted(self._devices))

    # -- fault injection -----------------------------------------------------------------

    def set_error_rate(self, rate: float, address: int | None = None) -> None:
        """Fail this fraction of transactions with EIO, for one address or (None) all.

        Drawn once per transaction and device, so a register read (write the pointer,
        repeated start, read) fails at this rate, not at nearly twice it.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"error rate {rate} outside 0..1")
        with self.lock:
            self._error_rates[address] = rate

    def corrupt_next_read(self, address: int, *, byte_index: int = 0, bit: int = 0) -> None:
        """Flip one bit of the next read message from address (if it is that long)."""
        with self.lock:
            self._corrupt[address] = (byte_index, bit)

    def set_bit_flip_rate(self, rate: float, address: int) -> None:
        """Flip one random bit in this share of the read messages from `address`."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"bit flip rate {rate} outside 0..1")
        with self.lock:
            self._flip_rates[address] = rate

    def hang(self, seconds: float) -> None:
        """Hold the bus stuck: transactions wait, and fail with ETIMEDOUT if it outlasts
        the adapter timeout.
        """
        with self.lock:
            self._hung_until = self._clock() + seconds

    def clear_faults(self) -> None:
        with self.lock:
            self._error_rates.clear()
            self._corrupt.clear()
            self._flip_rates.clear()
            self._hung_until = 0.0

    # -- the wire ------------------------------------------------------------------------

    def _wait_if_hung(self) -> None:
        # Outside the lock: the rig's physics must keep stepping while the bus is stuck.
        remaining = self._hung_until - self._clock()
        if remaining <= 0:
            return
        self._sleep(min(remaining, self._adapter_timeout_s))
        if self._hung_until - self._clock() > 0:
            raise OSError(errno.ETIMEDOUT, "Connection timed out")

    def _transfer(self, messages: Sequence[tuple[int, bytes | int]]) -> list[bytes]:
        """Run one transaction: (address, bytes) writes and (address, length) reads.

        The device models run on the caller's thread (the host's hardware thread), so the
        CPU they take there is counted apart: a benchmark takes it out of the host's."""
        started = time.thread_time()
        try:
            return self._transfer_timed(messages)
        finally:
            if not threading.current_thread().name.startswith("sim-"):
                self.cpu_on_host_threads_s += time.thread_time() - started

    def _transfer_timed(self, messages: Sequence[tuple[int, bytes | int]]) -> list[bytes]:
        if self._closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        self._wait_if_hung()
        results: list[bytes] = []
        with self.lock:
            self.transactions += 1
            touched: list[SimI2CDevice] = []
            try:
                for address, payload in messages:
                    device = self._devices.get(address)
                    if device is None:
                        raise nack()
                    if device not in touched:
                        touched.append(device)
                        rate = max(
                            self._error_rates.get(address, 0.0), self._error_rates.get(None, 0.0)
                        )
                        if rate and self._rng.random() < rate:
                            raise OSError(errno.EIO, "Input/output error")
                    if isinstance(payload, bytes):
                        device.write(payload)
                    else:
                        results.append(self._read(address, device, payload))
            finally:
                for device in touched:
                    device.stop()
        return results

    def _read(self, address: int, device: SimI2CDevice, length: int) -> bytes:
        data = bytearray(device.read(length)[:length].ljust(length, b"\xff"))
        corrupt = self._corrupt.pop(address, None)
        if corrupt is not None and corrupt[0] < length:
            data[corrupt[0]] ^= 1 << corrupt[1]
        rate = self._flip_rates.get(address, 0.0)
        if rate and length and self._rng.random() < rate:
            data[self._rng.randrange(length)] ^= 1 << self._rng.randrange(8)
        return bytes(data)

    # -- smbus2.SMBus interface ----------------------------------------------------------

    def i2c_rdwr(self, *i2c_msgs: i2c_msg) -> None:
        plan: list[tuple[int, bytes | int]] = []
        for msg in i2c_msgs:
            if msg.flags & I2C_M_RD:
                plan.append((msg.addr, int(msg.len)))
            else:
                plan.append((msg.addr, message_bytes(msg)))
        data = iter(self._transfer(plan))
        for msg in i2c_msgs:
            if msg.flags & I2C_M_RD:
                ctypes.memmove(msg.buf, next(data), msg.len)

    def read_byte(self, i2c_addr: int, force: bool | None = None) -> int:
        return self._transfer([(i2c_addr, 1)])[0][0]

    def write_byte(self, i2c_addr: int, value: int, force: bool | None = None) -> None:
        self._transfer([(i2c_addr, bytes((value,)))])

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        return self._transfer([(i2c_addr, bytes((register,))), (i2c_addr, 1)])[0][0]

    def write_byte_data(
        self, i2c_addr: int, register: int, value: int, force: bool | None = None
    ) -> None:
        self._transfer([(i2c_addr, bytes((register, value)))])

    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        data = self._transfer([(i2c_addr, bytes((register,))), (i2c_addr, 2)])[0]
        return int.from_bytes(data, "little")

    def write_word_data(
        self, i2c_addr: int, register: int, value: int, force: bool | None = None
    ) -> None:
        self._transfer([(i2c_addr, bytes((register,)) + value.to_bytes(2, "little"))])

    def read_i2c_block_data(
        self, i2c_addr: int, register: int, length: int, force: bool | None = None
    ) -> list[int]:
        if length > SMBUS_BLOCK_MAX:
            raise ValueError(f"Desired block length over {SMBUS_BLOCK_MAX} bytes")
        return list(self._transfer([(i2c_addr, bytes((register,))), (i2c_addr, length)])[0])

    def write_i2c_block_data(
        self, i2c_addr: int, register: int, data: Sequence[int], force: bool | None = None
    ) -> None:
        if len(data) > SMBUS_BLOCK_MAX:
            raise ValueError(f"Data length cannot exceed {SMBUS_BLOCK_MAX} bytes")
        self._transfer([(i2c_addr, bytes((register, *data)))])

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> SimI2CBus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.close()
