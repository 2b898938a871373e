"""What the chaos tests share: an agent on the simulated rig, faults injected by command,
and waiting in simulated time with a margin of real time for what does not scale."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hashbay.agent.core.status import SlotState
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.config import Config
from hashbay.agent.interfaces.commands import Command
from hashbay.tools.sim.fault_matrix import Due
from hashbay.tools.sim.faults import parse
from hashbay.tools.sim.rig import SimRig

from ..support import rig_config

TIME_SCALE = 20.0
SLACK_S = 3.0
"""Real seconds allowed on top of every scaled deadline: the event loop, the UART at its
baud rate, enumeration and ramps run in real time whatever the simulated clock does."""
HASHING = (SlotState.HASHING, SlotState.DEGRADED)


def chaos_config(scratch: Path, **alarms: Any) -> Config:
    """Three 42-chip boards at TIME_SCALE with default protection; shorter windows for
    health and bus noise, so a trouble that ended is forgotten within seconds."""
    config = rig_config(scratch, time_scale=TIME_SCALE)
    return dataclasses.replace(
        config,
        alarms=dataclasses.replace(config.alarms, bus_window_s=60.0, **alarms),
        health=dataclasses.replace(config.health, window_s=120.0),
    )


def sim(agent: Agent) -> SimRig:
    rig: SimRig = agent.rig.buses.sim
    return rig


def real_s(agent: Agent, due: Due) -> float:
    """Real seconds to wait for something due: its part on the agent's clock runs at the
    simulated rig's time scale, its part on the event loop in real time."""
    return due.clock_s / agent.config.sim.time_scale + due.loop_s + SLACK_S


async def until(check: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.1f} s real: {what}")
        await asyncio.sleep(0.02)


async def step(agent: Agent, command: str) -> None:
    """A fault command for the simulator, or `hashbay reset N` for the agent. A pull
    waits for the agent to see the slot empty: no hand swaps a module in milliseconds."""
    if command.startswith("hashbay reset "):
        slot = int(command.rsplit(" ", 1)[1])
        await agent.dispatch(Command("reset_slot", {"slot": slot}))
        return
    sim(agent).apply(parse(command))
    if command.startswith("pull "):
        controller = agent.controllers[int(command.split()[1])]
        await until(lambda: controller.state is SlotState.EMPTY, 10, f"{command}: seen empty")


def normal(agent: Agent) -> bool:
    """Every slot hashing at full clock, with nothing to say about its health."""
    for controller in agent.controllers:
        status = controller.status
        if controller.state is not SlotState.HASHING or controller.throttle < 1.0:
            return False
        if status.health is None or status.health.reasons:
            return False
        if any(device.noisy for device in status.bus):
            return False
    return True
