"""The power governor on the whole agent and simulated rig, commanded over a real MQTT broker:
curtailment that sleeps, survives a restart and resumes; minimum power; a power target."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hashbay.agent.core.status import SlotState
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.tools.broker import Broker, mosquitto_available
from hashbay.tools.sim.rig import SimRig

from .test_lifecycle import Watcher, agent_config, all_hashing, states, until

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed")


def psu_input_w(agent: Agent) -> float:
    snapshot = agent.state.snapshot
    return snapshot.psu.pin_w if snapshot and snapshot.psu else 0.0


async def stop(agent: Agent, task: asyncio.Task[int]) -> None:
    agent.supervisor.request_stop("test over")
    assert await asyncio.wait_for(task, 15) == 0


async def test_curtail_sleeps_survives_a_restart_and_resume_ramps_back(
    tmp_path: Path, broker: Broker
) -> None:
    config = agent_config(tmp_path, broker)
    async with Watcher(broker) as watcher:
        agent = Agent(config, notifier=SystemdNotifier({}))
        task = asyncio.create_task(agent.run())
        rig: SimRig = agent.rig.buses.sim
        try:
            await all_hashing(agent)
            reply = await watcher.request({"command": "curtail", "mode": "sleep"})
            assert reply["ok"] is True and reply["result"]["controls"]["curtail"] == "sleep"
            await until(
                lambda: all(s is SlotState.SLEEPING for s in states(agent)),
                what=f"all asleep (now {states(agent)})",
            )
            assert not any(slot.hotswap.on for slot in rig.slots)
            curtailed = await until(lambda: watcher.events("curtailed"), what="curtailed event")
            assert curtailed[0]["details"]["mode"] == "sleep"
            assert "curtailed by command" in curtailed[0]["message"]
        finally:
            await stop(agent, task)

        # A restart must not power the boards up, even for a moment.
        agent = Agent(config, notifier=SystemdNotifier({}))
        task = asyncio.create_task(agent.run())
        rig = agent.rig.buses.sim
        try:
            await until(
                lambda: all(s is SlotState.SLEEPING for s in states(agent)),
                what=f"asleep after restart (now {states(agent)})",
            )
            assert not any(slot.hotswap.on for slot in rig.slots)
            for controller in agent.controllers:
                assert SlotState.ENUMERATING not in [a for _, a, _ in controller.transitions]
            reply = await watcher.request({"command": "resume"})
            assert reply["result"]["controls"]["curtail"] is None
            await all_hashing(agent)
            assert await until(lambda: watcher.events("resumed"), what="resumed event")
        finally:
            await stop(agent, task)


async def test_minimum_power_keeps_boards_hashing_at_their_lowest_clock(
    tmp_path: Path, broker: Broker
) -> None:
    async with Watcher(broker) as watcher:
        agent = Agent(agent_config(tmp_path, broker), notifier=SystemdNotifier({}))
        task = asyncio.create_task(agent.run())
        try:
            await all_hashing(agent)
            await asyncio.sleep(1.0)  # let the PSU reading settle at full power
            full_w = psu_input_w(agent)
            await watcher.request({"command": "curtail", "mode": "min"})
            floor = agent.config.limits.chip_freq_min_mhz
            await until(
                lambda: all(
                    c.chain is not None and max(c.chain.freq_mhz) <= floor + 1
                    for c in agent.controllers
                ),
                what="every chip at the floor clock",
            )
            assert states(agent) == [SlotState.HASHING] * 3
            await until(lambda: psu_input_w(agent) < 0.5 * full_w, what="power well down")
        finally:
            await stop(agent, task)


async def test_power_target_is_held_at_the_psu_input(tmp_path: Path, broker: Broker) -> None:
    async with Watcher(broker) as watcher:
        agent = Agent(agent_config(tmp_path, broker), notifier=SystemdNotifier({}))
        task = asyncio.create_task(agent.run())
        try:
            await all_hashing(agent)
            await asyncio.sleep(3.0)  # let the fans and the PSU reading settle at full power
            full_w = psu_input_w(agent)
            target = round(full_w * 0.7)
            reply = await watcher.request({"command": "power_target", "watts": target})
            assert reply["result"]["controls"]["power_target_w"] == target

            def near_target() -> bool:
                return abs(psu_input_w(agent) - target) <= 0.04 * target

            await until(near_target, timeout_s=40, what=f"PSU input near {target} W")
            status = agent.controllers[0].status
            assert status.budget_w is not None
            assert status.freq_mhz is not None and status.freq_mhz < 0.9 * 490
            power = agent.state.miner_json()["power"]
            assert power["target_w"] == target and "power target" in power["reason"]
            await watcher.request({"command": "power_target_clear"})
            await until(lambda: psu_input_w(agent) > 0.95 * full_w, timeout_s=40, what="full again")
        finally:
            await stop(agent, task)
