"""`--self-test` walked in-process over the simulated rig: a healthy rig passes every
check and counts every chain; each injected fault is named in the row that finds it; and
however the walk goes, nothing is powered outside the envelope and everything ends safe.

The rig runs 20 times faster than real time; the self-test's waits are in simulated
seconds, with counting windows long enough for the simulator's tick-sized pulse bursts.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hashbay.agent.daemon.config import Config
from hashbay.agent.hardware.bus_backends import Buses
from hashbay.agent.hardware.buses import open_buses
from hashbay.agent.selftest import render
from hashbay.agent.selftest.report import Check, Report, Verdict
from hashbay.agent.selftest.settings import SelfTestSettings
from hashbay.agent.selftest.walk import STEPS, run_self_test
from hashbay.drivers.pmbus import Cmd
from hashbay.tools.sim import faults
from hashbay.tools.sim.configs import with_gpio_fans
from hashbay.tools.sim.rig import SimRig
from tests.support import rig_config

QUICK = SelfTestSettings(fan_settle_s=3.0, fan_window_s=4.0, led_blink_s=1.0)


def selftest_config(tmp_path: Path, *, modules: tuple[int, ...] = (0, 1, 2)) -> Config:
    config = rig_config(tmp_path, chips=42, modules=modules, time_scale=20)
    return dataclasses.replace(config, selftest=QUICK)


@dataclass
class Walk:
    report: Report
    sim: SimRig
    rows: list[Check]  # as they were handed to on_check, in order

    def find(self, part: str, item: str = "") -> Check:
        found = [c for c in self.report.checks if c.part == part and c.item.startswith(item)]
        assert len(found) == 1, (part, item, render.table(self.report))
        return found[0]

    def parts(self, prefix: str) -> list[Check]:
        return [c for c in self.report.checks if c.part.startswith(prefix)]

    def pin_levels(self, pin: int) -> list[float]:
        return [s.state for s in self.sim.pin_factory.pin(pin).states]


def walk(
    config: Config,
    *,
    rig_from: Config | None = None,
    inject: tuple[str, ...] = (),
    power: bool = True,
) -> Walk:
    """One self-test of `config` on a simulated rig built from `rig_from` (the same
    config unless the test wants the two to disagree), with faults injected first."""
    buses: Buses = open_buses(rig_from or config)
    sim = buses.sim
    for fault in inject:
        sim.apply(faults.parse(fault))
    rows: list[Check] = []
    report = asyncio.run(
        run_self_test(config, source="test", buses=buses, power=power, on_check=rows.append)
    )
    return Walk(report, sim, rows)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Walk:
    return walk(selftest_config(tmp_path_factory.mktemp("healthy")))


def test_a_healthy_rig_passes_and_every_chain_answers_at_both_baud_rates(healthy: Walk) -> None:
    report = healthy.report
    assert report.ok, render.table(report)
    for slot in range(3):
        for baud in (115200, 1000000):
            check = healthy.find(f"chain {slot}", f"chip ids at {baud} baud")
            assert check.verdict is Verdict.PASS
            assert check.data["chips"] == 42
            assert "42 BM1368 chips answered" in check.detail
        dcdc = healthy.find(f"slot {slot}", "DC-DC")
        assert dcdc.verdict is Verdict.PASS
        assert dcdc.data["vout_command_v"] == pytest.approx(13.44, abs=0.01)  # the nominal
        assert healthy.find(f"slot {slot}", "EEPROM").data["serial"].startswith("HB")
        assert healthy.find(f"slot {slot}", "hot-swap").data["mfr_model"] == "HSC60-54"
    assert healthy.find("psu").data["mfr_model"] == "PSU5000-54"
    assert report.checks[-1].part == "safe state"


def test_every_configured_line_is_claimed_and_presence_reads_each_seated_module(
    healthy: Walk,
) -> None:
    pins = [c.data["pin"] for c in healthy.report.checks if "pin" in c.data]
    assert len(pins) == 3 * 5  # five lines per slot (the alert too); the fans are on I2C
    for slot in range(3):
        alert = healthy.find(f"slot {slot}", "over-temperature alert")
        assert alert.verdict is Verdict.PASS and alert.detail.startswith("high")
    for slot in range(3):
        assert healthy.find(f"slot {slot}", "presence").detail == "low: a module is seated"


def test_each_fan_is_seen_to_slow_and_speed_up_again(healthy: Walk) -> None:
    for fan in range(4):
        check = healthy.find(f"fan {fan}", "speed")
        assert check.verdict is Verdict.PASS
        data = check.data
        assert data["rpm_low"] < 0.7 * data["rpm_full"]
        assert data["rpm_back"] > 0.75 * data["rpm_full"]


def test_each_locate_led_blinks_then_ends_off(healthy: Walk) -> None:
    for slot, pin in enumerate(s.led_pin for s in healthy.sim.config.slot):
        check = healthy.find(f"slot {slot}", f"locate LED blinked, pin {pin}")
        assert check.verdict is Verdict.LOOK
        levels = healthy.pin_levels(pin)
        assert 1.0 in levels  # it lit
        assert levels[-1] == 0.0  # and is off


def test_the_rig_is_left_in_the_safe_state(healthy: Walk) -> None:
    assert healthy.report.checks[-1].part == "safe state"
    assert healthy.report.checks[-1].verdict is Verdict.PASS
    for slot in healthy.sim.slots:
        assert not slot.hotswap.on
        assert slot.module is not None and not slot.module.chain.powered
    assert all(fan.duty == 1.0 for fan in healthy.sim.fans)  # PWM released: full speed


def test_rows_are_reported_as_they_happen_in_step_order(healthy: Walk) -> None:
    assert healthy.rows == healthy.report.checks
    rows = healthy.rows

    def first(part: str, item: str = "") -> int:
        return next(n for n, c in enumerate(rows) if c.part == part and c.item.startswith(item))

    steps = [
        first("slot 0", "presence"),
        first("i2c"),
        first("psu"),
        first("slot 0", "hot-swap"),
        first("slot 0", "EEPROM"),
        first("fan 0", "speed"),
        first("slot 0", "locate LED blinked"),
        first("chain 0"),
        first("safe state"),
    ]
    assert steps == sorted(steps)
    assert [step.name for step in STEPS] == [
        "gpio",
        "i2c",
        "psu",
        "hot-swap",
        "modules",
        "fans",
        "leds",
        "chains",
    ]


def test_faults_are_each_named_where_they_are_found(tmp_path: Path) -> None:
    """A wrong EEPROM address in the config, a lost sensor, a silent chain: one run."""
    right = selftest_config(tmp_path)
    slots = list(right.slot)
    slots[0] = dataclasses.replace(slots[0], eeprom_address=0x57)
    wrong = dataclasses.replace(right, slot=tuple(slots))
    run = walk(wrong, rig_from=right, inject=("sensor-lost 1 1", "uart-noise 2 0 1"))

    assert not run.report.ok
    eeprom = run.find("slot 0", "EEPROM 0x57")
    assert eeprom.verdict is Verdict.FAIL
    assert "did not answer" in eeprom.detail
    assert "0x50" in eeprom.detail and "slot[0].eeprom_address" in eeprom.detail
    scan = run.find("i2c")
    assert scan.verdict is Verdict.LOOK and scan.data["not_configured"] == [0x50]

    sensor = run.find("slot 1", "sensor 1 0x4b")
    assert sensor.verdict is Verdict.FAIL and "did not answer" in sensor.detail
    assert run.find("slot 1", "sensor 0").verdict is Verdict.PASS
    skipped = run.find("chain 1")
    assert skipped.verdict is Verdict.SKIP
    assert "sensor 1 (0x4b) is unreadable" in skipped.detail

    silent = run.find("chain 2", "chip ids at 115200")
    assert silent.verdict is Verdict.FAIL
    assert "no chip answered" in silent.detail and silent.data["chips"] == 0
    assert run.parts("chain 0") == []  # no trusted identity: never a candidate for power
    assert [c.part for c in run.report.failures()] == ["slot 0", "slot 1", "chain 2"]
    assert run.report.checks[-1].verdict is Verdict.PASS  # still left safe
    power_pins = [s.power_pin for s in right.slot]
    assert 1.0 not in run.pin_levels(power_pins[0])  # the untrusted module
    assert 1.0 not in run.pin_levels(power_pins[1])  # the one that cannot be watched


def test_a_dead_fan_is_named_and_no_module_is_powered(tmp_path: Path) -> None:
    config = selftest_config(tmp_path)
    run = walk(config, inject=("fan-stall 1",))
    fan = run.find("fan 1", "speed")
    assert fan.verdict is Verdict.FAIL and "not turning at full duty" in fan.detail
    assert all(run.find(f"fan {n}", "speed").verdict is Verdict.PASS for n in (0, 2, 3))
    for slot in range(3):
        chain = run.find(f"chain {slot}")
        assert chain.verdict is Verdict.SKIP
        assert "fan 1 did not confirm its speed" in chain.detail
    for wired in config.slot:
        assert 1.0 not in run.pin_levels(wired.power_pin)


def test_crossed_fan_tachometers_are_named_as_crossed_wiring(tmp_path: Path) -> None:
    """The board wires fan 0's tachometer to pin 20 and fan 1's to pin 16; the config
    says the other way round."""
    config = with_gpio_fans(selftest_config(tmp_path, modules=()))
    fans = list(config.fan)
    fans[0] = dataclasses.replace(fans[0], tach_pin=config.fan[1].tach_pin)
    fans[1] = dataclasses.replace(fans[1], tach_pin=config.fan[0].tach_pin)
    run = walk(config, rig_from=dataclasses.replace(config, fan=tuple(fans)))
    crossed = run.find("fan 0", "speed")
    assert crossed.verdict is Verdict.FAIL
    assert "but fan 1 did: PWM and tachometer wiring crossed" in crossed.detail
    assert run.find("fan 1", "speed").verdict is Verdict.FAIL
    assert run.find("fan 2", "speed").verdict is Verdict.PASS
    assert run.find("fan 3", "speed").verdict is Verdict.PASS


def test_empty_slots_and_no_power_read_what_is_there_and_switch_nothing_on(
    tmp_path: Path,
) -> None:
    config = selftest_config(tmp_path, modules=(1,))
    run = walk(config, power=False)
    assert run.report.ok, render.table(run.report)
    for slot in (0, 2):
        assert run.find(f"slot {slot}", "module").verdict is Verdict.SKIP
        assert run.find(f"slot {slot}", "presence").detail == "high: empty"
        assert run.parts(f"chain {slot}") == []
    assert run.find("slot 1", "EEPROM").verdict is Verdict.PASS
    chain = run.find("chain 1")
    assert chain.verdict is Verdict.SKIP and chain.detail == "not powered: --no-power"
    for wired in config.slot:
        assert 1.0 not in run.pin_levels(wired.power_pin)


def test_a_nominal_voltage_above_the_site_cap_is_held_to_it_as_the_agent_would(
    tmp_path: Path,
) -> None:
    config = selftest_config(tmp_path, modules=(0,))
    capped = dataclasses.replace(
        config, limits=dataclasses.replace(config.limits, board_vout_max_v=13.0)
    )
    buses = open_buses(capped)
    written: list[float] = []
    dcdc = buses.sim.slots[0].module.dcdc
    command = dcdc.registers[Cmd.VOUT_COMMAND]

    def record(data: bytes) -> None:
        assert command.write is not None
        command.write(data)
        written.append(dcdc.vout_command_v)

    dcdc.registers[Cmd.VOUT_COMMAND] = dataclasses.replace(command, write=record)
    report = asyncio.run(run_self_test(capped, source="test", buses=buses))

    assert report.ok, render.table(report)
    assert written and max(written) <= 13.0  # the module declares 13.44 V nominal
    rail = next(c for c in report.checks if c.item.startswith("DC-DC"))
    assert rail.data["vout_command_v"] <= 13.0
    assert "its nominal 13.44 V held to limits" in rail.detail
    assert not buses.sim.slots[0].hotswap.on


def test_a_step_that_breaks_is_a_failure_and_makes_powering_unsafe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hashbay.agent.selftest import walk as walk_module

    async def broken(session: Any) -> None:
        raise RuntimeError("driver bug")

    steps = tuple(
        dataclasses.replace(step, run=broken) if step.name == "fans" else step for step in STEPS
    )
    monkeypatch.setattr(walk_module, "STEPS", steps)
    run = walk(selftest_config(tmp_path, modules=(0,)))
    failed = run.find("fans", "step")
    assert failed.verdict is Verdict.FAIL and "driver bug" in failed.detail
    chain = run.find("chain 0")
    assert chain.verdict is Verdict.SKIP and "the fans step did not finish" in chain.detail
    assert run.report.checks[-1].verdict is Verdict.PASS


def test_cancelling_the_walk_leaves_the_powered_module_off(tmp_path: Path) -> None:
    """SIGTERM or Ctrl-C cancel the walk; a module powered at that moment goes off."""
    config = selftest_config(tmp_path, modules=(0,))
    buses = open_buses(config)
    sim = buses.sim
    seen: list[Check] = []

    async def cancel_once_powered() -> None:
        powered = asyncio.Event()

        def on_check(check: Check) -> None:
            seen.append(check)
            if check.item.startswith("DC-DC"):
                powered.set()

        task = asyncio.create_task(
            run_self_test(config, source="test", buses=buses, on_check=on_check)
        )
        await powered.wait()
        assert sim.slots[0].hotswap.on
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_once_powered())
    assert not sim.slots[0].hotswap.on
    assert seen[-1].part == "safe state" and seen[-1].verdict is Verdict.PASS
