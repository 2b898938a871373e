"""The fleet view at farm scale: N miners' traffic through a real mosquitto into `hashbay
fleet`'s client and model, for N = 100, 1,000 and 5,000.

The load (`fleet_traffic.py`) replays the agent's own payloads at its measured steady
rate (~199 B/s per miner on a pool) with module faults, warnings and swaps far more often
than a real farm has them (one change per miner every two minutes), from one process
over one connection per 20 miners. The fleet view (`fleet_consumer.py`) runs in its own
process, redrawing every 2 s as the live view does. Figures per N: messages per second
into and out of the broker, the fleet view's CPU and peak RSS, event-to-swap-queue lag
(p50, p99: from the event's `at` to the model queueing the module), the broker's CPU,
and the miners one mosquitto core would carry at that load (its CPU scaled linearly).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

from hashbay.tools.bench import Figure, percentile
from hashbay.tools.bench.fleet_traffic import FarmTraffic, Message
from hashbay.tools.broker import HOST, Broker

FARMS = ((100, 30.0), (1000, 45.0), (5000, 30.0))  # (miners, measured seconds)
WARMUP_S = 5.0
# A farm's mosquitto: a fleet view takes ~5 retained messages per miner on subscribing,
# beyond mosquitto's default queue of 1,000 per client (the rest would be dropped); and
# no Nagle delay on what it delivers (README: Fleet view).
FARM_BROKER = ("max_queued_messages 100000", "set_tcp_nodelay true")
MINERS_PER_CONNECTION = 20
PREFIX = "farm"
TICK_S = 0.05
TICKS = os.sysconf("SC_CLK_TCK")


def run() -> list[Figure]:
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="hb-bench-fleet-") as tmp:
        for miners, seconds in FARMS:
            broker = Broker(Path(tmp) / f"broker-{miners}", options=FARM_BROKER)
            broker.start()
            try:
                figures += asyncio.run(_farm(Path(tmp), broker, miners, seconds))
            finally:
                broker.stop()
    return figures


async def _farm(tmp: Path, broker: Broker, miners: int, seconds: float) -> list[Figure]:
    traffic = FarmTraffic(miners, prefix=PREFIX, wall=time.time)
    quiet = logging.getLogger("hashbay.bench.fleet.load")
    quiet.setLevel(logging.ERROR)  # aiomqtt warns of many publishes in flight: we mean it
    connections = [
        aiomqtt.Client(
            HOST,
            broker.port,
            protocol=aiomqtt.ProtocolVersion.V5,
            identifier=f"load-{n}",
            logger=quiet,
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),  # as the agent
        )
        for n in range(math.ceil(miners / MINERS_PER_CONNECTION))
    ]
    async with contextlib.AsyncExitStack() as stack:
        for connection in connections:
            await stack.enter_async_context(connection)
        retained = traffic.retained()
        await _send(connections, retained)
        farm = FarmRun(traffic, connections, broker, tmp / f"fleet-{miners}.json", len(retained))
        consumer = subprocess.Popen(  # noqa: ASYNC220 - started once, before the timing
            [
                sys.executable,
                "-m",
                "hashbay.tools.bench.fleet_consumer",
                "--port",
                str(broker.port),
                "--prefix",
                PREFIX,
                "--report",
                str(farm.report),
            ]
        )
        try:
            return await farm.measure(consumer, seconds)
        finally:
            if consumer.poll() is None:
                consumer.kill()
                consumer.wait()
    raise AssertionError("unreachable")  # pragma: no cover - the stack returns or raises


@dataclass
class FarmRun:
    traffic: FarmTraffic
    connections: list[aiomqtt.Client]
    broker: Broker
    report: Path
    retained: int

    async def measure(self, consumer: subprocess.Popen[bytes], seconds: float) -> list[Figure]:
        await asyncio.sleep(3.0)  # the fleet view connects and takes the retained farm
        start = time.monotonic()
        sent = 0
        marks: dict[str, tuple[float, float, float, int]] = {}
        measured_from = math.inf  # wall time: events before it met the warm-up
        while (elapsed := time.monotonic() - start) < WARMUP_S + seconds:
            if "t0" not in marks and elapsed >= WARMUP_S:
                marks["t0"] = self._mark(consumer.pid, sent)
                measured_from = time.time()
            batch = self.traffic.due(elapsed)
            await _send(self.connections, batch)
            sent += len(batch)
            await asyncio.sleep(TICK_S)
        marks["t1"] = self._mark(consumer.pid, sent)
        rss_mb = _peak_rss_mb(consumer.pid)
        live = time.monotonic() - start
        consumer.send_signal(signal.SIGTERM)
        await asyncio.to_thread(consumer.wait, 30)
        result = json.loads(await asyncio.to_thread(self.report.read_text))
        (t0, view0, broker0, sent0), (t1, view1, broker1, sent1) = marks["t0"], marks["t1"]
        window = t1 - t0
        miners = len(self.traffic.miners)
        timed = [lag for at, lag in result["lags_s"] if at >= measured_from]
        lags = timed or [math.nan]
        broker_cpu = (broker1 - broker0) / window * 100
        received = (result["messages"] - self.retained) / live
        n = f"{miners}_miners"
        return [
            Figure(f"fleet_{n}_messages_into_broker", (sent1 - sent0) / window, "msg/s"),
            Figure(f"fleet_{n}_messages_to_fleet_view", received, "msg/s"),
            Figure(
                f"fleet_{n}_bytes_per_miner", self.traffic.published_bytes / live / miners, "B/s"
            ),
            Figure(f"fleet_{n}_events_queued", len(timed), "events"),
            Figure(f"fleet_{n}_event_to_swap_queue_p50", percentile(lags, 0.5) * 1000, "ms"),
            Figure(
                f"fleet_{n}_event_to_swap_queue_p99",
                percentile(lags, 0.99) * 1000,
                "ms",
                "< 1000 ms",
            ),
            Figure(f"fleet_{n}_view_cpu", (view1 - view0) / window * 100, "% of a core", "< 100 %"),
            Figure(f"fleet_{n}_view_rss_peak", rss_mb, "MB"),
            Figure(f"fleet_{n}_broker_cpu", broker_cpu, "% of a core"),
            Figure(
                f"fleet_{n}_one_mosquitto_core_carries",
                miners * 100 / broker_cpu if broker_cpu > 0 else math.inf,
                "miners (projected at this load)",
            ),
            Figure(f"fleet_{n}_duplicates_dropped", result["duplicates"], "events"),
        ]

    def _mark(self, consumer: int, sent: int) -> tuple[float, float, float, int]:
        return (time.monotonic(), _cpu_s(consumer), _cpu_s(self.broker.pid), sent)


async def _send(connections: list[aiomqtt.Client], messages: list[Message]) -> None:
    """Each miner's messages on its own connection, in order; QoS 1 awaited together."""
    pending = []
    for message in messages:
        miner = message.topic.split("/")[1]
        connection = connections[_miner_index(miner) // MINERS_PER_CONNECTION]
        pending.append(
            connection.publish(
                message.topic, message.payload, qos=message.qos, retain=message.retain
            )
        )
    for chunk in range(0, len(pending), 500):
        await asyncio.gather(*pending[chunk : chunk + 500])


def _miner_index(name: str) -> int:
    rack, _, slot = name.partition("-m")
    return int(rack.removeprefix("rack")) * 40 + int(slot)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0
