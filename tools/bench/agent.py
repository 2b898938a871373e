"""The agent on the simulated rig (3 boards x 126 chips, polled at 1 Hz) with a real mosquitto,
mining on the test pool: presence change to MQTT event, steady-state MQTT traffic, CPU and
memory of the daemon.

The simulated rig runs inside the agent's process, so its CPU is accounted across the
line: its own threads (`sim-*`) are taken out, so is the time its I2C device models run
on the agent's hardware thread (the simulator counts it), and the agent's pin callbacks
(tach pulses) that run on the simulator's thread are put back in. The CPU figure is the
agent's own. RSS includes the simulator's memory (an upper bound for the agent alone).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

from hashbay.agent.daemon.config import default_config_path, load_config
from hashbay.tools.bench import Figure, percentile
from hashbay.tools.broker import HOST, Broker
from hashbay.tools.pool import TestPool
from hashbay.tools.sim.control import request

PREFIX = "bench"
MINER = "sim-rig-01"
STEADY_S = 60.0
SETTLED_S = 30.0  # steady this long counts as settled
WARMUP_MAX_S = 600.0
CYCLES = 25
TICKS = os.sysconf("SC_CLK_TCK")


DEMO_DIFFICULTY = 2.0**-18  # as `tools/run demo`: a few shares a second


def _config(path: Path, port: int, pool_url: str) -> Path:
    text = default_config_path().read_text()
    text += f'\n[mqtt]\nhost = "{HOST}"\nport = {port}\ntopic_prefix = "{PREFIX}"\n'
    text += f'\n[[pool]]\nurl = "{pool_url}"\nuser = "bench.{MINER}"\n'
    path.write_text(text)
    return path


def _cpu_s(pid: int, *, sim_only: bool) -> float:
    """CPU seconds of the process's threads: all of them, or only the simulator's."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if sim_only and not comm.startswith("sim-"):
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Traffic:
    def __init__(self) -> None:
        self.bytes = 0
        self.by_kind: dict[str, int] = {"miner_state": 0, "slot_state": 0, "events": 0, "other": 0}
        self.states: dict[int, str] = {}
        self.thermal: list[tuple[float, float, float]] = []  # (at, hottest °C, duty)
        self.events: list[tuple[float, dict[str, object]]] = []

    async def follow(self, port: int) -> None:
        async with aiomqtt.Client(HOST, port, protocol=aiomqtt.ProtocolVersion.V5) as client:
            await client.subscribe(f"{PREFIX}/#", qos=1)
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                topic = str(message.topic)
                self.bytes += len(topic) + len(payload)
                self.by_kind[_kind(topic)] += len(topic) + len(payload)
                if not payload:  # a cleared retained topic
                    continue
                if topic.endswith("/state") and "/slot/" in topic:
                    self.states[int(topic.split("/")[-2])] = json.loads(payload)["state"]
                elif topic == f"{PREFIX}/{MINER}/state":
                    thermal = json.loads(payload).get("thermal", {})
                    hottest, duty = thermal.get("hottest_c"), thermal.get("duty")
                    if isinstance(hottest, float | int) and isinstance(duty, float | int):
                        self.thermal.append((time.monotonic(), float(hottest), float(duty)))
                elif topic.endswith("/event"):
                    self.events.append((time.monotonic(), json.loads(payload)))

    def settled(self, target_c: float) -> bool:
        """The boards warmed up: for SETTLED_S, the hottest within 1.5 °C of the fan loop's
        target and the fans' duty still (warming, every temperature and power is news)."""
        now = time.monotonic()
        recent = [(h, d) for at, h, d in self.thermal if at >= now - SETTLED_S]
        if not self.thermal or self.thermal[0][0] > now - SETTLED_S or not recent:
            return False
        duties = [d for _, d in recent]
        near = all(abs(h - target_c) < 1.5 for h, _ in recent)
        return near and max(duties) - min(duties) < 0.03


def _kind(topic: str) -> str:
    if topic == f"{PREFIX}/{MINER}/state":
        return "miner_state"
    if "/slot/" in topic:
        return "slot_state"
    return "events" if topic.endswith("/event") else "other"


async def _until(condition: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("the simulated rig did not get there in time")
        await asyncio.sleep(0.02)


async def _measure(workdir: Path, broker: Broker) -> list[Figure]:
    async with TestPool(difficulty=DEMO_DIFFICULTY, job_interval_s=30.0) as pool:
        return await _measure_with(workdir, broker, pool)


async def _measure_with(workdir: Path, broker: Broker, pool: TestPool) -> list[Figure]:
    traffic = Traffic()
    follower = asyncio.create_task(traffic.follow(broker.port))
    runtime = workdir / "run"
    agent = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is timed
        [
            sys.executable,
            "-m",
            "hashbay.agent.daemon.main",
            "--config",
            str(_config(workdir / "a.toml", broker.port, pool.url)),
            "--state-dir",
            str(workdir / "state"),
            "--runtime-dir",
            str(runtime),
            "--log-format",
            "json",
        ],
        stderr=(workdir / "agent.log").open("w"),
    )
    try:
        await _until(lambda: list(traffic.states.values()).count("hashing") == 3, 120)
        # Steady state: the boards warmed up (while they warm, every board's temperature
        # and power are news).
        started = time.monotonic()
        target_c = load_config(default_config_path()).thermal.target_c
        await _until(lambda: traffic.settled(target_c), WARMUP_MAX_S)
        warmup_s = time.monotonic() - started
        crossing0 = await _sim_crossing(runtime / "sim.sock")
        cpu0, sim0, bytes0, t0 = (
            _cpu_s(agent.pid, sim_only=False),
            _cpu_s(agent.pid, sim_only=True),
            traffic.bytes,
            time.monotonic(),
        )
        kinds0, accepted0 = dict(traffic.by_kind), pool.accepted
        rss = 0.0
        while time.monotonic() - t0 < STEADY_S:
            await asyncio.sleep(1)
            rss = max(rss, _rss_mb(agent.pid))
        elapsed = time.monotonic() - t0
        cpu = _cpu_s(agent.pid, sim_only=False) - cpu0
        sim = _cpu_s(agent.pid, sim_only=True) - sim0
        crossing = {
            k: v - crossing0[k] for k, v in (await _sim_crossing(runtime / "sim.sock")).items()
        }
        models_s = crossing["device_models_on_host_threads_s"]
        callbacks_s = crossing["host_callbacks_on_sim_thread_s"]
        agent_s = cpu - sim - models_s + callbacks_s
        rate = (traffic.bytes - bytes0) / elapsed
        kinds = {k: (traffic.by_kind[k] - kinds0[k]) / elapsed for k in kinds0}
        shares = (pool.accepted - accepted0) / elapsed
        latencies = await _presence_latencies(runtime / "sim.sock", traffic)
    finally:
        agent.terminate()
        agent.wait(20)
        follower.cancel()
    return [
        Figure("presence_to_event_p50", percentile(latencies, 0.5) * 1000, "ms", "p99 < 100 ms"),
        Figure("presence_to_event_p99", percentile(latencies, 0.99) * 1000, "ms", "< 100 ms"),
        Figure("mqtt_steady_state", rate, "B/s", "<= 1000 B/s, mining on a pool"),
        *(Figure(f"mqtt_steady_state_{kind}", value, "B/s") for kind, value in kinds.items()),
        Figure("pool_shares_accepted", shares, "shares/s"),
        Figure("warmup_before_steady_state", warmup_s, "s"),
        Figure("agent_cpu_excluding_sim", agent_s / elapsed * 100, "% of a core", "< 2 %"),
        Figure("sim_cpu_in_process", (cpu - agent_s) / elapsed * 100, "% of a core"),
        Figure("sim_device_models_on_agent_threads", models_s / elapsed * 100, "% of a core"),
        Figure("agent_callbacks_on_sim_thread", callbacks_s / elapsed * 100, "% of a core"),
        Figure("agent_rss_with_sim", rss, "MB", "< 60 MB"),
    ]


async def _sim_crossing(socket: Path) -> dict[str, float]:
    """The simulator's count of CPU that crossed the line between it and the agent."""
    reply = await asyncio.to_thread(request, socket, "status")
    if not reply.startswith("ok "):
        raise RuntimeError(f"simulator status refused: {reply}")
    cpu: dict[str, float] = json.loads(reply[3:])["cpu"]
    return cpu


async def _presence_latencies(socket: Path, traffic: Traffic) -> list[float]:
    """Pull and re-seat slot 2 again and again: time from the fault to the event."""
    latencies = []
    for cycle in range(CYCLES):
        for verb, kind in (("pull", "removed"), ("insert", "inserted")):
            seen = len(traffic.events)
            started = time.monotonic()
            reply = await asyncio.to_thread(request, socket, f"inject {verb} 2")
            if not reply.startswith("ok"):
                raise RuntimeError(f"simulator refused {verb}: {reply}")

            def arrived(kind: str = kind, seen: int = seen) -> bool:
                return any(e["kind"] == kind for _, e in traffic.events[seen:])

            await _until(arrived, 10)
            at = next(t for t, e in traffic.events[seen:] if e["kind"] == kind)
            latencies.append(at - started)
        if cycle % 5 == 4:
            await _until(lambda: traffic.states.get(2) == "hashing", 60)
    return latencies


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        broker = Broker(workdir / "broker")
        broker.start()
        try:
            return asyncio.run(_measure(workdir, broker))
        finally:
            broker.stop()
