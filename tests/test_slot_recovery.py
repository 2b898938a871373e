"""Whatever goes wrong inside a slot ends the same way: the module off and a `fault` event,
never a crash loop without one; no stored file can keep a module from powering; latched
faults are cleared where the datasheet says, and one that sets again at once still ends
in `needs_service`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
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
from hashbay.agent.modules.lifecycle import TOUCHES_HARDWARE, TRANSITIONS, Trigger
from hashbay.tools.sim.rig import SimRig

from .support import rig_config
from .test_lifecycle import until

CHIPS = 42


def test_every_state_that_touches_hardware_can_fault() -> None:
    for state in TOUCHES_HARDWARE:
        assert TRANSITIONS.get((state, Trigger.FAULT)) is SlotState.FAULT, state


def quick_config(tmp_path: Path, modules: tuple[int, ...] = (0,), **protection: Any) -> Config:
    config = rig_config(tmp_path, chips=CHIPS, modules=modules, time_scale=10)
    return dataclasses.replace(
        config,
        protection=dataclasses.replace(
            config.protection, restart_min_off_s=1.0, sensor_lost_s=0.5, **protection
        ),
    )


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Callable[[Config], Agent]]:
    started: list[tuple[Agent, asyncio.Task[int]]] = []

    def run(config: Config) -> Agent:
        agent = Agent(config, notifier=SystemdNotifier({}))
        started.append((agent, asyncio.create_task(agent.run())))
        return agent

    yield run
    for agent, task in started:
        agent.supervisor.request_stop("test over")
        assert await asyncio.wait_for(task, 15) == 0


def events(agent: Agent, kind: EventKind, slot: int = 0) -> list[Any]:
    return [e for e in agent.events.recent(200) if e.kind is kind and e.slot == slot]


def tripped(rig: SimRig) -> bool:
    """Whether slot 0's hot-swap controller holds a latched over-current."""
    return rig.slots[0].hotswap.tripped


def profile_json(serial: str, tuned_at: str) -> dict[str, Any]:
    """A tuning profile any tuner could have written, but for its date."""
    return {
        "schema": 1,
        "serial": serial,
        "board_model": f"HB-1368-{CHIPS}",
        "tuned_at": tuned_at,
        "chip_count": CHIPS,
        "max_error": 0.01,
        "duration_s": 3600.0,
        "points": [
            {
                "board_v": 13.0,
                "freqs_mhz": [480.0] * CHIPS,
                "power_w": 400.0,
                "hashrate_hs": 1e12,
                "error_share": 0.002,
                "weak_chips": [],
            }
        ],
    }


async def test_a_tune_profile_with_an_impossible_date_is_dropped_and_the_module_hashes(
    tmp_path: Path, start: Callable[[Config], Agent]
) -> None:
    config = quick_config(tmp_path)
    tune_dir = Path(config.agent.state_dir) / "tune"
    tune_dir.mkdir(parents=True)
    serial = "HB0100001"  # the first module the simulated rig (seed 1) makes
    bad = profile_json(serial, "0001-01-01T00:00:00+01:00")
    (tune_dir / f"{serial}.json").write_text(json.dumps(bad))
    agent = start(config)
    await until(lambda: agent.controllers[0].state is SlotState.HASHING, what="hashing")
    assert agent.controllers[0].status.serial == serial
    dropped = events(agent, EventKind.STATE_DROPPED)
    assert len(dropped) == 1
    assert "out of range" in dropped[0].message
    assert not events(agent, EventKind.FAULT)


async def test_a_bug_while_identifying_faults_the_slot_once_with_an_event(
    tmp_path: Path, start: Callable[[Config], Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = start(quick_config(tmp_path))
    controller = agent.controllers[0]

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("a bug in the agent")

    monkeypatch.setattr(controller.svc, "health", broken)  # asked for while identifying
    await until(lambda: controller.state is SlotState.FAULT, what="fault")
    rig: SimRig = agent.rig.buses.sim
    assert rig.slots[0].hotswap.enable_pin is False
    await asyncio.sleep(0.5)
    faults = events(agent, EventKind.FAULT)
    assert len(faults) == 1 and "internal error while identifying" in faults[0].message
    assert faults[0].details["code"] == controller.status.fault_code == Fault.INTERNAL_ERROR.code
    assert "ZeroDivisionError" in controller.status.detail
    monkeypatch.undo()
    assert await agent.dispatch(Command("reset_slot", {"slot": 0})) == {
        "slot": 0,
        "state": "inserted",
    }
    await until(lambda: controller.state is SlotState.HASHING, what="hashing after the reset")


async def test_a_failure_while_faulted_waits_for_a_technician_instead_of_looping(
    tmp_path: Path, start: Callable[[Config], Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = start(quick_config(tmp_path))
    controller = agent.controllers[0]
    await until(lambda: controller.state is SlotState.HASHING, what="hashing")
    rig: SimRig = agent.rig.buses.sim

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("cannot read while faulted")

    policy = (
        controller.module.restarts if controller.module else None
    )  # asked by the fault state whether to restart
    assert policy is not None
    monkeypatch.setattr(policy, "may_restart", broken)
    rig.dcdc_overcurrent(0)
    await until(lambda: len(events(agent, EventKind.FAULT)) >= 2, what="the second fault")
    await asyncio.sleep(1.0)
    assert len(events(agent, EventKind.FAULT)) == 2  # not one per turn of a loop
    assert controller.state is SlotState.FAULT
    assert rig.slots[0].hotswap.enable_pin is False


async def test_a_tripped_hot_swap_is_cleared_before_the_automatic_restart(
    tmp_path: Path, start: Callable[[Config], Agent]
) -> None:
    agent = start(quick_config(tmp_path))
    controller = agent.controllers[0]
    rig: SimRig = agent.rig.buses.sim
    await until(lambda: controller.state is SlotState.HASHING, what="hashing")
    rig.hotswap_overcurrent(0)
    await until(lambda: controller.state is SlotState.FAULT, what="the trip")
    assert tripped(rig)  # latched: only CLEAR_FAULTS releases it
    assert controller.status.fault_code == Fault.RAIL_FAULT.code
    await until(lambda: events(agent, EventKind.RESTARTING), timeout_s=30, what="restart")
    await until(lambda: controller.state is SlotState.HASHING, what="hashing again")
    assert not tripped(rig)
    assert controller.status.restarts == 1
    assert len(events(agent, EventKind.FAULT)) == 1


@pytest.mark.parametrize("way_back", ["reset_slot", "re-seat"])
async def test_a_latch_left_by_a_trip_is_cleared_by_a_reset_or_a_reseat(
    tmp_path: Path, start: Callable[[Config], Agent], way_back: str
) -> None:
    agent = start(quick_config(tmp_path, max_restarts=0))  # no restart by itself
    controller = agent.controllers[0]
    rig: SimRig = agent.rig.buses.sim
    await until(lambda: controller.state is SlotState.HASHING, what="hashing")
    rig.hotswap_overcurrent(0)
    await until(lambda: events(agent, EventKind.NEEDS_SERVICE), timeout_s=30, what="gives up")
    assert controller.state is SlotState.FAULT and tripped(rig)
    if way_back == "reset_slot":
        await agent.dispatch(Command("reset_slot", {"slot": 0}))
    else:
        rig.pull_module(0)
        await until(lambda: controller.state is SlotState.EMPTY, what="pulled")
        rig.insert_module(0)
    await until(lambda: controller.state is SlotState.HASHING, timeout_s=30, what="back up")
    assert not tripped(rig)
    assert len(events(agent, EventKind.FAULT)) == 1


async def test_a_latch_that_sets_again_at_once_still_ends_in_needs_service(
    tmp_path: Path, start: Callable[[Config], Agent]
) -> None:
    agent = start(quick_config(tmp_path, max_restarts=2))
    controller = agent.controllers[0]
    rig: SimRig = agent.rig.buses.sim
    await until(lambda: controller.state is SlotState.HASHING, what="hashing")
    rig.module_short(0)
    rig.hotswap_overcurrent(0)  # the short is there from now on; the first trip at once
    await until(lambda: events(agent, EventKind.NEEDS_SERVICE), timeout_s=60, what="gives up")
    assert controller.state is SlotState.FAULT
    assert len(events(agent, EventKind.RESTARTING)) == 2
    assert len(events(agent, EventKind.FAULT)) == 3
    assert "needs service" in controller.status.detail
    rig.pull_module(0)
    await until(lambda: controller.state is SlotState.EMPTY, what="pulled")
    rig.insert_module(0, new=True)  # a sound module in its place
    await until(lambda: controller.state is SlotState.HASHING, timeout_s=30, what="new module")
