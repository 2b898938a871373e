"""Per-call costs that must stay small: a spool append (every event pays it on the event
loop) and the efficiency oracle over a full board and a voltage sweep."""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path

from hashbay.agent.core.events import Event, EventKind
from hashbay.agent.interfaces.spool import EventSpool
from hashbay.tools.bench import Figure
from hashbay.tools.sim import physics

APPENDS = 2000


def spool_append_us() -> float:
    with tempfile.TemporaryDirectory() as tmp, EventSpool(Path(tmp) / "events.db", 10_000) as spool:
        for n in range(20):  # warm up: schema, page cache
            spool.append(Event(EventKind.FAULT, 0, f"warm-up {n}"))
        started = time.perf_counter()
        for n in range(APPENDS):
            spool.append(Event(EventKind.FAULT, 0, f"event {n}"))
        return (time.perf_counter() - started) / APPENDS * 1e6


def oracle_ms() -> float:
    spec = physics.CHIP_SPECS["BM1368"]
    chips = physics.make_silicon(spec, 126, random.Random(7))
    volts = [11.0 + 0.2 * i for i in range(20)]
    times = []
    for _ in range(3):
        started = time.perf_counter()
        physics.efficiency_oracle(spec, chips, volts, 65.0, 1e-3)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def run() -> list[Figure]:
    return [
        Figure("spool_append", spool_append_us(), "µs", "< 500 µs"),
        Figure("efficiency_oracle_126_chips_20_volts", oracle_ms(), "ms", "< 1000 ms"),
    ]
