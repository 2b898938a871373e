"""The fault matrix, row by row, against one running agent on the simulated rig: inject the
fault, see the expected reaction within its time, take the cause away (or do what the
technician would), and see the module hashing again within its time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from hashbay.agent.core.events import EventKind
from hashbay.agent.core.status import SlotState
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.agent.modules.slots import SlotController
from hashbay.tools.sim.fault_matrix import MATRIX, Reaction, Row

from .rig import HASHING, chaos_config, normal, real_s, sim, step, until

pytestmark = [pytest.mark.chaos, pytest.mark.asyncio(loop_scope="module")]
ALARMS = {EventKind.FAULT, EventKind.OVERHEAT, EventKind.SENSOR_UNREADABLE, EventKind.THROTTLED}
SHARED = [row for row in MATRIX if row.reaction is not Reaction.SAFE_STATE]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def agent(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Agent]:
    running = Agent(chaos_config(tmp_path_factory.mktemp("chaos")), notifier=SystemdNotifier({}))
    task = asyncio.create_task(running.run())
    await until(lambda: normal(running), 60, "every slot hashing, healthy")
    yield running
    running.supervisor.request_stop("chaos over")
    assert await asyncio.wait_for(task, 15) == 0


def watched(agent: Agent, row: Row) -> list[SlotController]:
    return list(agent.controllers) if row.every_slot else [agent.controllers[row.slot]]


def reaction(agent: Agent, row: Row, events_before: int) -> Callable[[SlotController], bool]:
    """Whether one slot shows the row's reaction right now."""
    rig = sim(agent)

    def cut(c: SlotController) -> bool:
        return c.state is SlotState.FAULT and not rig.slots[c.index].hotswap.enable_pin

    def new_events(kind: EventKind, c: SlotController) -> bool:
        events = agent.events.recent(1000)[events_before:]
        return any(e.kind is kind and e.slot == c.index for e in events)

    checks: dict[Reaction, Callable[[SlotController], bool]] = {
        Reaction.CUT: cut,
        Reaction.NEEDS_SERVICE: lambda c: cut(c) and new_events(EventKind.NEEDS_SERVICE, c),
        Reaction.NOT_POWERED: lambda c: cut(c) and "not powered" in c.status.detail,
        Reaction.REMOVED: lambda c: (
            c.state is SlotState.EMPTY
            and new_events(EventKind.REMOVED, c)
            and not rig.slots[c.index].hotswap.enable_pin
        ),
        Reaction.THROTTLE: lambda c: c.state in HASHING and c.throttle < 1.0,
        Reaction.NAMED: lambda c: c.state in HASHING and named(c),
    }
    return checks[row.reaction]


def named(c: SlotController) -> bool:
    health = c.status.health
    return bool(health and health.reasons) or any(d.noisy for d in c.status.bus)


async def settle(agent: Agent) -> None:
    """Start every row from a healthy rig whose slots have no restarts counted (a slot that
    restarted is re-seated, as a technician would, so the rows do not add up)."""
    await until(lambda: normal(agent), 90, "back to normal before the next row")
    for controller in agent.controllers:
        if controller.status.restarts:
            await reseat(agent, controller)
    await until(lambda: normal(agent), 90, "re-seated modules hashing")


async def reseat(agent: Agent, controller: SlotController) -> None:
    rig = sim(agent)
    rig.pull_module(controller.index)
    await until(lambda: controller.state is SlotState.EMPTY, 10, "pulled")
    rig.insert_module(controller.index)


@pytest.mark.parametrize(
    "row",
    [pytest.param(row, marks=[pytest.mark.smoke] if row.quick else []) for row in SHARED],
    ids=[row.fault for row in SHARED],
)
async def test_fault(agent: Agent, row: Row) -> None:
    await settle(agent)
    config = agent.config
    before = len(agent.events.recent(1000))
    slots = watched(agent, row)
    await step(agent, row.fault)
    for command in row.then:
        await step(agent, command)
    within_s = real_s(agent, row.within(config))
    if row.reaction is Reaction.RIDE_THROUGH:
        await asyncio.sleep(within_s - 2.0)  # the whole time: nothing may happen
        alarms = [e for e in agent.events.recent(1000)[before:] if e.kind in ALARMS]
        assert alarms == [], f"{row.fault}: {alarms}"
        assert all(c.state is SlotState.HASHING for c in agent.controllers)
    else:
        check = reaction(agent, row, before)
        seen: set[int] = set()

        def every_slot_reacted() -> bool:
            seen.update(c.index for c in slots if check(c))
            return len(seen) == len(slots)

        await until(every_slot_reacted, within_s, f"{row.fault}: {row.reaction}")
    for command in row.heal:
        await step(agent, command)
    if not row.back_by_itself:
        for command in row.technician:
            await step(agent, command)
    back_s = real_s(agent, row.back_within(config))

    def back() -> bool:
        return all(
            c.state is SlotState.HASHING and c.throttle == 1.0 and not named(c) for c in slots
        )

    await until(back, back_s, f"{row.fault}: hashing again")


async def test_a_bus_nobody_can_use_puts_the_rig_in_its_safe_state(tmp_path: Path) -> None:
    (row,) = [row for row in MATRIX if row.reaction is Reaction.SAFE_STATE]
    agent = Agent(chaos_config(tmp_path), notifier=SystemdNotifier({}))
    task = asyncio.create_task(agent.run())
    rig = sim(agent)
    try:
        await until(lambda: normal(agent), 60, "every slot hashing")
        await step(agent, row.fault)
        # The stall guard runs on real time, whatever the simulated clock does.
        assert await asyncio.wait_for(task, real_s(agent, row.within(agent.config))) == 70
        power_pins = [rig.pin_factory.pin(slot.config.power_pin) for slot in rig.slots]
        assert [pin.state for pin in power_pins] == [0, 0, 0]  # every board's enable low
        assert all(fan.duty == agent.config.limits.safe_fan_duty for fan in rig.fans)
    finally:
        rig.i2c_ok()  # let the hardware thread's last transaction end
        if not task.done():
            agent.supervisor.request_stop("test over")
            await asyncio.wait_for(task, 15)
