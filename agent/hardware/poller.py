"""The hardware poll: reads every sensor at the configured period and records progress."""

from __future__ import annotations

import asyncio

import structlog

from hashbay.agent.core.state import AgentState
from hashbay.agent.daemon.liveness import Liveness
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.agent.hardware.rig import Rig

log = structlog.get_logger("hashbay.poller")


async def poll_hardware(
    rig: Rig,
    state: AgentState,
    liveness: Liveness,
    notifier: SystemdNotifier,
    interval_s: float,
) -> None:
    """Poll on a fixed cadence (not fixed sleep), so a slow poll does not drift the period."""
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    last_status = ""
    while True:
        snapshot = await rig.call(rig.poll)
        state.update(snapshot)
        liveness.poll_done()
        status = state.summary()
        if status != last_status:
            notifier.status(status)
            last_status = status
        next_at += interval_s
        now = loop.time()
        if next_at < now:
            log.warning("hardware poll overran its period", behind_s=round(now - next_at, 3))
            next_at = now
        await asyncio.sleep(next_at - now)


async def announce_ready(state: AgentState, notifier: SystemdNotifier) -> None:
    """READY=1 once the first complete poll shows the rig is up and readable."""
    await state.first_poll.wait()
    notifier.ready(state.summary())
    log.info("agent ready", status=state.summary())
