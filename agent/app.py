"""Wires the agent together: buses, rig, services, supervisor, signals, watchdog."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from typing import TextIO

import structlog

from hashbay.agent.buses import Buses, open_buses
from hashbay.agent.config import Config
from hashbay.agent.console import run_console
from hashbay.agent.liveness import Liveness, StallGuard, heartbeat, watchdog_pings
from hashbay.agent.logsetup import RecentEvents
from hashbay.agent.poller import announce_ready, poll_hardware
from hashbay.agent.rig import Rig
from hashbay.agent.sdnotify import SystemdNotifier
from hashbay.agent.state import AgentState
from hashbay.agent.supervisor import EXIT_SOFTWARE, Policy, Service, Supervisor

log = structlog.get_logger("hashbay.app")

RigFactory = Callable[[Config, Buses], Rig]


async def run_agent(
    config: Config,
    *,
    notifier: SystemdNotifier,
    live: TextIO | None = None,
    recent: RecentEvents | None = None,
    rig_factory: RigFactory = Rig,
) -> int:
    """Run until SIGTERM/SIGINT or a critical failure; returns the exit code."""
    rig = rig_factory(config, open_buses(config))
    state = AgentState(config.agent.name)
    liveness = Liveness(config.agent.stall_timeout_s)
    services = [
        Service(
            "hardware-poll",
            lambda: poll_hardware(rig, state, liveness, notifier, config.agent.poll_interval_s),
            Policy.CRITICAL,
            "without it no temperature or fan is watched",
        ),
        Service("heartbeat", lambda: heartbeat(liveness), Policy.CRITICAL, "proves the loop runs"),
        Service(
            "watchdog",
            lambda: watchdog_pings(liveness, notifier),
            Policy.RESTART,
            "a missed ping only risks a restart by systemd",
        ),
        Service(
            "ready", lambda: announce_ready(state, notifier), Policy.RESTART, "one-shot notice"
        ),
    ]
    if live is not None:
        console_events = recent or RecentEvents()
        services.append(
            Service(
                "console",
                lambda: run_console(state, console_events, live),
                Policy.RESTART,
                "display only",
            )
        )
    supervisor = Supervisor(
        services, rig.safe_state, notifier, shutdown_timeout_s=config.agent.shutdown_timeout_s
    )

    def on_stall(reason: str) -> None:
        rig.safe_state()
        supervisor.request_stop_threadsafe(f"stall: {reason}", EXIT_SOFTWARE)

    guard = StallGuard(liveness, on_stall)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, supervisor.request_stop, signal.Signals(signum).name)
    guard.start()
    try:
        return await supervisor.run()
    finally:
        guard.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        rig.safe_state()
        rig.close()
        notifier.close()
        if live is not None and live is sys.stdout:
            live.flush()
