"""A noisy I2C bus on the whole agent and simulated rig: no alarm flood, no false cut, the
boards keep hashing; and a pulled module raises no temperature events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hashbay.agent.core.events import EventKind
from hashbay.agent.core.status import SlotState
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.tools.cli_render import slot_text
from hashbay.tools.sim.rig import SimRig

from .support import rig_config
from .test_lifecycle import until

TEMPERATURE_KINDS = {EventKind.OVERHEAT, EventKind.THROTTLED, EventKind.SENSOR_UNREADABLE}


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    config = rig_config(tmp_path, time_scale=10)
    agent = Agent(config, notifier=SystemdNotifier({}))
    task = asyncio.create_task(agent.run())
    await until(
        lambda: all(c.state is SlotState.HASHING for c in agent.controllers), what="hashing"
    )
    yield agent
    agent.supervisor.request_stop("test over")
    assert await asyncio.wait_for(task, 15) == 0


def kinds_since(agent: Agent, count: int) -> list[EventKind]:
    return [e.kind for e in agent.events.recent(1000)[count:]]


async def test_a_noisy_bus_raises_no_temperature_alarms_and_cuts_nothing(agent: Agent) -> None:
    rig: SimRig = agent.rig.buses.sim
    seen = len(agent.events.recent(1000))
    rig.i2c_errors(0.2, None)  # one transaction in five fails, on every device
    await asyncio.sleep(15.0)  # 750 sweeps of six sensors, 150 s of simulated time
    rig.i2c_errors(0.0, None)
    happened = kinds_since(agent, seen)
    assert not TEMPERATURE_KINDS & set(happened), happened
    assert EventKind.FAULT not in happened
    assert all(c.state is SlotState.HASHING for c in agent.controllers)


async def test_a_pulled_module_raises_only_its_removal(agent: Agent) -> None:
    rig: SimRig = agent.rig.buses.sim
    for _ in range(3):
        seen = len(agent.events.recent(1000))
        rig.pull_module(1)
        await until(lambda: agent.controllers[1].state is SlotState.EMPTY, what="pulled")
        await asyncio.sleep(0.5)
        assert kinds_since(agent, seen) == [EventKind.REMOVED]
        rig.insert_module(1)
        await until(lambda: agent.controllers[1].state is SlotState.HASHING, what="back")


async def test_pec_errors_on_a_dc_dc_are_counted_named_and_cost_health(agent: Agent) -> None:
    rig: SimRig = agent.rig.buses.sim
    dcdc = rig.slots[0].config.dcdc_address
    rig.pec_errors(0.3, dcdc)

    def noisy() -> list[Any]:
        return [d for d in agent.controllers[0].status.bus if d.noisy]

    await until(noisy, what="the DC-DC judged noisy")
    device = noisy()[0]
    assert (device.device, device.address) == ("DC-DC", dcdc)
    assert device.pec_errors > 10 * max(device.nacks, 1)  # a NACK or two while it powered up
    assert device.timeouts == device.bus_errors == 0
    assert 0.15 < device.error_share < 0.45
    health = agent.controllers[0].status.health
    assert health is not None
    assert any(r.code == "bus_noise" and "DC-DC (0x20)" in r.text for r in health.reasons)
    assert [e.kind for e in agent.events.recent(100) if e.slot == 0][-1] is EventKind.BUS_NOISE
    assert not any(d.noisy for c in agent.controllers[1:] for d in c.status.bus)
    assert agent.controllers[0].state is SlotState.HASHING
    status = agent.controllers[0].status.to_json()
    assert any(d["device"] == "DC-DC" and d["pec_errors"] > 0 for d in status["bus"])
    shown = slot_text({"status": status})  # what `hashbay slot 0` prints
    assert "Bus         DC-DC 0x20:" in shown and "PEC errors" in shown and "NOISY" in shown
