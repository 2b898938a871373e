"""Quiet mode on the whole agent and simulated rig: the fans keep under the noise cap and,
when that is too little air for the heat, the governor lowers the boards' power instead of
letting them pass the warning temperature."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from hashbay.agent.core.events import EventKind
from hashbay.agent.core.status import SlotState
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.agent.interfaces.commands import Command
from hashbay.agent.thermal.noise import NoiseModel

from .test_lifecycle import until
from .test_protection_rig import protected_config

CAP_DBA = 44.0


def hottest_c(agent: Agent) -> float:
    return max((t for c in agent.controllers for t in c.status.temps_c if t is not None), default=0)


async def test_quiet_cap_holds_the_noise_and_power_gives_way_to_heat(tmp_path: Path) -> None:
    config = protected_config(tmp_path)
    config = dataclasses.replace(
        config,
        sim=dataclasses.replace(config.sim, time_scale=20),
        quiet=dataclasses.replace(config.quiet, max_dba=CAP_DBA),
        thermal=dataclasses.replace(config.thermal, power_after_s=10.0),
    )
    agent = Agent(config, notifier=SystemdNotifier({}))
    task = asyncio.create_task(agent.run())
    try:
        await until(lambda: all(c.state is SlotState.HASHING for c in agent.controllers))
        agent.rig.buses.sim.set_ambient(45.0)  # a hot afternoon: a quiet cap is now too little air
        reply = await agent.dispatch(Command("quiet", {"mode": "on"}))
        assert reply["controls"]["quiet"] == "on"
        await until(lambda: agent.thermal.power_scale() < 0.97, timeout_s=90, what="power gives")
        await until(
            lambda: all(c.status.budget_w is not None for c in agent.controllers),
            what="boards budgeted",
        )
        capped_duty = NoiseModel.of(config.fan).duty_for_cap(CAP_DBA)
        peak = 0.0
        for _ in range(100):  # 10 s real, 200 s simulated: hold the line
            peak = max(peak, hottest_c(agent))
            duty = agent.thermal.status.duty
            assert duty is not None and duty <= capped_duty + 1e-6  # the cap holds
            await asyncio.sleep(0.1)
        # Power gave way: no board reached the throttle tier, nothing was throttled.
        assert peak < config.protection.throttle_c
        assert not [e for e in agent.events.recent(200) if e.kind is EventKind.THROTTLED]
        power = agent.state.miner_json()["power"]
        assert "quiet mode" in power["reason"]
        assert agent.controllers[0].status.freq_mhz is not None
        assert agent.controllers[0].status.freq_mhz < 490
    finally:
        agent.supervisor.request_stop("test over")
        assert await asyncio.wait_for(task, 15) == 0
