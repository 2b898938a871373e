"""The over-temperature cut that does not wait for the event loop: the sensors' hardware
comparators on each slot's alert line, on the whole agent and simulated rig."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from hashbay.agent.core.events import EventKind
from hashbay.agent.core.status import SlotState
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.config import Config
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.tools.sim.rig import SimRig

from .support import rig_config
from .test_lifecycle import until


def alerting_config(tmp_path: Path, *, wired: bool = True, **protection: Any) -> Config:
    """Three 42-chip boards at 10x simulated time; each slot's alert line as the packaged
    rig wires it, or (wired=False) not at all."""
    config = rig_config(tmp_path, time_scale=10)
    assert all(slot.alert_pin is not None for slot in config.slot)
    if not wired:
        slots = tuple(dataclasses.replace(slot, alert_pin=None) for slot in config.slot)
        config = dataclasses.replace(config, slot=slots)
    return dataclasses.replace(
        config,
        protection=dataclasses.replace(
            config.protection, restart_min_off_s=1.0, throttle_interval_s=1.0, **protection
        ),
    )


@pytest.fixture
async def agent_for(tmp_path: Path) -> AsyncIterator[Callable[..., Agent]]:
    started: list[tuple[Agent, asyncio.Task[int]]] = []

    def start(**options: Any) -> Agent:
        agent = Agent(alerting_config(tmp_path, **options), notifier=SystemdNotifier({}))
        started.append((agent, asyncio.create_task(agent.run())))
        return agent

    yield start
    for agent, task in started:
        agent.supervisor.request_stop("test over")
        assert await asyncio.wait_for(task, 15) == 0


async def all_hashing(agent: Agent) -> None:
    await until(
        lambda: all(c.state is SlotState.HASHING for c in agent.controllers),
        what=f"all hashing (now {[c.state for c in agent.controllers]})",
    )


async def test_every_sensor_is_armed_with_the_cutoff_before_its_module_is_powered(
    agent_for: Callable[..., Agent],
) -> None:
    agent = agent_for()
    await all_hashing(agent)
    rig: SimRig = agent.rig.buses.sim
    cutoff = agent.config.protection.cutoff_c
    release = cutoff - agent.config.protection.hysteresis_c
    for slot in rig.slots:
        assert slot.module is not None
        for sensor in slot.module.sensors:
            assert sensor.t_high == round(cutoff * 2) << 7  # T_OS
            assert sensor.t_low == round(release * 2) << 7  # T_HYST
            assert sensor.config & 0x06 == 0  # comparator mode, active low


async def test_a_board_over_its_cutoff_is_cut_while_the_event_loop_is_frozen(
    agent_for: Callable[..., Agent],
) -> None:
    agent = agent_for()
    rig: SimRig = agent.rig.buses.sim
    await all_hashing(agent)
    cutoff = agent.config.protection.cutoff_c
    watch = rig.watch_cutoff(0, cutoff)
    frozen_at = time.monotonic()
    rig.overheat(0, 4.0)  # 40 °C per real second at 10x: past the cutoff within a second
    time.sleep(3.0)  # the whole event loop stops here, on purpose: no sweep can run
    thawed_at = time.monotonic()
    assert watch.crossed_at is not None, "the board never reached its cutoff"
    assert watch.cut_at is not None and frozen_at < watch.cut_at < thawed_at
    assert not rig.slots[0].hotswap.enable_pin
    rig.overheat(0, 0.0)
    await until(lambda: agent.controllers[0].state is SlotState.FAULT, what="slot 0 faulted")
    cut = [e for e in agent.events.recent(100) if e.slot == 0 and e.kind is EventKind.FAULT]
    assert cut and "hardware limit" in cut[-1].message
    assert [c.state for c in agent.controllers[1:]] == [SlotState.HASHING] * 2


async def test_the_sweep_backs_the_hardware_up_at_its_slower_pace(
    agent_for: Callable[..., Agent],
) -> None:
    agent = agent_for()
    await all_hashing(agent)
    protection = agent.config.protection
    assert agent.sweep.interval_s == protection.backup_interval_s
    assert protection.backup_interval_s > protection.check_interval_s


async def test_without_alert_lines_the_sweep_keeps_its_fast_pace(
    agent_for: Callable[..., Agent],
) -> None:
    agent = agent_for(wired=False)
    await all_hashing(agent)
    assert agent.sweep.interval_s == agent.config.protection.check_interval_s


async def test_a_module_whose_sensor_forgets_its_limits_is_never_powered(
    agent_for: Callable[..., Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hashbay.tools.sim.i2c_devices import SimTemperatureSensor

    original = SimTemperatureSensor.write

    def forgetful(self: SimTemperatureSensor, data: bytes) -> None:
        original(self, data)
        self.t_high = 80 << 8  # snaps back to the power-on limit

    monkeypatch.setattr(SimTemperatureSensor, "write", forgetful)
    agent = agent_for()
    await until(
        lambda: all(c.state is SlotState.FAULT for c in agent.controllers),
        what="every slot faulted",
    )
    rig: SimRig = agent.rig.buses.sim
    assert not any(slot.hotswap.enable_pin for slot in rig.slots)
    faults = [e for e in agent.events.recent(100) if e.kind is EventKind.FAULT]
    assert faults and all("over-temperature cut not armed" in e.message for e in faults)
