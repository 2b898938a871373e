"""Control socket and miner API under load: 50 concurrent clients on each (one after the
other), requests per second and latency, and how late the hardware poll runs meanwhile.

The agent runs in this process on the simulated rig (3 boards x 126 chips, polled at
1 Hz) so every completed poll can be timed; the clients run in a child process, each a
closed loop (the next request as soon as the reply is in): control clients keep one
connection and ask for `status` (the largest read), API clients open a connection per
`summary` request as cgminer tools do. Poll lateness is how much later than its period
each poll completed, over the whole loaded window.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hashbay.agent.core.status import SlotState
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.config import Config, default_config_path, load_config
from hashbay.agent.daemon.logsetup import configure_logging
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.agent.interfaces.control_protocol import FrameDecoder, encode_frame, request_message
from hashbay.tools.bench import Figure, percentile

CLIENTS = 50
PHASE_S = 10.0
IDLE_S = 5.0


def _config(workdir: Path) -> Config:
    config = load_config(default_config_path()).with_dirs(
        str(workdir / "state"), str(workdir / "run")
    )
    for directory in (config.agent.state_dir, config.agent.runtime_dir):
        Path(directory).mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(
        config,
        mqtt=dataclasses.replace(config.mqtt, enabled=False),
        api=dataclasses.replace(config.api, port=0, max_clients=4 * CLIENTS),
        control=dataclasses.replace(config.control, max_clients=2 * CLIENTS),
        sim=dataclasses.replace(config.sim, control_socket=False),
    )


async def _measure(workdir: Path) -> list[Figure]:
    config = _config(workdir)
    agent = Agent(config, notifier=SystemdNotifier({}))
    polls: list[float] = []
    poll_done = agent.liveness.poll_done

    def timed_poll_done() -> None:
        polls.append(time.monotonic())
        poll_done()

    agent.liveness.poll_done = timed_poll_done  # type: ignore[method-assign]
    task = asyncio.create_task(agent.run())
    try:
        deadline = time.monotonic() + 180
        while not all(c.state is SlotState.HASHING for c in agent.controllers):
            if time.monotonic() > deadline or task.done():
                raise RuntimeError("the simulated rig did not come up to hashing")
            await asyncio.sleep(0.2)
        await asyncio.wait_for(agent.api.ready.wait(), 10)
        await asyncio.sleep(IDLE_S)
        idle = _lateness(polls, time.monotonic() - IDLE_S, config.agent.poll_interval_s)
        loaded_from = time.monotonic()
        load = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hashbay.tools.bench.api",
            "--load",
            str(agent.control.path),
            str(agent.api.port),
            stdout=subprocess.PIPE,
        )
        out, _ = await load.communicate()
        loaded = _lateness(polls, loaded_from, config.agent.poll_interval_s)
        results = json.loads(out)
    finally:
        agent.supervisor.request_stop("benchmark over")
        await asyncio.wait_for(task, 30)
    figures = []
    for kind in ("control", "api"):
        latencies = results[kind]["latencies"]
        figures += [
            Figure(f"{kind}_requests_per_s", results[kind]["count"] / PHASE_S, "req/s", "> 500"),
            Figure(f"{kind}_latency_p50", percentile(latencies, 0.5) * 1000, "ms"),
            Figure(f"{kind}_latency_p99", percentile(latencies, 0.99) * 1000, "ms", "< 250 ms"),
            Figure(f"{kind}_errors", results[kind]["errors"], "requests", "0"),
        ]
    figures += [
        Figure("poll_lateness_idle_max", max(idle, default=0.0) * 1000, "ms"),
        Figure("poll_lateness_loaded_p99", percentile(loaded, 0.99) * 1000, "ms", "< 100 ms"),
        Figure("poll_lateness_loaded_max", max(loaded, default=0.0) * 1000, "ms", "< 250 ms"),
        Figure("polls_loaded", len(loaded), "polls"),
    ]
    return figures


def _lateness(polls: list[float], since: float, period_s: float) -> list[float]:
    """How much later than one period after its predecessor each poll completed."""
    times = [t for t in polls if t >= since - period_s]
    return [max(0.0, b - a - period_s) for a, b in itertools.pairwise(times)]


# -- the load generator (child process) ---------------------------------------------------


async def _control_client(path: str, until: float, latencies: list[float]) -> int:
    reader, writer = await asyncio.open_unix_connection(path)
    decoder = FrameDecoder()
    errors = 0
    rid = 0
    while time.monotonic() < until:
        rid += 1
        started = time.monotonic()
        writer.write(encode_frame(request_message(rid, "status")))
        replies: list[dict[str, Any]] = []
        while not replies:
            data = await reader.read(65536)
            if not data:
                return errors + 1
            replies += decoder.feed(data)
        latencies.append(time.monotonic() - started)
        errors += not replies[0].get("ok")
    writer.close()
    return errors


async def _api_client(port: int, until: float, latencies: list[float]) -> int:
    errors = 0
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b'{"command":"summary"}')
            data = await reader.read()
            writer.close()
        except OSError:
            errors += 1
            continue
        latencies.append(time.monotonic() - started)
        errors += not (data.endswith(b"\0") and b'"STATUS":"S"' in data)
    return errors


async def _load(path: str, port: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for kind in ("control", "api"):
        latencies: list[float] = []
        until = time.monotonic() + PHASE_S
        if kind == "control":
            clients = [_control_client(path, until, latencies) for _ in range(CLIENTS)]
        else:
            clients = [_api_client(port, until, latencies) for _ in range(CLIENTS)]
        errors = sum(await asyncio.gather(*clients))
        results[kind] = {"count": len(latencies), "errors": errors, "latencies": latencies}
    return results


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="hb-bench-") as tmp:
        workdir = Path(tmp)
        with (workdir / "agent.log").open("w") as log:
            configure_logging("warning", stream=log, fmt="json")
            return asyncio.run(_measure(workdir))


if __name__ == "__main__" and sys.argv[1:2] == ["--load"]:
    print(json.dumps(asyncio.run(_load(sys.argv[2], int(sys.argv[3])))))
