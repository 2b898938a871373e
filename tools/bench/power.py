"""Protection and demand response on the whole agent and simulated rig: a board crossing its
cut-off temperature to its power being off; curtail command to boards asleep; resume
command to every board back at its full clock; power target to PSU input held.

Times are taken by the simulator from outside the agent: the moment a board's sensor
register first shows the cut-off, and the moment the slot's enable line is low. With the
sensors' alert lines wired (the hardware comparator), that is seen right after the
agent's pin callback returns on the simulator's interrupt thread; with the software
sweep alone, when the simulator next samples its pins (every 10 ms, so those figures
include up to 10 ms of that). The cut is timed idle and beside two CPU hogs at the
agent's priority (separate processes, as a busy controller's other services would be).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

from hashbay.agent.core.status import SlotState
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.config import Config
from hashbay.agent.daemon.logsetup import configure_logging
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.agent.interfaces.commands import Command
from hashbay.agent.modules.slots import SlotController
from hashbay.agent.power.governor import Mode
from hashbay.tools.bench import Figure, percentile
from hashbay.tools.sim.configs import in_process_config
from hashbay.tools.sim.rig import SimRig

CUT_SAMPLES = 30
HOGS = 2
CURTAIL_CYCLES = 5
T = TypeVar("T")


def _config(scratch: Path, *, chips: int, time_scale: float, alert: bool | None = None) -> Config:
    """The packaged rig at its own timings; protection may restart a board often.
    `alert=False`: no slot's alert line wired (the packaged rig wires them all)."""
    domain = 3 if chips % 3 == 0 and chips > 60 else 1  # keeps the rail near 13 V
    config = in_process_config(scratch, chips=chips, chips_per_domain=domain, time_scale=time_scale)
    if alert is False:
        slots = tuple(dataclasses.replace(slot, alert_pin=None) for slot in config.slot)
        config = dataclasses.replace(config, slot=slots)
    return dataclasses.replace(
        config,
        protection=dataclasses.replace(
            config.protection, max_restarts=100, restart_min_off_s=1.0, restart_window_s=60.0
        ),
    )


async def _until(condition: Callable[[], bool], timeout_s: float) -> float:
    """Seconds until condition holds, polled every millisecond; raises on timeout."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError("benchmark condition never held")
        await asyncio.sleep(0.001)
    return time.monotonic() - start


def _psu_w(rig: SimRig) -> float:
    return float(rig.psu.pout_w)


async def _cut_latencies(agent: Agent, rig: SimRig) -> list[float]:
    cutoff = agent.config.protection.cutoff_c
    latencies: list[float] = []
    while len(latencies) < CUT_SAMPLES:
        await _until(lambda: all(c.state is SlotState.HASHING for c in agent.controllers), 300)
        slot = len(latencies) % len(agent.controllers)
        watch = rig.watch_cutoff(slot, cutoff)
        rig.overheat(slot, 2.0)
        await _until(lambda w=watch: w.cut_at is not None, 120)  # type: ignore[misc]
        rig.overheat(slot, 0.0)
        assert watch.crossed_at is not None and watch.cut_at is not None
        latencies.append(watch.cut_at - watch.crossed_at)
    return latencies


async def _curtail_cycles(
    agent: Agent, rig: SimRig
) -> tuple[list[float], list[float], list[float]]:
    sleeps: list[float] = []
    resumes: list[float] = []
    powers: list[float] = []
    for _ in range(CURTAIL_CYCLES):
        await _until(lambda: all(c.state is SlotState.HASHING for c in agent.controllers), 120)
        await asyncio.sleep(5.0)  # warm and settled: full power
        full_w = _psu_w(rig)
        start = time.monotonic()
        await agent.dispatch(Command("curtail", {"mode": "sleep"}))
        await _until(lambda: not any(s.hotswap.enable_pin for s in rig.slots), 30)
        sleeps.append(time.monotonic() - start)
        await asyncio.sleep(2.0)
        start = time.monotonic()
        await agent.dispatch(Command("resume", {}))
        await _until(lambda: all(_at_full_clock(c) for c in agent.controllers), 60)
        resumes.append(time.monotonic() - start)
        await _until(lambda f=full_w: _psu_w(rig) >= 0.95 * f, 60)  # type: ignore[misc]
        powers.append(time.monotonic() - start)
    return sleeps, resumes, powers


def _at_full_clock(controller: SlotController) -> bool:
    """Hashing at the point the governor plans when nothing limits it (the board draws
    full power from then on, a little more as it warms)."""
    point, planner = controller.point, controller.planner
    if controller.state is not SlotState.HASHING or point is None or planner is None:
        return False
    return point.close_to(planner.point_for(Mode.RUN, None))


async def _target_settle(agent: Agent, rig: SimRig) -> tuple[float, float]:
    await _until(lambda: all(c.state is SlotState.HASHING for c in agent.controllers), 120)
    await asyncio.sleep(10.0)  # warm and settled: full power
    target = round(_psu_w(rig) * 0.7)
    start = time.monotonic()
    await agent.dispatch(Command("power_target", {"watts": target}))
    await _until(
        lambda: abs(agent.state.miner_json()["psu_input_power_w"] - target) < 0.03 * target, 120
    )
    settle = time.monotonic() - start
    errors = []
    for _ in range(30):  # then held for 30 s: the mean error of the PSU readings
        await asyncio.sleep(1.0)
        errors.append(abs(agent.state.miner_json()["psu_input_power_w"] - target) / target)
    await agent.dispatch(Command("power_target_clear", {}))
    return settle, sum(errors) / len(errors)


async def _run_agent(config: Config, work: Callable[[Agent, SimRig], Awaitable[T]]) -> T:
    agent = Agent(config, notifier=SystemdNotifier({}))
    task = asyncio.create_task(agent.run())
    rig = agent.rig.buses.sim
    assert rig is not None
    try:
        return await work(agent, rig)
    finally:
        agent.supervisor.request_stop("benchmark over")
        await asyncio.wait_for(task, 30)


@contextlib.contextmanager
def _cpu_hogs(count: int) -> Iterator[None]:
    """Busy loops in processes of their own, at our priority, for as long as inside."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def run() -> list[Figure]:
    figures = []
    with tempfile.TemporaryDirectory() as tmp, (Path(tmp) / "agent.log").open("w") as log:
        configure_logging("warning", stream=log, fmt="json")
        # Boards heat and cool 10x faster than real, so 30 trips take a minute or two.
        cut_config = _config(Path(tmp) / "cut", chips=42, time_scale=10, alert=True)
        latencies = asyncio.run(_run_agent(cut_config, _cut_latencies))
        with _cpu_hogs(HOGS):
            loaded_config = _config(Path(tmp) / "loaded", chips=42, time_scale=10, alert=True)
            loaded = asyncio.run(_run_agent(loaded_config, _cut_latencies))
        sweep_config = _config(Path(tmp) / "sweep", chips=42, time_scale=10, alert=False)
        swept = asyncio.run(_run_agent(sweep_config, _cut_latencies))
        figures += [
            Figure("cutoff_to_power_off_p50", percentile(latencies, 0.5) * 1000, "ms"),
            Figure("cutoff_to_power_off_p99", percentile(latencies, 0.99) * 1000, "ms", "< 50 ms"),
            Figure("cutoff_to_power_off_max", max(latencies) * 1000, "ms"),
            Figure("cutoff_under_load_p50", percentile(loaded, 0.5) * 1000, "ms"),
            Figure("cutoff_under_load_p99", percentile(loaded, 0.99) * 1000, "ms", "< 50 ms"),
            Figure("cutoff_sweep_only_p50", percentile(swept, 0.5) * 1000, "ms"),
            Figure("cutoff_sweep_only_p99", percentile(swept, 0.99) * 1000, "ms"),
        ]
        # The full rig in real time for demand response and the power target.
        full = _config(Path(tmp) / "full", chips=126, time_scale=1)
        cycles = asyncio.run(_run_agent(full, _curtail_cycles))
        sleeps, resumes, powers = cycles
        figures += [
            Figure("curtail_to_asleep_max", max(sleeps), "s", "<= 2 s"),
            Figure("resume_to_full_clock_max", max(resumes), "s", "<= 5 s"),
            Figure("resume_to_full_clock_median", percentile(resumes, 0.5), "s"),
            Figure("resume_to_95pct_psu_power_max", max(powers), "s"),
        ]
        target = asyncio.run(
            _run_agent(_config(Path(tmp) / "target", chips=126, time_scale=1), _target_settle)
        )
        figures += [
            Figure("power_target_settle_to_3pct", target[0], "s"),
            Figure("power_target_mean_error_30s", target[1] * 100, "%", "< 3 %"),
        ]
    return figures
