"""Autotuning a live module on the simulated rig: real chain on a pty, real PMBus rail.

The tuned clocks must keep every chip within the error budget (checked against the
simulator's physics), the profile is stored under the module's serial, and a module
that comes back is planned from the stored profile instead of being retuned.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from hashbay.agent.core.events import EventKind
from hashbay.agent.core.status import SlotState
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.config import Config
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.agent.interfaces.commands import Command
from hashbay.tools.sim import physics
from hashbay.tools.sim.rig import SimRig

from .support import rig_config
from .test_lifecycle import until


def tuning_config(tmp_path: Path) -> Config:
    """One 12-chip board (a short string of voltage domains, so the site's rail floor is
    lowered to match), simulated time 20x, a quick search."""
    config = rig_config(tmp_path, chips=12, modules=(0,), time_scale=20)
    return dataclasses.replace(
        config,
        limits=dataclasses.replace(config.limits, board_vout_min_v=3.0),
        autotune=dataclasses.replace(
            config.autotune,
            auto_tune=False,
            voltage_steps=2,
            max_error=0.02,
            slice_nonces=20,
            measure_s=5,
            ticket_difficulty=32,
        ),
    )


async def test_tune_command_tunes_stores_and_a_returning_module_reuses_it(tmp_path: Path) -> None:
    config = tuning_config(tmp_path)
    agent = Agent(config, notifier=SystemdNotifier({}))
    task = asyncio.create_task(agent.run())
    rig: SimRig = agent.rig.buses.sim
    controller = agent.controllers[0]
    try:
        await until(lambda: controller.state is SlotState.HASHING, what="hashing")
        reply = await agent.dispatch(Command("tune", {"slot": 0}))
        assert reply == {"slot": 0, "tuning": "started"}
        await until(lambda: "tuning" in controller.status.tuning, what="progress shown")
        tuned = await until(
            lambda: [e for e in agent.events.recent(50) if e.kind is EventKind.TUNED],
            timeout_s=240,
            what="tuned event",
        )
        assert tuned[0].details["points"] == 2
        await until(lambda: controller.point is not None and "tuned" in controller.point.why)
        await asyncio.sleep(1.0)  # the planned point is applied
        point = controller.point
        assert point is not None
        module = rig.slots[0].module
        assert module is not None
        # Every chip's clock keeps it within the error budget, by the simulator's physics.
        limits = agent.rig.envelope.board(0)
        for chip, freq in zip(module.chain.chips, point.freqs_mhz, strict=True):
            assert limits.freq_min_mhz <= freq <= limits.freq_max_mhz
            error = physics.error_probability(
                module.chip,
                chip.silicon,
                freq,
                module.chip_v,
                module.chip_temp_c(chip),
            )
            assert error <= config.autotune.max_error
        assert controller.state is SlotState.HASHING
        serial = module.serial
        assert (Path(config.agent.state_dir) / "tune" / f"{serial}.json").exists()

        # The module goes out and comes back: planned from the stored profile at once.
        rig.pull_module(0)
        await until(lambda: controller.state is SlotState.EMPTY, what="pulled")
        rig.insert_module(0)
        await until(lambda: controller.state is SlotState.HASHING, what="back")
        assert controller.point is not None and "tuned" in controller.point.why
        assert controller.status.tuning.startswith("tuned ")
    finally:
        agent.supervisor.request_stop("test over")
        assert await asyncio.wait_for(task, 15) == 0
