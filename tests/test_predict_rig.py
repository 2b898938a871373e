"""The whole agent on the simulated rig: a module's predictor state goes with its serial,
to another slot and across an agent restart, and is kept in STATE_DIR/predict."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hashbay.agent.core.status import SlotState
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.config import Config
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.agent.modules.predict_store import PredictStore
from hashbay.tools.sim.rig import SimRig

from .support import rig_config


def config_for(tmp_path: Path) -> Config:
    """Two modules in three slots; short buckets and saves, so a few seconds count."""
    config = rig_config(tmp_path, modules=(0, 1))
    predict = dataclasses.replace(
        config.predict, bucket_s=10.0, fit_windows_s=(60.0, 300.0), save_interval_s=10.0
    )
    return dataclasses.replace(config, predict=predict)


async def until(condition: Callable[[], Any], what: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def hashed_s(agent: Agent, serial: str) -> float:
    predictor = agent.predictions.peek(serial)
    return predictor.hashing_s if predictor is not None else 0.0


def stored_hashing_s(config: Config, serial: str) -> float:
    path = PredictStore(Path(config.agent.state_dir)).path_for(serial)
    return float(json.loads(path.read_text())["hashing_s"]) if path.exists() else -1.0


async def test_a_modules_predictor_follows_it_to_another_slot_and_across_a_restart(
    tmp_path: Path,
) -> None:
    config = config_for(tmp_path)
    agent = Agent(config, notifier=SystemdNotifier({}))
    task = asyncio.create_task(agent.run())
    rig: SimRig = agent.rig.buses.sim
    slot = agent.controllers
    try:
        await until(lambda: slot[1].state is SlotState.HASHING, "slot 1 hashing")
        serial = slot[1].status.serial
        assert serial is not None
        await until(lambda: hashed_s(agent, serial) >= 3.0, "three seconds of evidence")
        moved_from = agent.predictions.peek(serial)

        rig.pull_module(1)
        await until(lambda: slot[1].state is SlotState.EMPTY, "slot 1 empty")
        kept_s = stored_hashing_s(config, serial)
        assert kept_s >= 3.0  # written when it lost power

        rig.insert_module(2, from_slot=1)
        await until(lambda: slot[2].state is SlotState.HASHING, "the module hashing in slot 2")
        assert slot[2].status.serial == serial
        assert agent.predictions.peek(serial) is moved_from  # the same evidence, not afresh
        await until(lambda: hashed_s(agent, serial) > kept_s + 1.0, "more evidence in slot 2")
    finally:
        agent.supervisor.request_stop("test over")
        assert await asyncio.wait_for(task, 15) == 0
    stopped_s = stored_hashing_s(config, serial)
    assert stopped_s > kept_s + 1.0  # written as the agent stopped

    again = Agent(config, notifier=SystemdNotifier({}))  # a fresh rig: back in slot 1
    task = asyncio.create_task(again.run())
    try:
        await until(lambda: again.controllers[1].state is SlotState.HASHING, "hashing again")
        assert again.controllers[1].status.serial == serial
        assert hashed_s(again, serial) >= stopped_s  # taken up where it was left
    finally:
        again.supervisor.request_stop("test over")
        assert await asyncio.wait_for(task, 15) == 0
