"""An hour of simulated time with one I2C transaction in five failing on every device:
fewer than 60 events, nothing cut, every board hashing throughout."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from hashbay.agent.core.alarm_settings import AlarmSettings
from hashbay.agent.core.events import EventKind
from hashbay.agent.core.status import SlotState
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.sdnotify import SystemdNotifier

from .rig import HASHING, chaos_config, normal, sim, step, until

pytestmark = pytest.mark.chaos
HOUR_S = 3600.0
SCALE = 120.0  # an hour in half a minute


async def test_an_hour_at_20_percent_i2c_errors_is_quiet_and_cuts_nothing(tmp_path: Path) -> None:
    config = chaos_config(tmp_path)
    config = dataclasses.replace(
        config,
        sim=dataclasses.replace(config.sim, time_scale=SCALE),
        # Nonces come SCALE times as fast in real time, but the UART does not: chips that
        # report one nonce in 128 as many keep the chain's traffic as at real speed.
        chain=dataclasses.replace(config.chain, ticket_difficulty=256 * 128),
        alarms=AlarmSettings(),  # the default 10 min window: 10 s of real transactions
    )
    agent = Agent(config, notifier=SystemdNotifier({}))
    task = asyncio.create_task(agent.run())
    rig = sim(agent)
    try:
        await until(lambda: normal(agent), 60, "every slot hashing, healthy")
        before = len(agent.events.recent(1000))
        transitions = [len(c.transitions) for c in agent.controllers]
        started = rig.now()
        await step(agent, "i2c-errors 0.2")
        while rig.now() - started < HOUR_S:
            await asyncio.sleep(1.0)
            assert all(c.state in HASHING for c in agent.controllers), "a board stopped"
        await step(agent, "i2c-ok")
        events = agent.events.recent(1000)[before:]
        kinds = Counter(e.kind for e in events)
        print(f"events in an hour at 20 % I2C errors: {len(events)} {dict(kinds)}")
        assert len(events) < 60, kinds
        assert kinds[EventKind.BUS_NOISE] > 0  # the noise is seen, and said once per device
        noisy = [d for c in agent.controllers for d in c.status.bus if d.noisy]
        assert noisy and all(0.1 < d.error_share < 0.5 for d in noisy)
        assert not {EventKind.FAULT, EventKind.OVERHEAT, EventKind.SENSOR_UNREADABLE} & set(kinds)
        for controller, count in zip(agent.controllers, transitions, strict=True):
            states = [after for _, after, _ in controller.transitions[count:]]
            assert set(states) <= {SlotState.HASHING, SlotState.DEGRADED}, states
    finally:
        agent.supervisor.request_stop("test over")
        assert await asyncio.wait_for(task, 15) == 0
