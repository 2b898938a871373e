"""The agent on the simulated rig with its fans on an EMC2305: driven and read through
the controller on the I2C bus, a stall seen, a controller that stops answering (its
watchdog runs the fans at full speed, the agent counts them as stalled), the safe state
applied through it; and the self-test on the same wiring."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.config import Config, check_relations
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.agent.hardware.fans import UNREADABLE_POLLS, FanReader
from hashbay.agent.selftest import render
from hashbay.agent.selftest.report import Verdict
from hashbay.drivers.emc2305 import ControllerFan, Emc2305
from hashbay.drivers.envelope import BoardLimits, FanLimits, SafetyEnvelope
from hashbay.drivers.i2c import LockedI2C
from hashbay.tools.sim.emc2305 import SimEmc2305
from hashbay.tools.sim.fans import SimFan
from hashbay.tools.sim.i2c import SimI2CBus
from hashbay.tools.sim.rig import SimRig

from .support import Clock, rig_config
from .test_selftest import QUICK, walk


def controller_config(tmp_path: Path) -> Config:
    """The in-process rig without modules (nothing heats, so the fans wind down quickly to
    their minimum) and its four fans on channels 1-4 of the fan controller."""
    config = rig_config(tmp_path, modules=())
    config = dataclasses.replace(
        config,
        hardware=dataclasses.replace(config.hardware, fan_backend="emc2305"),
        fan=tuple(
            dataclasses.replace(fan, pwm_pin=None, tach_pin=None, channel=n)
            for n, fan in enumerate(config.fan, start=1)
        ),
        thermal=dataclasses.replace(config.thermal, duty_up_per_s=2.0, duty_down_per_s=1.0),
    )
    check_relations(config)
    return config


async def until(condition: Callable[[], Any], what: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_the_agent_drives_and_reads_its_fans_through_the_controller(
    tmp_path: Path,
) -> None:
    agent = Agent(controller_config(tmp_path), notifier=SystemdNotifier({}))
    task = asyncio.create_task(agent.run())
    rig: SimRig = agent.rig.buses.sim
    controller = rig.fan_controller
    assert controller is not None
    assert all(isinstance(fan, ControllerFan) for fan in agent.rig.fans)
    try:
        await until(
            lambda: agent.thermal.status.code == "idle" and all(f.duty < 0.25 for f in rig.fans),
            "the fans wound down to the minimum duty through the controller",
        )
        assert [controller.registers[base] for base in (0x30, 0x40, 0x50, 0x60)] == [51] * 4
        await until(
            lambda: all(abs(f.rpm - 1200) < 12 for f in rig.fans), "the fans settled at 1200 rpm"
        )
        await asyncio.sleep(1.0)  # a poll or two at the settled speed
        last = agent.rig.last
        assert last is not None
        for reading, fan in zip(last.fans, rig.fans, strict=True):
            assert reading.duty == pytest.approx(51 / 255)
            assert reading.rpm == pytest.approx(fan.rpm, rel=0.02)
            assert not reading.stalled
        assert all(f.pulses_emitted > 0 for f in rig.fans)  # turning, but no pin pulsed

        rig.fan_stall(1)
        await until(
            lambda: (
                agent.thermal.status.code == "fan_stalled"
                and all(f.duty == 1.0 for i, f in enumerate(rig.fans) if i != 1)
            ),
            "the stall seen and the other fans at full speed",
            timeout_s=10,
        )
        last = agent.rig.last
        assert last is not None
        assert last.fans[1].stalled
        assert last.fans[1].rpm == 0.0
        assert controller.watchdog_fired == 0
        rig.fan_ok(1)

        controller.lost = True  # the controller stops answering: a broken SDA trace
        await until(
            lambda: controller.watchdog_fired and all(f.duty == 1.0 for f in rig.fans),
            "the controller's own watchdog running every fan at full speed",
            timeout_s=15,
        )
        await until(
            lambda: agent.rig.last and all(r.stalled for r in agent.rig.last.fans),
            "fans the agent cannot read counted as stalled",
        )
        controller.lost = False
        await until(
            lambda: agent.rig.last and not any(r.stalled for r in agent.rig.last.fans),
            "the fans read again once the controller answers",
        )
    finally:
        agent.supervisor.request_stop("test over")
        assert await asyncio.wait_for(task, 15) == 0
    assert [controller.registers[base] for base in (0x30, 0x40, 0x50, 0x60)] == [0xFF] * 4


def one_fan_on_a_controller(
    clock: Clock, *, rpm: float, rng: random.Random | None = None
) -> tuple[SimI2CBus, FanReader]:
    """A simulated EMC2305 with one fan on channel 1, configured, and the agent's reader."""
    bus = SimI2CBus(clock=clock, rng=rng)
    part = SimEmc2305(0x2F, clock)
    bus.attach(0x2F, part)
    part.connect(1, SimFan(None, None, None, drive=part.drive(1), rpm=rpm))
    chip = Emc2305(
        LockedI2C(bus),
        0x2F,
        SafetyEnvelope(FanLimits(0.2, 1.0), BoardLimits(11, 15.5, 50, 800, 1800), 5500),
    )
    chip.configure([1])
    return bus, FanReader([chip.fan(1, "fan0")])


def test_a_fan_unread_is_asked_again_and_counts_as_stalled_only_after_polls_running() -> None:
    clock = Clock(0.0)
    bus, reader = one_fan_on_a_controller(clock, rpm=0.0)
    bus.set_error_rate(1.0, 0x2F)
    for _ in range(UNREADABLE_POLLS - 1):
        missed = reader.read_all()[0]
        assert (missed.rpm, missed.stalled) == (0.0, False)
    assert reader.read_all()[0].stalled
    assert reader.read_all()[0].stalled
    bus.clear_faults()
    again = reader.read_all()[0]
    assert (again.duty, again.stalled) == (1.0, False)


def test_transactions_lost_now_and_then_never_make_a_stall() -> None:
    clock = Clock(0.0)
    bus, reader = one_fan_on_a_controller(clock, rpm=5000.0, rng=random.Random(7))
    bus.set_error_rate(0.2, 0x2F)
    readings = []
    for _ in range(500):
        clock.now += 1.0
        readings.append(reader.read_all()[0])
    assert not any(r.stalled for r in readings)
    assert sum(r.rpm == 0 for r in readings) < 10  # a whole poll missed: rare


def test_the_self_test_spins_fans_on_the_controller_and_claims_no_pins_for_them(
    tmp_path: Path,
) -> None:
    config = controller_config(tmp_path)
    config = dataclasses.replace(
        config,
        sim=dataclasses.replace(config.sim, modules=(0,), time_scale=10),
        selftest=QUICK,
    )
    check_relations(config)
    done = walk(config)
    assert done.report.ok, render.table(done.report)
    for fan in range(4):
        assert done.find(f"fan {fan}", "speed").verdict is Verdict.PASS
    assert not any(c.part.startswith("fan") and "pin" in c.data for c in done.report.checks)
    assert "0x2f" in done.find("i2c").detail
    assert "not in the config" not in done.find("i2c").detail
