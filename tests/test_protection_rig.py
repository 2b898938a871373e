"""Protection on the whole agent and simulated rig: a hot board is throttled, then cut at
once, comes back by itself once cool, and stays off after too many trips; a lost sensor
cuts its board; a stalled fan throttles the boards. The other slots keep hashing."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from hashbay.agent.core.events import EventKind
from hashbay.agent.core.fault_codes import Fault
from hashbay.agent.core.status import SlotState
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.config import Config
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.agent.interfaces.commands import Command
from hashbay.tools.sim.rig import SimRig

from .support import rig_config
from .test_lifecycle import until


def protected_config(tmp_path: Path, **protection: Any) -> Config:
    """Three 42-chip boards, simulated time 10x (boards cool in seconds), quick protection,
    and no alert lines: the software sweep alone watches them (the hardware cut is
    tests/test_alert_cut_rig.py's)."""
    config = rig_config(tmp_path, time_scale=10)
    return dataclasses.replace(
        config,
        slot=tuple(dataclasses.replace(slot, alert_pin=None) for slot in config.slot),
        protection=dataclasses.replace(
            config.protection,
            restart_min_off_s=1.0,
            throttle_interval_s=1.0,
            sensor_lost_s=0.5,
            **protection,
        ),
    )


@pytest.fixture
async def agent_for(tmp_path: Path) -> AsyncIterator[Callable[..., Agent]]:
    started: list[tuple[Agent, asyncio.Task[int]]] = []

    def start(**protection: Any) -> Agent:
        agent = Agent(protected_config(tmp_path, **protection), notifier=SystemdNotifier({}))
        started.append((agent, asyncio.create_task(agent.run())))
        return agent

    yield start
    for agent, task in started:
        agent.supervisor.request_stop("test over")
        assert await asyncio.wait_for(task, 15) == 0


def kinds(agent: Agent, slot: int) -> list[str]:
    return [e.kind.value for e in agent.events.recent(200) if e.slot == slot]


async def all_hashing(agent: Agent) -> None:
    await until(
        lambda: all(c.state is SlotState.HASHING for c in agent.controllers),
        what=f"all hashing (now {[c.state for c in agent.controllers]})",
    )


async def test_hot_board_is_throttled_then_cut_then_comes_back_by_itself(
    agent_for: Callable[..., Agent],
) -> None:
    agent = agent_for()
    rig: SimRig = agent.rig.buses.sim
    await all_hashing(agent)
    cutoff = agent.config.protection.cutoff_c
    watch = rig.watch_cutoff(0, cutoff)
    rig.overheat(0, 1.5)  # 1.5 °C per simulated second: through the throttle band to the cutoff
    await until(lambda: agent.controllers[0].throttle < 1.0, what="throttled")
    assert "throttling" in agent.controllers[0].status.throttle_reason
    nominal = max(agent.controllers[1].chain.freq_mhz)  # type: ignore[union-attr]
    await until(  # the chips themselves slowed down, not only the figure
        lambda: (
            (chain := agent.controllers[0].chain) is not None
            and max(chain.freq_mhz) <= 0.95 * nominal
        ),
        what="slower clocks",
    )
    await until(lambda: agent.controllers[0].state is SlotState.FAULT, what="cut")
    await until(lambda: watch.cut_at is not None, what="the simulator sees the enable drop")
    assert watch.crossed_at is not None and watch.cut_at is not None
    assert watch.cut_at >= watch.crossed_at  # cut only once the sensors showed the cutoff
    assert rig.slots[0].hotswap.enable_pin is False
    assert "cutoff" in agent.controllers[0].status.detail
    assert [c.state for c in agent.controllers[1:]] == [SlotState.HASHING] * 2
    assert {"throttled", "fault"} <= set(kinds(agent, 0))
    cut = next(e for e in agent.events.recent(200) if e.slot == 0 and e.kind is EventKind.FAULT)
    assert cut.details["code"] == Fault.OVER_TEMP_CUT.code
    assert agent.controllers[0].status.fault_code == Fault.OVER_TEMP_CUT.code
    throttled = [e for e in agent.events.recent(200) if e.kind is EventKind.THROTTLED]
    assert throttled[0].details["code"] == Fault.THROTTLED.code

    rig.overheat(0, 0.0)  # the heatsink is clear again: the board cools and restarts
    await until(lambda: "restarting" in kinds(agent, 0), timeout_s=60, what="restart")
    await until(lambda: agent.controllers[0].state is SlotState.HASHING, what="hashing again")
    assert agent.controllers[0].status.restarts == 1
    assert agent.controllers[0].throttle == 1.0
    assert agent.controllers[0].status.fault_code is None  # no code outlives the fault


async def test_repeated_trips_leave_the_board_off_until_a_technician_resets_it(
    agent_for: Callable[..., Agent],
) -> None:
    agent = agent_for(max_restarts=1)
    rig: SimRig = agent.rig.buses.sim
    await all_hashing(agent)
    rig.overheat(0, 15.0)
    await until(lambda: agent.controllers[0].state is SlotState.FAULT, what="first cut")
    rig.overheat(0, 0.0)
    await until(lambda: "restarting" in kinds(agent, 0), timeout_s=60, what="restart")
    await until(lambda: agent.controllers[0].state is SlotState.HASHING, what="back up")
    rig.overheat(0, 15.0)
    await until(lambda: "needs_service" in kinds(agent, 0), timeout_s=60, what="gives up")
    rig.overheat(0, 0.0)
    assert agent.controllers[0].state is SlotState.FAULT
    assert "needs service" in agent.controllers[0].status.detail
    await asyncio.sleep(2.0)  # cooler now, but the limit holds
    assert agent.controllers[0].state is SlotState.FAULT

    reply = await agent.dispatch(Command("reset_slot", {"slot": 0}))
    assert reply == {"slot": 0, "state": "fault"}  # it restarts once cool, not straight away
    assert "reset by a technician" in agent.controllers[0].status.detail
    await until(lambda: agent.controllers[0].state is SlotState.HASHING, timeout_s=60, what="up")
    assert agent.controllers[0].status.restarts == 1  # counted afresh from the reset


async def test_lost_sensor_cuts_its_board_and_only_its_board(
    agent_for: Callable[..., Agent],
) -> None:
    agent = agent_for()
    rig: SimRig = agent.rig.buses.sim
    await all_hashing(agent)
    rig.sensor_fault(1, 0, "lost")
    await until(lambda: agent.controllers[1].state is SlotState.FAULT, what="cut")
    assert rig.slots[1].hotswap.enable_pin is False
    assert "sensor" in agent.controllers[1].status.detail
    await asyncio.sleep(1.5)  # while the sensor stays lost the board may not restart
    assert agent.controllers[1].state is SlotState.FAULT
    assert agent.controllers[0].state is SlotState.HASHING
    rig.sensor_fault(1, 0, "ok")
    await until(lambda: agent.controllers[1].state is SlotState.HASHING, timeout_s=60, what="up")


async def test_stalled_fan_throttles_every_board(agent_for: Callable[..., Agent]) -> None:
    agent = agent_for()
    rig: SimRig = agent.rig.buses.sim
    await all_hashing(agent)
    await until(
        lambda: all(c.throttle == 1.0 for c in agent.controllers), what="unthrottled at start"
    )
    rig.fan_stall(2)
    stall_scale = agent.config.protection.stall_scale
    await until(lambda: all(c.throttle == stall_scale for c in agent.controllers), what="throttled")
    await until(
        lambda: all(
            c.chain is not None and max(c.chain.freq_mhz) <= stall_scale * 490 + 7
            for c in agent.controllers
        ),
        what="every chain clocked down",
    )
    assert all(c.state is SlotState.HASHING for c in agent.controllers)
    assert "fan" in agent.controllers[0].status.throttle_reason
    assert any(e.kind is EventKind.THROTTLED for e in agent.events.recent(100))
    rig.fan_ok(2)
    await until(lambda: all(c.throttle == 1.0 for c in agent.controllers), what="released")


async def test_a_module_back_after_a_pull_shows_no_throttle_reason_from_before(
    agent_for: Callable[..., Agent],
) -> None:
    agent = agent_for()
    rig: SimRig = agent.rig.buses.sim
    await all_hashing(agent)
    rig.fan_stall(1)
    await until(lambda: "stalled" in agent.controllers[0].status.throttle_reason, what="throttled")
    rig.pull_module(0)
    await until(lambda: agent.controllers[0].state is SlotState.EMPTY, what="pulled")
    assert agent.controllers[0].status.throttle_reason == ""
    rig.fan_ok(1)
    await until(lambda: all(c.throttle == 1.0 for c in agent.controllers[1:]), what="released")
    rig.insert_module(0)
    await until(lambda: agent.controllers[0].state is SlotState.HASHING, what="hashing again")
    await asyncio.sleep(0.5)
    status = agent.controllers[0].status
    assert (status.throttle, status.throttle_reason) == (1.0, "")
