"""The EMC2305 fan controller driver against the simulated part: registers as the
datasheet lays them out, duty out, RPM in, stalls, the envelope, bus errors, watchdog."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pytest

from hashbay.drivers.emc2305 import ControllerFan, Emc2305, drive_value, tach_rpm
from hashbay.drivers.envelope import BoardLimits, FanLimits, SafetyEnvelope
from hashbay.drivers.errors import HardwareError, SafetyViolation
from hashbay.drivers.i2c import LockedI2C
from hashbay.tools.sim.emc2305 import SimEmc2305
from hashbay.tools.sim.fans import SimFan
from hashbay.tools.sim.i2c import SimI2CBus

from .support import Clock

ADDRESS = 0x2F
CHANNELS = (1, 2, 3, 4)


@dataclass
class Spinning:
    """A rotor at a fixed speed, for exact tach counts."""

    rpm: float


def envelope(low: float = 0.2, high: float = 1.0) -> SafetyEnvelope:
    return SafetyEnvelope(FanLimits(low, high), BoardLimits(11, 15.5, 50, 800, 1800), 5500)


class Bench:
    """A simulated controller on a simulated bus with four fans, on a hand-moved clock."""

    def __init__(self, limits: SafetyEnvelope | None = None, product_id: int = 0x34) -> None:
        self.clock = Clock(0.0)
        self.bus = SimI2CBus(clock=self.clock)
        self.part = SimEmc2305(ADDRESS, self.clock, product_id=product_id)
        self.bus.attach(ADDRESS, self.part)
        self.fans = []
        for channel in CHANNELS:
            fan = SimFan(None, None, None, drive=self.part.drive(channel))
            self.part.connect(channel, fan)
            self.fans.append(fan)
        self.restores: list[str] = []
        self.chip = Emc2305(
            LockedI2C(self.bus), ADDRESS, limits or envelope(), on_restore=self.restores.append
        )

    def configure(self) -> list[ControllerFan]:
        self.chip.configure(CHANNELS)
        return [self.chip.fan(c, f"fan{c - 1}") for c in CHANNELS]

    def run(self, seconds: float, *, silent: bool = False, dt_s: float = 0.05) -> None:
        """Let simulated time pass; the host touches the part every second (as the agent's
        poll does) unless `silent`."""
        steps_per_s = round(1.0 / dt_s)
        for n in range(1, round(seconds / dt_s) + 1):
            self.clock.now += dt_s
            self.part.step()
            for fan in self.fans:
                fan.step(dt_s)
            if not silent and n % steps_per_s == 0:
                self.bus.read_byte_data(ADDRESS, 0xFE)

    def register(self, address: int) -> int:
        return self.part.registers[address]


@pytest.fixture
def bench() -> Bench:
    return Bench()


def test_configure_writes_the_datasheet_settings_and_starts_every_fan_at_full_drive(
    bench: Bench,
) -> None:
    bench.configure()
    assert bench.register(0x20) == 0x60  # DIS_TO | WD_EN: plain I2C, continuous watchdog
    assert bench.register(0x2A) == 0x00  # normal polarity
    assert bench.register(0x2B) == 0x00  # open drain
    assert bench.register(0x2C) == 0x00  # PWM 4, 5 base 26.00 kHz
    assert bench.register(0x2D) == 0x00  # PWM 1-3 base 26.00 kHz
    for base in (0x30, 0x40, 0x50, 0x60):
        assert bench.register(base) == 0xFF  # drive 100 %
        assert bench.register(base + 1) == 0x01  # divide by 1: 26 kHz
        assert bench.register(base + 2) == 0x0B  # direct mode, RANGE 500 rpm, 5 edges, 400 ms
    assert bench.register(0x72) == 0x2B  # channel 5 is not wired: left at its power-on value
    assert bench.chip.model == "EMC2305"
    assert [f.duty for f in bench.fans] == [1.0] * 4


def test_configure_puts_back_what_a_previous_owner_changed(bench: Bench) -> None:
    bench.part.write(bytes((0x2A, 0x1F, 0x1F, 0x0F, 0x3F)))  # inverted, push-pull, 2.4 kHz
    bench.part.write(bytes((0x31, 0x04, 0x8B)))  # divide by 4, closed loop
    bench.configure()
    assert [bench.register(r) for r in (0x2A, 0x2B, 0x2C, 0x2D)] == [0x00] * 4
    assert (bench.register(0x31), bench.register(0x32)) == (0x01, 0x0B)
    assert bench.fans[0].duty == 1.0


@pytest.mark.parametrize(
    ("product", "model", "channels"),
    [(0x34, "EMC2305", 5), (0x35, "EMC2303", 3), (0x36, "EMC2302", 2), (0x37, "EMC2301", 1)],
)
def test_each_member_of_the_family_is_known_with_its_channels(
    product: int, model: str, channels: int
) -> None:
    bench = Bench(product_id=product)
    bench.chip.configure(range(1, channels + 1))
    assert (bench.chip.model, bench.chip.channels) == (model, channels)
    with pytest.raises(HardwareError, match=rf"{model} with {channels} channel\(s\)"):
        Bench(product_id=product).chip.configure(range(1, channels + 2))


def test_a_duty_is_written_as_value_over_255_and_the_fan_follows(bench: Bench) -> None:
    fans = bench.configure()
    assert fans[0].set_duty(0.4) == pytest.approx(102 / 255)
    assert bench.register(0x30) == 0x66
    assert bench.fans[0].duty == pytest.approx(0.4)
    bench.run(15.0)
    reading = fans[0].read()
    assert reading.duty == pytest.approx(102 / 255)
    assert reading.rpm == pytest.approx(bench.fans[0].rpm, rel=0.005)
    assert reading.rpm == pytest.approx(2400, rel=0.01)
    assert not reading.stalled
    full = fans[1].read()
    assert full.duty == 1.0
    assert full.rpm == pytest.approx(6000, rel=0.01)


def test_tach_bytes_decode_with_the_datasheet_formula() -> None:
    assert tach_rpm(0xFF, 0xF8) == 0.0  # power-on value: count saturated, no fan seen
    assert tach_rpm(0x00, 0x00) == 0.0  # no count at all: nothing to divide by
    assert tach_rpm(0x28, 0xF8) == 3_932_160 / 1311  # count 1311
    assert tach_rpm(0x05, 0x18) == 3_932_160 / 163  # count 163: 24,000 rpm
    assert tach_rpm(0x51, 0xE8, multiplier=2) == 3_932_160 * 2 / 2621  # RANGE 1000 rpm


def test_the_simulated_tach_registers_hold_the_count_of_the_fan_speed() -> None:
    clock = Clock(0.0)
    part = SimEmc2305(ADDRESS, clock)
    part.connect(1, Spinning(3000.0))
    part.connect(2, Spinning(0.0))
    part.connect(3, Spinning(3000.0))
    part.write(bytes((0x32, 0x0B)))  # RANGE 500 rpm: multiplier 1
    part.write(bytes((0x3E,)))
    assert part.read(2) == bytes((0x28, 0xF8))  # count 1311 = 3,932,160 / 3000
    part.write(bytes((0x4E,)))
    assert part.read(2) == bytes((0xFF, 0xF8))  # stopped: the count saturates
    part.write(bytes((0x5E,)))
    assert part.read(2) == bytes((0x51, 0xE8))  # power-on RANGE 1000 rpm (m = 2): count 2621


def test_reading_the_high_byte_latches_the_low_byte() -> None:
    clock = Clock(0.0)
    fan = Spinning(3000.0)
    part = SimEmc2305(ADDRESS, clock)
    part.connect(1, fan)
    part.write(bytes((0x3E,)))
    high = part.read(1)[0]
    fan.rpm = 2900.0  # count 1356: a different low byte
    low = part.read(1)[0]
    assert (high, low) == (0x51, 0xE8)  # count 2621 at 3000 rpm (power-on RANGE, m = 2)


def test_a_stalled_fan_is_reported_only_after_two_slow_readings(bench: Bench) -> None:
    fans = bench.configure()
    bench.run(5.0)
    assert not fans[2].read().stalled
    bench.fans[2].stall()
    bench.run(1.0)
    first = fans[2].read()
    assert first.rpm == 0.0
    assert not first.stalled
    bench.run(1.0)
    assert fans[2].read().stalled
    assert not fans[1].read().stalled
    assert bench.register(0x25) & 0b0100  # the part flags it too (FAN STALL STATUS)
    fresh = bench.chip.fan(3, "fan2 again")  # a first reading is one window, not two
    assert not fresh.read().stalled
    assert fresh.read().stalled


def test_a_fan_commanded_off_is_not_stalled() -> None:
    bench = Bench(envelope(0.0, 1.0))
    fans = bench.configure()
    fans[0].set_duty(0.0)
    bench.run(10.0)
    assert [fans[0].read().stalled for _ in range(3)] == [False] * 3
    assert fans[0].read().rpm == 0.0


def test_the_envelope_refuses_a_duty_before_anything_reaches_the_bus(bench: Bench) -> None:
    fans = bench.configure()
    before = bench.bus.transactions
    for duty in (0.1, 1.5, math.nan, math.inf):
        with pytest.raises(SafetyViolation):
            fans[0].set_duty(duty)
    assert bench.bus.transactions == before
    assert bench.register(0x30) == 0xFF
    with pytest.raises(SafetyViolation, match="fan controller channel 2 duty"):
        bench.chip.set_duty(2, 0.1)  # named by its channel when no fan name is given


def test_a_fan_reports_the_duty_last_written_to_it(bench: Bench) -> None:
    fans = bench.configure()
    fans[1].set_duty(0.4)
    assert fans[1].duty == 102 / 255
    assert fans[0].duty == 1.0
    assert bench.chip.duty(5) == 0.0  # a channel never written


def test_the_register_step_rounds_towards_the_inside_of_the_limits() -> None:
    bench = Bench(envelope(0.212, 0.9))
    fans = bench.configure()
    assert bench.register(0x30) == 229  # the envelope's highest duty, not 100 %
    written = fans[0].set_duty(0.212)
    assert bench.register(0x30) == 55  # 54 would be 0.2118, below the minimum
    assert written == pytest.approx(55 / 255)
    fans[0].set_duty(0.9)
    assert bench.register(0x30) == 229  # 230 would be 0.902, above the maximum
    assert drive_value(0.2, 0.2, 1.0) == 51  # exactly on the limit: no step needed
    assert drive_value(0.5, 0.5, 0.5) == 128  # no step fits: the one with more air


def test_bus_errors_raise_hardware_errors_that_name_the_part(bench: Bench) -> None:
    fans = bench.configure()
    bench.bus.set_error_rate(1.0, ADDRESS)
    with pytest.raises(HardwareError, match=r"fan controller \(0x2f\) read fan 1: .*bus error"):
        fans[0].read()
    with pytest.raises(HardwareError, match=r"0x2f\) set fan 1"):
        fans[0].set_duty(0.5)
    bench.bus.clear_faults()
    bench.part.lost = True
    with pytest.raises(HardwareError, match="did not answer"):
        fans[1].read()
    with pytest.raises(HardwareError, match=r"0x2f\) read manufacturer id: .*did not answer"):
        bench.chip.configure(CHANNELS)


def test_a_part_that_is_not_an_emc230x_is_refused() -> None:
    with pytest.raises(HardwareError, match=r"product 0x12 is not an EMC2301/2/3/5"):
        Bench(product_id=0x12).configure()
    with pytest.raises(HardwareError, match=r"EMC2302 with 2 channel\(s\); .*\[3, 4\]"):
        Bench(product_id=0x36).configure()


def test_a_locked_part_that_ignores_the_configuration_is_refused(bench: Bench) -> None:
    bench.part.write(bytes((0xEF, 0x01)))  # firmware set the software lock
    with pytest.raises(HardwareError, match=r"register 0x20 reads 0x40 .* software lock"):
        bench.configure()


def test_regular_reads_keep_the_watchdog_from_firing(bench: Bench) -> None:
    fans = bench.configure()
    fans[0].set_duty(0.4)
    for _ in range(20):
        bench.run(1.0, silent=True)
        fans[0].read()
    assert bench.part.watchdog_fired == 0
    assert bench.fans[0].duty == pytest.approx(0.4)


def test_a_silent_host_gets_full_speed_from_the_watchdog_and_the_next_read_restores(
    bench: Bench,
) -> None:
    fans = bench.configure()
    for fan in fans:
        fan.set_duty(0.4)
    bench.run(3.9, silent=True)
    assert bench.fans[0].duty == pytest.approx(0.4)
    bench.run(0.2, silent=True)  # four seconds without a transaction: the agent died or hung
    assert bench.part.watchdog_fired == 1
    assert [f.duty for f in bench.fans] == [1.0] * 4
    bench.run(10.0, silent=True)
    assert all(f.rpm > 5900 for f in bench.fans)
    assert not bench.restores
    seen = fans[0].read()  # what the part did on its own: full speed
    assert seen.duty == 1.0
    assert seen.rpm == pytest.approx(bench.fans[0].rpm, rel=0.005)
    assert len(bench.restores) == 1
    assert re.fullmatch(
        r"fan controller \(0x2f\): its watchdog fired .* configuration and drives restored",
        bench.restores[0],
    )
    assert [f.duty for f in bench.fans] == [pytest.approx(0.4)] * 4
    assert fans[1].read().duty == pytest.approx(102 / 255)  # WATCH was cleared
    assert len(bench.restores) == 1


def test_an_unconfigured_part_runs_the_fans_at_full_speed_after_power_up() -> None:
    bench = Bench()
    assert [f.duty for f in bench.fans] == [0.0] * 4  # drive 00h at power-up
    bench.run(4.1, silent=True)
    assert [f.duty for f in bench.fans] == [1.0] * 4


def test_a_part_that_lost_its_configuration_is_set_up_again(bench: Bench) -> None:
    fans = bench.configure()
    fans[0].set_duty(0.5)
    bench.bus.detach(ADDRESS)
    reset = SimEmc2305(ADDRESS, bench.clock)  # a power glitch: back to power-on values
    for channel, fan in zip(CHANNELS, bench.fans, strict=True):
        reset.connect(channel, fan)
    bench.bus.attach(ADDRESS, reset)
    bench.part = reset
    bench.fans[1].wear(0.5)  # 3000 rpm at full drive, whatever the register says
    bench.run(1.0)
    seen = fans[1].read()  # counted with the power-on range (m = 2), decoded with it
    assert seen.rpm == pytest.approx(bench.fans[1].rpm, rel=0.005)
    assert bench.restores == [
        "fan controller (0x2f): it lost its configuration (reset or power glitch); "
        "configuration and drives restored"
    ]
    assert bench.register(0x20) == 0x60
    assert bench.register(0x30) == round(0.5 * 255)
    assert bench.register(0x42) == 0x0B


def test_writes_to_read_only_registers_and_to_a_closed_loop_drive_are_ignored() -> None:
    part = SimEmc2305(ADDRESS, Clock(0.0))
    part.write(bytes((0xFD, 0x99)))  # product id
    part.write(bytes((0x3E, 0x00, 0x00)))  # tach reading
    part.write(bytes((0x32, 0x8B)))  # closed loop on
    part.write(bytes((0x30, 0x40)))
    part.write(bytes((0xFD,)))
    assert part.read(3) == bytes((0x34, 0x5D, 0x80))  # product, manufacturer, revision
    assert part.read(1) == bytes((0x00,))  # wrapped to 00h, an undefined register
    assert part.registers[0x30] == 0x00
    part.write(bytes((0xFC,)))
    assert part.read(1) == bytes((0b001 << 3,))  # ADDR_SEL decoded as 0x2f
