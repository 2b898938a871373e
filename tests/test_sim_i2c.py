"""The simulated I2C bus behaves like smbus2 on a Pi; LockedI2C and error wording."""

from __future__ import annotations

import errno
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from smbus2 import i2c_msg

from hashbay.drivers.errors import DeviceMissingError, HardwareError
from hashbay.drivers.i2c import LockedI2C, message_bytes, open_i2c, transaction_error
from hashbay.drivers.pmbus import Psu
from hashbay.tools.sim.i2c import SimI2CBus
from hashbay.tools.sim.i2c_devices import SimEeprom
from hashbay.tools.sim.pmbus_devices import SimPsu

ADDR = 0x40


class Recorder:
    """A device that logs what crosses the wire and answers with fixed bytes."""

    def __init__(self, reply: bytes = b"\x11\x22\x33\x44") -> None:
        self.reply = reply
        self.log: list[tuple[str, bytes | int]] = []

    def write(self, data: bytes) -> None:
        self.log.append(("write", data))

    def read(self, length: int) -> bytes:
        self.log.append(("read", length))
        return self.reply[:length]

    def stop(self) -> None:
        self.log.append(("stop", 0))


@pytest.fixture
def wired() -> tuple[SimI2CBus, Recorder]:
    bus = SimI2CBus()
    device = Recorder()
    bus.attach(ADDR, device)
    return bus, device


W, R, STOP = "write", "read", ("stop", 0)


@pytest.mark.parametrize(
    ("call", "wire", "result"),
    [
        (lambda b: b.read_byte(ADDR), [(R, 1), STOP], 0x11),
        (lambda b: b.write_byte(ADDR, 7), [(W, b"\x07"), STOP], None),
        (lambda b: b.read_byte_data(ADDR, 5), [(W, b"\x05"), (R, 1), STOP], 0x11),
        (lambda b: b.write_byte_data(ADDR, 5, 9), [(W, b"\x05\x09"), STOP], None),
        (lambda b: b.read_word_data(ADDR, 5), [(W, b"\x05"), (R, 2), STOP], 0x2211),
        (lambda b: b.write_word_data(ADDR, 5, 0xABCD), [(W, b"\x05\xcd\xab"), STOP], None),
        (
            lambda b: b.read_i2c_block_data(ADDR, 5, 3),
            [(W, b"\x05"), (R, 3), STOP],
            [0x11, 0x22, 0x33],
        ),
        (lambda b: b.write_i2c_block_data(ADDR, 5, [1, 2]), [(W, b"\x05\x01\x02"), STOP], None),
    ],
)
def test_smbus_calls_are_the_same_wire_primitives(
    wired: tuple[SimI2CBus, Recorder],
    call: Callable[[SimI2CBus], Any],
    wire: list[tuple[str, bytes | int]],
    result: Any,
) -> None:
    bus, device = wired
    assert call(bus) == result
    assert device.log == wire


def test_i2c_rdwr_fills_read_buffers_in_place(wired: tuple[SimI2CBus, Recorder]) -> None:
    bus, device = wired
    request, response = i2c_msg.write(ADDR, [0x8B]), i2c_msg.read(ADDR, 3)
    bus.i2c_rdwr(request, response)
    assert message_bytes(response) == b"\x11\x22\x33"
    assert device.log == [(W, b"\x8b"), (R, 3), STOP]


def test_a_read_longer_than_the_answer_is_padded_like_a_released_bus(
    wired: tuple[SimI2CBus, Recorder],
) -> None:
    bus, _ = wired
    assert bus.read_i2c_block_data(ADDR, 0, 6) == [0x11, 0x22, 0x33, 0x44, 0xFF, 0xFF]
    with pytest.raises(ValueError, match="over 32"):
        bus.read_i2c_block_data(ADDR, 0, 33)


def test_nobody_at_an_address_is_remote_io_error_like_on_a_pi(
    wired: tuple[SimI2CBus, Recorder],
) -> None:
    bus, _ = wired
    with pytest.raises(OSError, match="Remote I/O error") as caught:
        bus.read_byte_data(0x41, 0)
    assert caught.value.errno == errno.EREMOTEIO


def test_a_pulled_module_takes_its_devices_with_it(wired: tuple[SimI2CBus, Recorder]) -> None:
    bus, device = wired
    assert bus.detach(ADDR) is device
    assert bus.addresses() == ()
    with pytest.raises(OSError, match="Remote I/O error"):
        bus.read_byte(ADDR)
    bus.attach(ADDR, device)
    assert bus.read_byte(ADDR) == 0x11


def test_addresses_are_seven_bit_and_taken_once(wired: tuple[SimI2CBus, Recorder]) -> None:
    bus, device = wired
    with pytest.raises(ValueError, match="already taken"):
        bus.attach(ADDR, device)
    with pytest.raises(ValueError, match="7-bit"):
        bus.attach(0x80, device)


def test_error_rates_per_address_and_bus_wide(wired: tuple[SimI2CBus, Recorder]) -> None:
    bus, _ = wired
    other = Recorder(b"\x55")
    bus.attach(0x41, other)
    bus.set_error_rate(1.0, ADDR)
    with pytest.raises(OSError, match="Input/output error") as caught:
        bus.read_byte(ADDR)
    assert caught.value.errno == errno.EIO
    assert bus.read_byte(0x41) == 0x55
    bus.set_error_rate(1.0)
    with pytest.raises(OSError, match="Input/output error"):
        bus.read_byte(0x41)
    bus.clear_faults()
    assert bus.read_byte(ADDR) == 0x11


def test_a_partial_error_rate_fails_some_transactions() -> None:
    bus = SimI2CBus(rng=random.Random(7))
    bus.attach(ADDR, Recorder())
    bus.set_error_rate(0.5, ADDR)
    failures = 0
    for _ in range(200):
        try:
            bus.read_byte(ADDR)
        except OSError:
            failures += 1
    assert 60 < failures < 140


def test_corruption_hits_exactly_the_next_read(wired: tuple[SimI2CBus, Recorder]) -> None:
    bus, _ = wired
    bus.corrupt_next_read(ADDR, byte_index=1, bit=0)
    assert bus.read_i2c_block_data(ADDR, 0, 2) == [0x11, 0x23]
    assert bus.read_i2c_block_data(ADDR, 0, 2) == [0x11, 0x22]


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_hung_bus_blocks_then_times_out_like_the_adapter() -> None:
    fake = FakeTime()
    bus = SimI2CBus(adapter_timeout_s=1.0, clock=fake.clock, sleep=fake.sleep)
    bus.attach(ADDR, Recorder())
    bus.hang(0.3)
    assert bus.read_byte(ADDR) == 0x11  # waited out the hang
    assert fake.slept == [pytest.approx(0.3)]
    bus.hang(5.0)
    with pytest.raises(OSError, match="timed out") as caught:
        bus.read_byte(ADDR)
    assert caught.value.errno == errno.ETIMEDOUT
    assert fake.slept[-1] == 1.0


def test_a_second_thread_gives_up_on_a_hung_bus_with_bus_busy() -> None:
    sim = SimI2CBus(adapter_timeout_s=1.0)
    sim.attach(ADDR, Recorder())
    bus = LockedI2C(sim, timeout_s=0.05)
    sim.hang(0.3)
    worker = threading.Thread(target=lambda: bus.read_byte_data(ADDR, 0))
    worker.start()
    time.sleep(0.02)  # the worker is inside its transaction, waiting on the bus
    with pytest.raises(HardwareError, match=r"I2C bus busy for 0\.05 s"):
        bus.read_byte_data(ADDR, 0)
    worker.join()
    assert bus.read_byte_data(ADDR, 0) == 0x11


def test_a_closed_bus_refuses_transactions() -> None:
    with SimI2CBus() as bus:
        bus.attach(ADDR, Recorder())
        bus.pec = 1  # accepted like smbus2's attribute
    with pytest.raises(OSError, match="Bad file descriptor"):
        bus.read_byte(ADDR)


def test_concurrent_transactions_never_interleave() -> None:
    bus = SimI2CBus()
    bus.attach(0x50, SimEeprom(bytes(range(256)), clock=lambda: 0.0))
    errors: list[str] = []

    def reader(offset: int) -> None:
        for _ in range(200):
            got = bus.read_i2c_block_data(0x50, offset, 4)
            if got != [offset, offset + 1, offset + 2, offset + 3]:
                errors.append(f"{offset}: {got}")

    threads = [threading.Thread(target=reader, args=(o,)) for o in (0, 64, 128, 192)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_drivers_run_unchanged_through_the_lock() -> None:
    sim = SimI2CBus()
    sim.attach(0x58, SimPsu(0x58))
    assert Psu(LockedI2C(sim), 0x58).read_telemetry().vout_v == pytest.approx(54.0)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            OSError(errno.EREMOTEIO, "Remote I/O error"),
            "slot 1 DC-DC (0x21) READ_VOUT: Remote I/O error "
            "(device did not answer; is the module seated and powered?)",
        ),
        (
            OSError(errno.ETIMEDOUT, "Connection timed out"),
            "slot 1 DC-DC (0x21) READ_VOUT: Connection timed out (bus timed out; a device "
            "may be holding the clock low, power-cycle the module)",
        ),
        (OSError("odd"), "slot 1 DC-DC (0x21) READ_VOUT: odd"),
    ],
)
def test_transaction_errors_tell_the_operator_what_to_check(exc: OSError, expected: str) -> None:
    error = transaction_error("slot 1 DC-DC", 0x21, "READ_VOUT", exc)
    assert isinstance(error, HardwareError)
    assert str(error) == expected


def test_a_missing_bus_device_is_device_missing_error() -> None:
    with pytest.raises(DeviceMissingError, match=r"I2C bus /dev/i2c-97 cannot be opened"):
        open_i2c("/dev/i2c-97")
