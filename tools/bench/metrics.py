"""Prometheus scrape time: one `/metrics` request over TCP against the agent on the
simulated rig (3 boards x 126 chips), with and without the per-chip series.

The agent runs in this process, as a scrape does in production (the event loop builds the
exposition from state); the figure is the wall time from connect to the last byte, p50 and
p99 over 200 scrapes. Goal: under 50 ms.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from pathlib import Path

from hashbay.agent.core.status import SlotState
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.config import Config, default_config_path, load_config
from hashbay.agent.daemon.logsetup import configure_logging
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.tools.bench import Figure, percentile

SCRAPES = 200


def _config(workdir: Path, *, per_chip: bool) -> Config:
    config = load_config(default_config_path()).with_dirs(
        str(workdir / "state"), str(workdir / "run")
    )
    for directory in (config.agent.state_dir, config.agent.runtime_dir):
        Path(directory).mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(
        config,
        mqtt=dataclasses.replace(config.mqtt, enabled=False),
        api=dataclasses.replace(config.api, port=0),
        metrics=dataclasses.replace(config.metrics, enabled=True, port=0, per_chip=per_chip),
        sim=dataclasses.replace(config.sim, control_socket=False),
    )


async def _scrape(port: int) -> tuple[float, int]:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
    await writer.drain()
    body = await reader.read()
    writer.close()
    return time.perf_counter() - started, len(body)


async def _measure(workdir: Path, *, per_chip: bool) -> list[Figure]:
    agent = Agent(_config(workdir, per_chip=per_chip), notifier=SystemdNotifier({}))
    task = asyncio.create_task(agent.run())
    try:
        deadline = time.monotonic() + 180
        while not all(c.state is SlotState.HASHING for c in agent.controllers):
            if time.monotonic() > deadline or task.done():
                raise RuntimeError("the simulated rig did not come up to hashing")
            await asyncio.sleep(0.2)
        await asyncio.wait_for(agent.metrics.ready.wait(), 10)
        assert agent.metrics.port is not None
        times, size = [], 0
        for _ in range(SCRAPES):
            elapsed, size = await _scrape(agent.metrics.port)
            times.append(elapsed)
            await asyncio.sleep(0.01)
    finally:
        agent.supervisor.request_stop("benchmark over")
        await asyncio.wait_for(task, 30)
    kind = "per_chip" if per_chip else "default"
    return [
        Figure(f"scrape_{kind}_p50", percentile(times, 0.5) * 1000, "ms", "< 50 ms"),
        Figure(f"scrape_{kind}_p99", percentile(times, 0.99) * 1000, "ms", "< 50 ms"),
        Figure(f"scrape_{kind}_bytes", size, "bytes"),
    ]


def run() -> list[Figure]:
    figures = []
    for per_chip in (False, True):
        with tempfile.TemporaryDirectory(prefix="hb-bench-metrics-") as tmp:
            workdir = Path(tmp)
            with (workdir / "agent.log").open("w") as log:
                configure_logging("warning", stream=log, fmt="json")
                figures += asyncio.run(_measure(workdir, per_chip=per_chip))
    return figures
