"""The simulated rig as a whole, driven only the way the agent drives it: the drivers on
`rig.i2c`, gpiozero devices on `rig.pin_factory`, faults in the command language, the
control socket and the `hashbay-sim` console script.

Time moves with `rig.advance` (deterministic, faster than real time), and every driver
that measures time is given the rig's clock.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero import DigitalInputDevice, DigitalOutputDevice, PWMOutputDevice

from hashbay.agent.daemon.config import Config, default_config_path, load_config
from hashbay.agent.hardware.rig import envelope_from
from hashbay.drivers.eeprom import Eeprom24C02
from hashbay.drivers.errors import ConfigError, HardwareError, PecError, SafetyViolation
from hashbay.drivers.fan import Fan
from hashbay.drivers.i2c import DeviceCounts, LockedI2C
from hashbay.drivers.lm75 import TemperatureSensor
from hashbay.drivers.pmbus import DcDc, HotSwap, Psu, StatusInput, StatusIout
from hashbay.drivers.slot_pins import SlotPins
from hashbay.tools.sim import faults
from hashbay.tools.sim.configs import with_gpio_fans
from hashbay.tools.sim.control import SOCKET_NAME, ControlServer
from hashbay.tools.sim.fault_matrix import HEALS, MATRIX, covered_commands
from hashbay.tools.sim.faults import FAULTS, FaultError
from hashbay.tools.sim.rig import SimRig
from hashbay.tools.sim.uart import LineNoise

BOARD_V = 13.4
HASHBAY_SIM = str(Path(sys.executable).with_name("hashbay-sim"))


def rig_config(**sim: Any) -> Config:
    """The packaged default config (3 slots, 4 fans) with some [sim] keys changed, its fans
    on GPIO pins (the simulated fan controller has tests of its own)."""
    config = with_gpio_fans(load_config(default_config_path()))
    return dataclasses.replace(
        config, sim=dataclasses.replace(config.sim, control_socket=False, **sim)
    )


@pytest.fixture
def make_rig() -> Iterator[Callable[..., SimRig]]:
    """Builds rigs from the default config (with [sim] changes); stops them afterwards."""
    made: list[SimRig] = []

    def make(**sim: Any) -> SimRig:
        made.append(SimRig(rig_config(**sim)))
        return made[-1]

    yield make
    for rig in made:
        rig.stop()


@pytest.fixture
def rig(make_rig: Callable[..., SimRig]) -> SimRig:
    return make_rig()


def inject(rig: SimRig, command: str) -> None:
    rig.apply(faults.parse(command))


class Host:
    """The drivers the agent builds for a rig, on its buses and with its clock."""

    def __init__(self, rig: SimRig) -> None:
        self.rig = rig
        config = rig.config
        self.envelope = envelope_from(config)
        self.pins = [
            SlotPins(
                s.presence_pin, s.power_pin, s.reset_pin, s.led_pin, rig.pin_factory, clock=rig.now
            )
            for s in config.slot
        ]
        self.psu = Psu(rig.i2c, config.hardware.psu_address)
        rig.advance(0.2)  # presence settles on the freshly opened inputs
        for pins in self.pins:
            pins.present()  # the agent's first poll (SlotPins commits a level when asked)

    def eeprom(self, slot: int) -> Eeprom24C02:
        return Eeprom24C02(self.rig.i2c, self.rig.config.slot[slot].eeprom_address, "EEPROM")

    def sensor(self, slot: int, index: int) -> TemperatureSensor:
        address = self.rig.config.slot[slot].temp_addresses[index]
        return TemperatureSensor(self.rig.i2c, address, f"slot {slot} sensor {index}")

    def dcdc(self, slot: int) -> DcDc:
        return DcDc(self.rig.i2c, slot, self.rig.config.slot[slot].dcdc_address, self.envelope)

    def hotswap(self, slot: int) -> HotSwap:
        address = self.rig.config.slot[slot].hotswap_address
        return HotSwap(self.rig.i2c, slot, address, self.envelope)

    def power_up(self, slot: int) -> None:
        """What the agent does for a module it trusts: power, rail, then release reset."""
        identity = self.eeprom(slot).read_identity()
        self.envelope.admit_board(slot, identity.limits)
        self.pins[slot].enable_power(True)
        self.rig.advance(0.1)
        dcdc = self.dcdc(slot)
        dcdc.set_vout(BOARD_V)
        dcdc.on()
        self.pins[slot].hold_reset(False)
        self.rig.advance(0.1)

    def slot_status(self, slot: int) -> dict[str, Any]:
        entry: dict[str, Any] = self.rig.status()["slots"][slot]
        return entry


@pytest.fixture
def host(rig: SimRig) -> Host:
    return Host(rig)


def set_fan_duty(rig: SimRig, duty: float) -> list[PWMOutputDevice]:
    """Drive every fan's PWM line (tach left alone, so no pulses need counting)."""
    return [
        PWMOutputDevice(f.pwm_pin, initial_value=duty, pin_factory=rig.pin_factory)
        for f in rig.config.fan
    ]


# -- presence ------------------------------------------------------------------------------


def test_modules_listed_in_sim_modules_read_present_through_the_debounced_pins(
    make_rig: Callable[..., SimRig],
) -> None:
    host = Host(make_rig(modules=(0, 2)))
    assert [pins.present() for pins in host.pins] == [True, False, True]
    assert not any(pins.settling() for pins in host.pins)


@pytest.mark.parametrize(
    ("modules", "command", "before", "after"),
    [((0, 1, 2), "pull 0", True, False), ((1, 2), "insert 0", False, True)],
)
def test_presence_bounces_when_a_module_moves_and_the_driver_reports_one_clean_change(
    make_rig: Callable[..., SimRig],
    modules: tuple[int, ...],
    command: str,
    before: bool,
    after: bool,
) -> None:
    rig = make_rig(modules=modules)
    edges = 0

    def count() -> None:
        nonlocal edges
        edges += 1

    slot = rig.config.slot[0]
    pins = SlotPins(
        slot.presence_pin,
        slot.power_pin,
        slot.reset_pin,
        slot.led_pin,
        rig.pin_factory,
        clock=rig.now,
        on_presence_edge=count,
    )
    rig.advance(0.2)
    assert pins.present() is before
    edges = 0
    inject(rig, command)
    seen: list[tuple[bool, bool]] = []
    for _ in range(100):  # 200 ms in 2 ms steps: the bounce, then the debounce time
        rig.advance(0.002)
        seen.append((pins.present(), pins.settling()))
    assert edges >= 10  # the contact really bounced: five bounces, two edges or more each
    assert any(settling for _, settling in seen)
    levels = [present for present, _ in seen]
    flip = levels.index(after)
    assert all(level is before for level in levels[:flip])
    assert all(level is after for level in levels[flip:])  # one change, no chatter
    assert all(settling for _, settling in seen[flip - 20 : flip])  # not before it settled
    assert seen[-1] == (after, False)


def test_a_seated_module_holds_its_presence_line_low_against_a_claimed_pull_up(
    make_rig: Callable[..., SimRig],
) -> None:
    """As on a board: claiming the line with its pull-up does not lift a grounded contact,
    not even before the simulator has stepped once."""
    rig = make_rig(modules=(1,))
    lines = [
        DigitalInputDevice(s.presence_pin, pull_up=True, pin_factory=rig.pin_factory)
        for s in rig.config.slot
    ]
    assert [line.is_active for line in lines] == [False, True, False]  # active = low
    for line in lines:
        line.close()
    again = DigitalInputDevice(
        rig.config.slot[1].presence_pin, pull_up=True, pin_factory=rig.pin_factory
    )
    assert again.is_active


def test_pull_and_insert_bounce_and_slot_pins_debounce_both_ways(host: Host) -> None:
    pins = host.pins[1]
    for command, final in (("pull 1", False), ("insert 1", True)):
        inject(host.rig, command)
        host.rig.advance(0.03)  # the contact has come to rest, but only just
        assert pins.settling()
        assert pins.present() is not final  # not believed yet
        host.rig.advance(0.05)
        assert not pins.settling()
        assert pins.present() is final


def test_a_reinserted_module_keeps_its_serial_and_insert_new_brings_a_new_one(
    host: Host,
) -> None:
    original = host.eeprom(2).read_identity()
    inject(host.rig, "pull 2")
    inject(host.rig, "insert 2")
    host.rig.advance(0.2)
    assert host.pins[2].present()
    assert host.eeprom(2).read_identity() == original
    inject(host.rig, "pull 2")
    inject(host.rig, "insert-new 2")
    host.rig.advance(0.2)
    fresh = host.eeprom(2).read_identity()
    assert fresh.serial != original.serial
    assert fresh.model == original.model
    assert host.rig.status()["slots"][2]["module"] == fresh.serial


def test_a_pulled_modules_eeprom_sensors_and_dcdc_vanish_from_the_bus(host: Host) -> None:
    host.power_up(0)
    assert host.sensor(0, 0).read_c() > 0
    inject(host.rig, "pull 0")
    host.rig.advance(0.2)
    with pytest.raises(HardwareError, match="did not answer; is the module seated"):
        host.eeprom(0).read_identity()
    for index in (0, 1):
        with pytest.raises(HardwareError, match="did not answer"):
            host.sensor(0, index).read_c()
    with pytest.raises(HardwareError, match="did not answer"):
        host.dcdc(0).read_telemetry()
    assert host.hotswap(0).read_telemetry().vin_v == pytest.approx(54.0, abs=0.1)  # backplane
    assert host.sensor(1, 0).read_c() > 0  # the neighbours are untouched


# -- the power path ----------------------------------------------------------------------


def test_power_pin_soft_starts_the_hotswap_then_the_dcdc_answers_and_makes_the_rail(
    rig: SimRig,
) -> None:
    slot = rig.config.slot[0]
    envelope = envelope_from(rig.config)
    hotswap = HotSwap(rig.i2c, 0, slot.hotswap_address, envelope)
    dcdc = DcDc(rig.i2c, 0, slot.dcdc_address, envelope)
    power = DigitalOutputDevice(slot.power_pin, pin_factory=rig.pin_factory)
    reset = DigitalOutputDevice(slot.reset_pin, pin_factory=rig.pin_factory)
    rig.advance(0.5)
    assert not hotswap.power_good()
    assert hotswap.read_telemetry().vout_v == pytest.approx(0.0, abs=0.1)
    with pytest.raises(HardwareError, match="did not answer"):
        dcdc.status()  # the converter lives on its own input: unpowered, it is not there

    power.on()
    rig.advance(0.01)
    ramping = hotswap.read_telemetry()
    assert 5.0 < ramping.vout_v < 20.0  # a fifth of the way up, 10 ms into a 50 ms ramp
    assert not hotswap.power_good()
    rig.advance(0.1)
    assert hotswap.power_good()
    assert hotswap.read_telemetry().vout_v == pytest.approx(54.0, abs=0.1)
    status = dcdc.status()
    assert status.off  # it powers up with its output off, at its default setting
    assert dcdc.read_telemetry().vin_v == pytest.approx(54.0, abs=0.5)

    with pytest.raises(SafetyViolation, match="no trusted module identity"):
        dcdc.on()
    identity = Eeprom24C02(rig.i2c, slot.eeprom_address, "EEPROM").read_identity()
    envelope.admit_board(0, identity.limits)
    assert dcdc.set_vout(BOARD_V) == pytest.approx(BOARD_V, abs=0.002)
    dcdc.on()
    rig.advance(0.1)
    rail = dcdc.read_telemetry()
    assert rail.vout_v == pytest.approx(BOARD_V, abs=0.002)
    assert dcdc.status().power_good
    assert rig.status()["slots"][0]["chain_powered"] is False  # reset still held

    reset.on()
    rig.advance(0.1)
    status_slot = rig.status()["slots"][0]
    assert status_slot["chain_powered"] is True
    assert status_slot["board_v"] == pytest.approx(BOARD_V, abs=0.002)
    assert status_slot["power_w"] > 100  # 126 clocked chips, idle

    power.off()
    rig.advance(0.1)
    assert not hotswap.power_good()
    assert rig.status()["slots"][0]["chain_powered"] is False
    with pytest.raises(HardwareError, match="did not answer"):
        dcdc.status()


def test_board_power_flows_through_hotswaps_to_the_psu_with_losses_at_each_stage(
    host: Host,
) -> None:
    idle = host.psu.read_telemetry()
    for slot in range(3):
        host.power_up(slot)
    host.rig.advance(5.0)
    psu = host.psu.read_telemetry()
    rails = [host.dcdc(slot).read_telemetry() for slot in range(3)]
    board_w = sum(rail.vout_v * rail.iout_a for rail in rails)
    hotswap_w = sum(host.hotswap(slot).read_telemetry().pin_w for slot in range(3))
    status_w = sum(host.slot_status(slot)["power_w"] for slot in range(3))
    assert board_w == pytest.approx(status_w, rel=0.01)  # the drivers read the model
    assert psu.pin_w > psu.pout_w > hotswap_w > board_w > 500
    assert psu.pout_w - hotswap_w > 8.0  # fans and the controller ride on the same PSU
    assert psu.vout_v == pytest.approx(54.0, abs=0.1)
    assert psu.pin_w > idle.pin_w + board_w


# -- heat and fans -----------------------------------------------------------------------


def read_c(host: Host, slot: int, index: int = 1) -> float:
    sensor = host.sensor(slot, index)
    sensor.configure()  # 12-bit: 1/16 °C
    return sensor.read_c()


def test_a_powered_board_heats_and_more_airflow_cools_it(host: Host) -> None:
    host.power_up(0)
    pwm = set_fan_duty(host.rig, 0.3)
    host.rig.advance(900)
    powered_slow_air, unpowered = read_c(host, 0), read_c(host, 1)
    assert unpowered == pytest.approx(25.0 + 4.0, abs=0.2)  # ambient plus its offset
    assert powered_slow_air > unpowered + 10.0
    for line in pwm:
        line.value = 1.0
    host.rig.advance(900)
    powered_full_air = read_c(host, 0)
    assert unpowered < powered_full_air < powered_slow_air - 5.0


def test_a_stalled_fan_makes_the_boards_measurably_hotter_within_minutes(
    make_rig: Callable[..., SimRig],
) -> None:
    calm, stalled = Host(make_rig()), Host(make_rig())
    for host in (calm, stalled):
        host.power_up(0)
        host.rig.advance(300)
    start = read_c(stalled, 0)
    assert start == read_c(calm, 0)  # same seed, same history: the same board
    inject(stalled.rig, "fan-stall 1")
    for host in (calm, stalled):
        host.rig.advance(300)
    assert read_c(stalled, 0) > read_c(calm, 0) + 1.0
    assert read_c(stalled, 0) > start + 1.0
    assert stalled.rig.status()["fans_rpm"][1] == 0


def test_the_fan_driver_measures_the_simulated_rpm_on_the_rigs_clock(rig: SimRig) -> None:
    config = rig.config.fan[0]
    fan = Fan(
        "fan0",
        *config.pins,
        rig.pin_factory,
        envelope_from(rig.config),
        clock=rig.now,
    )
    fan.set_duty(0.5)
    rig.advance(20.0)
    fan.read()  # start a fresh window
    rig.advance(2.0)
    reading = fan.read()
    assert reading.rpm == pytest.approx(rig.fans[0].rpm, rel=0.02)
    assert reading.rpm == pytest.approx(3000.0, rel=0.02)
    assert not reading.stalled

    inject(rig, "fan-stall 0")
    rig.advance(1.0)
    fan.read()  # one silent window is not yet a stall
    rig.advance(1.0)
    reading = fan.read()
    assert (reading.rpm, reading.stalled) == (0.0, True)
    inject(rig, "fan-ok 0")
    rig.advance(10.0)
    fan.read()
    rig.advance(2.0)
    assert fan.read().rpm == pytest.approx(3000.0, rel=0.02)
    fan.close()


def test_the_noise_estimate_drops_with_the_fan_law_when_the_fans_slow_down(rig: SimRig) -> None:
    rig.advance(10.0)
    loud = rig.status()["noise_dba"]
    assert loud == pytest.approx(69.0 + 10 * math.log10(4), abs=0.1)  # four fans at full
    lines = set_fan_duty(rig, 0.5)
    rig.advance(30.0)
    assert all(line.value == 0.5 for line in lines)
    quiet = rig.status()["noise_dba"]
    assert loud - quiet == pytest.approx(50 * math.log10(2), abs=0.2)  # about 15 dB
    for fan in range(4):
        inject(rig, f"fan-stall {fan}")
    status = rig.status()
    assert status["noise_dba"] is None  # silence, and the status is still plain JSON
    json.loads(json.dumps(status, allow_nan=False))


# -- fault commands ----------------------------------------------------------------------

# Which test shows each command's effect: a new command without a test fails here.
EFFECTS = {
    "insert": "test_pull_and_insert_bounce_and_slot_pins_debounce_both_ways",
    "insert-new": "test_a_reinserted_module_keeps_its_serial_and_insert_new_brings_a_new_one",
    "pull": "test_a_pulled_modules_eeprom_sensors_and_dcdc_vanish_from_the_bus",
    "chip-dead": "test_a_dead_chip_stops_hashing_and_chip_ok_heals_it",
    "chip-degrade": "test_a_degrading_chip_ages_by_the_given_share_per_simulated_hour",
    "chip-ok": "test_a_dead_chip_stops_hashing_and_chip_ok_heals_it",
    "fan-stall": "test_the_fan_driver_measures_the_simulated_rpm_on_the_rigs_clock",
    "fan-ok": "test_the_fan_driver_measures_the_simulated_rpm_on_the_rigs_clock",
    "sensor-lost": "test_a_lost_sensor_fails_its_reads_until_healed",
    "sensor-stuck": "test_a_stuck_sensor_keeps_its_reading_while_the_board_heats",
    "sensor-ok": "test_a_stuck_sensor_keeps_its_reading_while_the_board_heats",
    "dcdc-overcurrent": "test_dcdc_overcurrent_latches_off_the_rail_until_clear_faults",
    "hotswap-overcurrent": "test_hotswap_overcurrent_cuts_the_slot_until_clear_faults",
    "module-short": "test_a_shorted_module_trips_its_hot_swap_at_every_power_up",
    "psu-sag": "test_psu_sag_warns_then_drops_the_bus_below_170_v_and_psu_ok_restores_it",
    "psu-ok": "test_psu_sag_warns_then_drops_the_bus_below_170_v_and_psu_ok_restores_it",
    "uart-noise": "test_uart_noise_garbles_the_line_both_ways",
    "i2c-errors": "test_i2c_errors_fail_about_that_share_of_driver_reads",
    "ambient": "test_ambient_sets_the_inlet_air_the_boards_settle_to",
    "pec-errors": "test_pec_errors_flip_bits_that_the_pec_catches_and_the_bus_counts",
    "i2c-stuck": "test_a_stuck_bus_times_transactions_out_until_it_lets_go",
    "i2c-ok": "test_a_stuck_bus_times_transactions_out_until_it_lets_go",
    "eeprom-corrupt": "test_eeprom_faults_damage_blank_or_silence_the_identity_until_healed",
    "eeprom-blank": "test_eeprom_faults_damage_blank_or_silence_the_identity_until_healed",
    "eeprom-silent": "test_eeprom_faults_damage_blank_or_silence_the_identity_until_healed",
    "eeprom-ok": "test_eeprom_faults_damage_blank_or_silence_the_identity_until_healed",
    "device-silent": "test_a_silent_device_nacks_until_it_answers_again",
    "device-ok": "test_a_silent_device_nacks_until_it_answers_again",
    "overheat": "test_overheat_heats_a_board_past_its_physics_and_a_watch_times_the_cut",
}


def test_every_fault_command_has_a_test_of_its_effect() -> None:
    assert set(EFFECTS) == set(FAULTS)
    assert set(EFFECTS.values()) <= set(globals())


def test_the_fault_matrix_covers_every_fault_the_simulator_can_make() -> None:
    assert covered_commands() == set(FAULTS)
    assert set(FAULTS) - {row.command for row in MATRIX} <= HEALS  # the rest only heal
    for row in MATRIX:
        for step in (row.fault, *row.heal, *row.then, *row.technician):
            if not step.startswith(("hashbay ", "systemd ")):
                faults.parse(step)  # each one a valid command
    issue_11 = {"i2c-stuck", "pec-errors", "eeprom-corrupt", "eeprom-blank", "eeprom-silent"}
    assert issue_11 | {"uart-noise", "psu-sag"} <= {row.command for row in MATRIX}
    listed = subprocess.run(
        [sys.executable, "-m", "hashbay.tools.sim.cli", "faults"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert all(f"\n  {name} " in "\n" + listed for name in FAULTS)


def test_a_dead_chip_stops_hashing_and_chip_ok_heals_it(host: Host) -> None:
    host.power_up(0)
    host.rig.advance(600)  # warm: the leakage has stopped creeping up
    healthy = host.slot_status(0)
    inject(host.rig, "chip-dead 0 5")
    host.rig.advance(1.0)
    dead = host.slot_status(0)
    assert dead["hashrate_ths"] == pytest.approx(healthy["hashrate_ths"] * 125 / 126, abs=0.01)
    assert dead["power_w"] < healthy["power_w"]  # it leaks, but no longer switches
    inject(host.rig, "chip-ok 0 5")
    host.rig.advance(1.0)
    assert host.slot_status(0)["hashrate_ths"] == healthy["hashrate_ths"]


def test_a_degrading_chip_ages_by_the_given_share_per_simulated_hour(
    make_rig: Callable[..., SimRig],
) -> None:
    rig = make_rig(modules=(0,))
    inject(rig, "chip-degrade 0 17 0.2")
    rig.advance(3600.0)
    module = rig.slots[0].module
    assert module is not None
    chips = module.chain.chips
    assert chips[17].degradation == pytest.approx(0.2, rel=1e-6)
    assert all(chip.degradation == 0.0 for chip in chips if chip.index != 17)
    inject(rig, "chip-degrade 0 17 10")  # the fastest ageing the command allows
    rig.advance(600.0)
    assert chips[17].degradation == 1.0  # worn out, and no further
    inject(rig, "chip-ok 0 17")
    rig.advance(60.0)
    assert chips[17].degradation == 0.0


def test_a_lost_sensor_fails_its_reads_until_healed(host: Host) -> None:
    inject(host.rig, "sensor-lost 1 0")
    with pytest.raises(HardwareError, match=r"slot 1 sensor 0 \(0x4a\).*did not answer"):
        host.sensor(1, 0).read_c()
    assert host.sensor(1, 1).read_c() == pytest.approx(29.0, abs=0.5)
    inject(host.rig, "sensor-ok 1 0")
    assert host.sensor(1, 0).read_c() == pytest.approx(22.0, abs=0.5)


def test_a_stuck_sensor_keeps_its_reading_while_the_board_heats(host: Host) -> None:
    stuck, live = host.sensor(0, 0), host.sensor(0, 1)
    for sensor in (stuck, live):
        sensor.configure()
    frozen, cold = stuck.read_c(), live.read_c()
    inject(host.rig, "sensor-stuck 0 0")
    host.power_up(0)
    host.rig.advance(600)
    assert stuck.read_c() == frozen
    assert live.read_c() > cold + 5.0
    inject(host.rig, "sensor-ok 0 0")
    assert stuck.read_c() == pytest.approx(live.read_c() - 7.0, abs=0.1)  # offsets -3, +4


def test_overheat_heats_a_board_past_its_physics_and_a_watch_times_the_cut(
    host: Host,
) -> None:
    host.power_up(0)
    host.rig.advance(600)  # near its steady temperature
    before = max(host.sensor(0, n).read_c() for n in (0, 1))
    watch = host.rig.watch_cutoff(0, before + 10.0)
    inject(host.rig, "overheat 0 2")
    seen = []
    for seconds in (4.0, 2.0):
        host.rig.advance(seconds)
        seen.append((watch.crossed_at is not None, watch.cut_at is not None))
    host.rig.pin_factory.pin(host.rig.config.slot[0].power_pin).state = False  # enable low
    host.rig.advance(0.1)
    # +8 °C after 4 s (the board's own drift is smaller), past +10 °C after 6 s, then cut.
    assert seen == [(False, False), (True, False)]
    crossed, cut = watch.crossed_at, watch.cut_at
    assert crossed is not None and cut is not None and cut >= crossed
    inject(host.rig, "overheat 0 0")
    module = host.rig.slots[0].module
    assert module is not None and module.heat_c_per_s == 0.0


def test_dcdc_overcurrent_latches_off_the_rail_until_clear_faults(host: Host) -> None:
    host.power_up(0)
    dcdc = host.dcdc(0)
    inject(host.rig, "dcdc-overcurrent 0")
    host.rig.advance(0.1)
    status = dcdc.status()
    assert status.iout & StatusIout.OC_FAULT
    assert not status.power_good
    assert "output over-current fault" in status.describe()
    assert dcdc.read_telemetry().vout_v == 0.0
    assert host.slot_status(0)["chain_powered"] is False
    host.rig.advance(5.0)
    assert dcdc.status().iout & StatusIout.OC_FAULT  # latched, not a passing glitch
    dcdc.clear_faults()
    host.rig.advance(0.1)
    assert dcdc.status().power_good
    assert dcdc.read_telemetry().vout_v == pytest.approx(BOARD_V, abs=0.002)


def test_hotswap_overcurrent_cuts_the_slot_until_clear_faults(host: Host) -> None:
    host.power_up(1)
    hotswap = host.hotswap(1)
    inject(host.rig, "hotswap-overcurrent 1")
    host.rig.advance(0.1)
    status = hotswap.status()
    assert status.iout & StatusIout.OC_FAULT
    assert not status.power_good
    assert hotswap.read_telemetry().vout_v == pytest.approx(0.0, abs=0.1)
    with pytest.raises(HardwareError, match="did not answer"):
        host.dcdc(1).status()  # its converter lost its input
    assert host.slot_status(1)["chain_powered"] is False
    assert host.hotswap(0).status().iout == 0  # only that slot
    hotswap.clear_faults()
    host.rig.advance(0.2)
    assert hotswap.power_good()
    assert host.dcdc(1).status().off  # back, with its power-up settings: rail off


def test_a_shorted_module_trips_its_hot_swap_at_every_power_up(host: Host) -> None:
    host.power_up(1)
    hotswap = host.hotswap(1)
    inject(host.rig, "module-short 1")
    host.rig.advance(0.1)
    host.rig.advance(0.1)  # the hot-swap sees a new load from the next step on
    assert hotswap.status().iout & StatusIout.OC_FAULT
    for _ in range(2):  # clearing the latch does not help: it trips again at once
        hotswap.clear_faults()
        host.rig.advance(0.1)
        assert hotswap.status().iout & StatusIout.OC_FAULT
        assert not hotswap.power_good()
    serial = host.rig.pull_module(1)
    assert host.rig.insert_module(1) == serial  # the same module: still shorted
    host.rig.advance(0.2)
    hotswap.clear_faults()
    host.rig.advance(0.1)
    assert hotswap.status().iout & StatusIout.OC_FAULT
    host.rig.pull_module(1)
    host.rig.insert_module(1, new=True)
    host.rig.advance(0.2)
    hotswap.clear_faults()
    host.rig.advance(0.1)
    assert hotswap.power_good()


def test_psu_sag_warns_then_drops_the_bus_below_170_v_and_psu_ok_restores_it(
    host: Host,
) -> None:
    host.power_up(0)
    inject(host.rig, "psu-sag 190")
    host.rig.advance(0.2)
    status = host.psu.status()
    assert status.input == StatusInput.VIN_UV_WARNING
    assert host.psu.read_telemetry().vout_v == pytest.approx(54.0, abs=0.1)
    assert host.slot_status(0)["chain_powered"] is True

    inject(host.rig, "psu-sag 160")
    host.rig.advance(0.2)
    status = host.psu.status()
    assert status.input & StatusInput.VIN_UV_FAULT
    assert status.input & StatusInput.UNIT_OFF_LOW_INPUT
    telemetry = host.psu.read_telemetry()
    assert telemetry.vin_v == pytest.approx(160.0, abs=0.5)
    assert telemetry.vout_v == 0.0
    assert not host.hotswap(0).power_good()
    assert host.slot_status(0)["board_v"] == 0.0
    with pytest.raises(HardwareError, match="did not answer"):
        host.dcdc(0).status()

    inject(host.rig, "psu-ok")
    host.rig.advance(0.2)
    assert host.psu.read_telemetry().vout_v == pytest.approx(54.0, abs=0.1)
    assert host.hotswap(0).power_good()
    assert host.psu.status().input & StatusInput.VIN_UV_FAULT  # latched until cleared
    host.psu.clear_faults()
    assert host.psu.status().ok


def test_uart_noise_garbles_the_line_both_ways(rig: SimRig) -> None:
    inject(rig, "uart-noise 1 0.01 0.002")
    line = rig.slots[1].line
    assert line.noise_in == line.noise_out == LineNoise(bit_flip=0.01, drop=0.002)
    assert not rig.slots[0].line.noise_in.active
    sent = bytes(range(256)) * 4
    host_end = os.open(line.path, os.O_RDWR | os.O_NOCTTY)
    try:
        inject(rig, "uart-noise 1 1 0")
        os.write(host_end, sent)
        received = line.read()
        assert len(received) == len(sent)
        assert all(bin(a ^ b).count("1") == 1 for a, b in zip(sent, received, strict=True))
        inject(rig, "uart-noise 1 0 1")
        os.write(host_end, sent)
        assert line.read() == b""
    finally:
        os.close(host_end)


def failures(read: Callable[[], object], count: int = 1000) -> int:
    failed = 0
    for _ in range(count):
        try:
            read()
        except HardwareError:
            failed += 1
    return failed


def test_i2c_errors_fail_about_that_share_of_driver_reads(host: Host) -> None:
    sensor, neighbour = host.sensor(0, 0), host.sensor(0, 1)
    inject(host.rig, "i2c-errors 0.3 0x48")
    assert 240 < failures(sensor.read_c) < 360  # a register read is one transaction
    assert failures(neighbour.read_c, 200) == 0
    inject(host.rig, "i2c-errors 0.1")
    assert 60 < failures(host.psu.status, 1000) < 140
    inject(host.rig, "i2c-errors 0")
    inject(host.rig, "i2c-errors 0 0x48")
    assert failures(sensor.read_c, 200) == 0
    inject(host.rig, "i2c-errors 1")
    with pytest.raises(HardwareError, match=r"PSU \(0x58\) .*Input/output error \(bus error"):
        host.psu.read_telemetry()


def test_pec_errors_flip_bits_that_the_pec_catches_and_the_bus_counts(host: Host) -> None:
    bus = LockedI2C(host.rig.i2c)
    psu, sensor = Psu(bus, 0x58), TemperatureSensor(bus, 0x48, "sensor")
    inject(host.rig, "pec-errors 0.3 0x58")

    def pec_failures(count: int) -> int:
        failed = 0
        for _ in range(count):
            try:
                psu.status()
            except PecError:
                failed += 1
        return failed

    failed = pec_failures(1000)
    assert 240 < failed < 360
    assert bus.errors.counts(0x58).pec_errors == failed
    assert bus.errors.counts(0x58).nacks == bus.errors.counts(0x58).bus_errors == 0
    inject(host.rig, "pec-errors 0 0x58")
    assert pec_failures(200) == 0
    inject(host.rig, "pec-errors 1")  # every PMBus device, and only those
    with pytest.raises(PecError):
        HotSwap(bus, 0, 0x10, host.envelope).status()
    for _ in range(50):
        sensor.read_c()  # no PEC on a TMP75: its reads are left alone
    assert bus.errors.counts(0x48) == DeviceCounts(transactions=50)


def test_a_stuck_bus_times_transactions_out_until_it_lets_go(host: Host) -> None:
    bus = LockedI2C(host.rig.i2c)
    sensor = TemperatureSensor(bus, 0x48, "sensor")
    inject(host.rig, "i2c-stuck 60")
    with pytest.raises(HardwareError, match="timed out"):
        sensor.read_c()
    assert bus.errors.counts(0x48).timeouts == 1
    inject(host.rig, "i2c-ok")
    assert sensor.read_c() == host.sensor(0, 0).read_c()


def test_eeprom_faults_damage_blank_or_silence_the_identity_until_healed(host: Host) -> None:
    eeprom = host.eeprom(1)
    identity = eeprom.read_identity()
    for fault, error in (
        ("eeprom-corrupt 1", "CRC mismatch"),
        ("eeprom-blank 1", "blank"),
        ("eeprom-silent 1", "did not answer"),
    ):
        inject(host.rig, fault)
        with pytest.raises(HardwareError, match=error):
            eeprom.read_identity()
        inject(host.rig, "eeprom-ok 1")
        assert eeprom.read_identity() == identity
    inject(host.rig, "eeprom-blank 1")
    serial = host.rig.pull_module(1)
    assert host.rig.insert_module(1) == serial
    host.rig.advance(0.2)
    with pytest.raises(HardwareError, match="blank"):
        eeprom.read_identity()  # the damage went with the module


def test_a_silent_device_nacks_until_it_answers_again(host: Host) -> None:
    host.power_up(0)
    dcdc = host.dcdc(0)
    inject(host.rig, "device-silent 0x20")
    with pytest.raises(HardwareError, match="did not answer"):
        dcdc.status()
    assert host.slot_status(0)["chain_powered"] is True  # silent, not off
    inject(host.rig, "device-ok 0x20")
    assert dcdc.status().ok
    with pytest.raises(ValueError, match="no device that can fall silent at 0x33"):
        host.rig.apply(faults.parse("device-silent 0x33"))


def test_ambient_sets_the_inlet_air_the_boards_settle_to(host: Host) -> None:
    inject(host.rig, "ambient 40")
    assert host.rig.status()["ambient_c"] == 40.0
    host.rig.advance(1800)
    assert read_c(host, 2) == pytest.approx(40.0 + 4.0, abs=0.2)  # unpowered, outlet side
    assert host.psu.read_telemetry().temp_c > 48.0


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("", "empty command"),
        ("meltdown 1", "unknown fault 'meltdown'; known: insert, insert-new, pull"),
        ("fan-stall", "usage: fan-stall FAN$"),
        ("fan-stall 1 2", "usage: fan-stall FAN$"),
        ("psu-ok now", "usage: psu-ok$"),
        ("i2c-errors", r"usage: i2c-errors PROBABILITY \[ADDRESS\]"),
        ("chip-dead 0 130", "chip: 130 outside 0..129"),
        ("fan-stall 99", "fan: 99 outside 0..7"),
        ("psu-sag 301", "volts: 301.0 outside 0..300"),
        ("ambient -21", "celsius: -21.0 outside -20..60"),
        ("i2c-errors 1.5", "probability: 1.5 outside 0..1"),
        ("chip-degrade 0 1 nan", "per_hour: nan outside 0..10"),
        ("uart-noise 0 inf 0", "bit_flip: inf outside 0..1"),
        ("fan-stall one", "fan: 'one' is not an integer"),
        ("pull 1.0", "slot: '1.0' is not an integer"),
        ("psu-sag lots", "volts: 'lots' is not a number"),
    ],
)
def test_a_bad_command_is_refused_with_what_is_wrong_and_changes_nothing(
    rig: SimRig, command: str, message: str
) -> None:
    before = rig.status()
    with pytest.raises(FaultError, match=message):
        inject(rig, command)
    assert rig.status() == before
    assert rig.applied == []


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("pull 5", r"no slot 5 \(this rig has 3\)"),
        ("fan-stall 4", r"no fan 4 \(this rig has 4\)"),
        ("chip-dead 0 126", "slot 0 has 126 chips, no chip 126"),
        ("sensor-stuck 2 3", "slot 2 has 2 sensors, no sensor 3"),
        ("insert 0", "slot 0 already holds module HB0100001"),
    ],
)
def test_a_command_that_does_not_fit_this_rig_is_refused_and_changes_nothing(
    rig: SimRig, command: str, message: str
) -> None:
    before = rig.status()
    with pytest.raises(ValueError, match=message):
        inject(rig, command)
    assert rig.status() == before
    assert rig.applied == []


# -- scenario files ----------------------------------------------------------------------

SCENARIO = """
[[event]]
at_s = 12.5
do = "ambient 35"

[[event]]
at_s = 5
do = "fan-stall 2"

[[event]]
at_s = 7
do = "pull 1"

[[event]]
at_s = 8
do = "pull 1"  # already empty: logged and skipped, the rest still plays
"""


def test_scenario_events_play_at_their_simulated_time(
    make_rig: Callable[..., SimRig], tmp_path: Path
) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO)
    stepped, jumped = make_rig(scenario=str(path)), make_rig(scenario=str(path))
    stepped.advance(4.9)
    assert stepped.applied == []
    stepped.advance(0.2)
    assert stepped.fans[2].stalled
    stepped.advance(7.3)
    assert stepped.status()["ambient_c"] == 25.0
    assert stepped.slots[1].module is None
    stepped.advance(0.2)
    assert stepped.status()["ambient_c"] == 35.0
    jumped.advance(60.0)  # in one call: steps end where events are due
    for rig in (stepped, jumped):
        assert [what for _, what in rig.applied] == [
            "fan-stall 2",
            "pull 1 (HB0100002)",
            "pull 1",
            "ambient 35.0",
        ]
        assert [at for at, _ in rig.applied] == pytest.approx([5.0, 7.0, 7.0, 12.5])


def test_a_scenario_event_at_zero_plays_before_anything_moves(
    make_rig: Callable[..., SimRig], tmp_path: Path
) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text('[[event]]\nat_s = 0\ndo = "psu-sag 150"\n')
    rig = make_rig(scenario=str(path))
    assert rig.applied == [(0.0, "psu-sag 150.0")]  # in place before whoever connects first
    assert rig.psu.vin_v == 150.0


def open_ptys() -> int:
    """Pseudo-terminal ends this process holds open."""
    held = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
        held += target == "/dev/ptmx" or target.startswith("/dev/pts/")
    return held


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('title = "x"\n', "unknown key.s. title; expected \\[\\[event\\]\\]"),
        ("event = 5\n", "event must be an array of tables"),
        ("[[event\n", "cannot read scenario"),
        ('[[event]]\nat_s = 1\ndo = "psu-ok"\nwhy = "x"\n', r"event\[0\]: needs exactly"),
        ("[[event]]\nat_s = 1\n", r"event\[0\]: needs exactly the keys at_s and do"),
        ('[[event]]\nat_s = -1\ndo = "psu-ok"\n', r"event\[0\]\.at_s: must be a number .*-1"),
        ('[[event]]\nat_s = "soon"\ndo = "psu-ok"\n', r"event\[0\]\.at_s: .*'soon'"),
        ('[[event]]\nat_s = true\ndo = "psu-ok"\n', r"event\[0\]\.at_s: .*True"),
        ("[[event]]\nat_s = 1\ndo = 5\n", r"event\[0\]\.do: must be a fault command string"),
        (
            '[[event]]\nat_s = 1\ndo = "psu-ok"\n[[event]]\nat_s = 2\ndo = "fan-stall 99"\n',
            r"event\[1\]\.do: fan: 99 outside 0..7",
        ),
        ('[[event]]\nat_s = 1\ndo = "explode 1"\n', r"event\[0\]\.do: unknown fault 'explode'"),
    ],
)
def test_a_malformed_scenario_is_refused_naming_the_file_and_event(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    config = rig_config(scenario=str(path))
    ptys = open_ptys()
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: .*{message}"):
        SimRig(config)
    assert open_ptys() == ptys  # refused before the rig opened its UARTs


def test_a_missing_scenario_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: cannot read scenario"):
        SimRig(rig_config(scenario=str(path)))


# -- determinism and speed -----------------------------------------------------------------


def run_a_session(rig: SimRig) -> dict[str, Any]:
    """The same things done to a rig, and everything the drivers then read back."""
    host = Host(rig)
    for slot in range(3):
        host.power_up(slot)
    lines = set_fan_duty(rig, 0.6)
    for command in ("chip-degrade 0 3 0.5", "ambient 30", "i2c-errors 0.2 0x49", "pull 2"):
        inject(rig, command)
    rig.advance(60.0)
    inject(rig, "insert-new 2")
    rig.advance(60.0)
    sensor = host.sensor(0, 1)
    pattern: list[float | None] = []
    for _ in range(50):
        try:
            pattern.append(sensor.read_c())
        except HardwareError:
            pattern.append(None)
    status = rig.status()
    del status["cpu"], status["sim_lag_s"]  # the host machine's doing, not the world's
    return {
        "status": status,
        "psu": host.psu.read_telemetry(),
        "hotswaps": [host.hotswap(slot).read_telemetry() for slot in range(3)],
        "rails": [host.dcdc(slot).read_telemetry() for slot in range(2)],
        "sensor": pattern,
        "duty": [line.value for line in lines],
    }


def test_the_same_seed_and_actions_give_the_same_rig_and_another_seed_other_silicon(
    make_rig: Callable[..., SimRig],
) -> None:
    first, second = run_a_session(make_rig()), run_a_session(make_rig())
    assert first == second
    assert None in first["sensor"]  # the injected bus errors were part of the replay
    other = run_a_session(make_rig(seed=2))
    assert [s["power_w"] for s in other["status"]["slots"]] != [
        s["power_w"] for s in first["status"]["slots"]
    ]


def test_silicon_differs_between_seeds_but_not_between_rigs_of_one_seed(
    make_rig: Callable[..., SimRig],
) -> None:
    def silicon(rig: SimRig) -> list[object]:
        return [c.silicon for s in rig.slots if s.module for c in s.module.chain.chips]

    one, again, other = make_rig(seed=7), make_rig(seed=7), make_rig(seed=8)
    assert silicon(one) == silicon(again)
    assert not set(map(id, silicon(one))) & set(map(id, silicon(again)))
    differs = [a != b for a, b in zip(silicon(one), silicon(other), strict=True)]
    assert all(differs)


def test_a_simulated_hour_of_an_idle_powered_three_board_rig_runs_by_hand(host: Host) -> None:
    for slot in range(3):
        host.power_up(slot)
    host.rig.advance(3600.0)
    status = host.rig.status()
    assert status["sim_time_s"] == pytest.approx(3600.8, abs=0.05)
    settled = [read_c(host, slot) for slot in range(3)]
    host.rig.advance(60.0)
    assert [read_c(host, slot) for slot in range(3)] == pytest.approx(settled, abs=0.2)
    assert all(slot["chain_powered"] for slot in status["slots"])


# -- the control socket and hashbay-sim ------------------------------------------------------


@pytest.fixture
def control(rig: SimRig) -> Iterator[Path]:
    # A short directory: a Unix socket path must fit in 108 bytes.
    with tempfile.TemporaryDirectory(prefix="hbsim") as directory:
        server = ControlServer(rig, Path(directory) / SOCKET_NAME)
        yield server.path
        server.close()


def hashbay_sim(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [HASHBAY_SIM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=30)
    return process.returncode, out, err


def test_hashbay_sim_injects_reports_and_refuses_over_the_real_socket(
    rig: SimRig, control: Path
) -> None:
    missing = control.with_name("elsewhere.sock")
    running = [
        hashbay_sim("--socket", str(control), "inject", "fan-stall", "1"),
        hashbay_sim("--socket", str(control), "inject", "fan-stall", "99"),
        hashbay_sim("--socket", str(control), "inject", "fan-stall", "5"),
        hashbay_sim("--socket", str(missing), "status"),
        hashbay_sim("faults"),
    ]
    stall, out_of_range, no_such_fan, unreachable, listing = map(finish, running)
    assert stall == (0, "fan-stall 1\n", "")
    assert rig.fans[1].stalled
    assert out_of_range == (2, "", "hashbay-sim: fan: 99 outside 0..7\n")
    assert no_such_fan == (2, "", "hashbay-sim: no fan 5 (this rig has 4)\n")
    code, out, err = unreachable
    assert (code, out) == (69, "")
    assert f"cannot reach the simulated rig at {missing}" in err
    assert "is the agent running on the simulated rig?" in err
    assert listing[0] == 0
    assert all(name in listing[1] for name in FAULTS)
    assert [what for _, what in rig.applied] == ["fan-stall 1"]

    code, out, err = finish(hashbay_sim("--socket", str(control), "status"))
    assert (code, err) == (0, "")
    status = json.loads(out)
    assert status["fans_rpm"][1] == 0
    assert [slot["module"] for slot in status["slots"]] == ["HB0100001", "HB0100002", "HB0100003"]


def connect(path: Path) -> socket.socket:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(5.0)
    client.connect(str(path))
    return client


def reply(client: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = client.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.decode()


@pytest.mark.parametrize(
    ("request_bytes", "answer", "closes"),
    [
        (b"x" * 600 + b"\n", "error: request line too long\n", True),
        (b"status \xff\xfe\n", "error: request is not UTF-8\n", True),
        (b"status", "error: request line does not end with a newline\n", True),
        (
            b"frobnicate 1\n",
            "error: unknown request; use inject <fault>, status or faults\n",
            False,
        ),
        (b"\n", "error: unknown request; use inject <fault>, status or faults\n", False),
        (b"inject\n", "error: empty command\n", False),
        (b"inject launch 1\n", "error: unknown fault 'launch'; known: insert,", False),
        (b"inject fan-stall one\n", "error: fan: 'one' is not an integer\n", False),
    ],
)
def test_the_control_socket_answers_garbage_with_errors_and_keeps_serving(
    rig: SimRig, control: Path, request_bytes: bytes, answer: str, closes: bool
) -> None:
    with connect(control) as patient, connect(control) as silent, connect(control) as abuser:
        abuser.sendall(request_bytes)
        if not request_bytes.endswith(b"\n"):
            abuser.shutdown(socket.SHUT_WR)
        assert reply(abuser).startswith(answer)
        if closes:
            assert abuser.recv(1) == b""
        else:
            abuser.sendall(b"status\n")
            assert reply(abuser).startswith("ok {")
        patient.sendall(b"inject fan-stall 2\n")  # served while `silent` says nothing
        assert reply(patient) == "ok fan-stall 2\n"
        assert silent.fileno() >= 0
    assert [what for _, what in rig.applied] == ["fan-stall 2"]
    assert rig.fans[2].stalled
