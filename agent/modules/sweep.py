"""The protection sweep: every powered board's sensors, read in one trip to the bus.

One trip to the hardware thread per period for all boards (not one per board) keeps the
path cheap on a Pi-class CPU; each board's controller judges its own readings at once, in
the loop, and cuts its power itself. Rail status words cost more bus traffic and latch in
the converters anyway, so they are read at most every RAILS_EVERY_S (every sweep when the
sweep is slower).

A board whose sensors' comparators cut it in hardware (a wired alert line) needs the
sweep only as a backup and for the warn and throttle tiers: while every watched board is
so backed, the sweep runs at the slower `backup_interval_s`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

log = structlog.get_logger("hashbay.sweep")

RAILS_EVERY_S = 0.15  # rail status words at most this often, whatever the sweep's pace

Temps = tuple[float | None, ...]
OnReading = Callable[[Temps, str | None], None]


class Watched(Protocol):
    def read_temps(self) -> Temps: ...

    def rail_faults(self) -> str | None: ...


class SensorSweep:
    def __init__(
        self,
        call: Callable[[Callable[[], Any]], Awaitable[Any]],
        interval_s: float,
        *,
        backup_interval_s: float | None = None,
        rails_every_s: float = RAILS_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._call = call
        self.fast_interval_s = interval_s
        self.backup_interval_s = backup_interval_s if backup_interval_s is not None else interval_s
        self._backed: set[int] = set()
        self._rails_every_s = rails_every_s
        self._clock = clock
        self._rails_read_at = -math.inf
        self._watched: dict[int, tuple[Watched, OnReading]] = {}
        self.sweeps = 0

    def watch(self, slot: int, hw: Watched, on_reading: OnReading, *, backed: bool = False) -> None:
        """From the next sweep on, `on_reading(temps, rail_fault)` gets slot's readings;
        `backed`: its over-temperature cut is in hardware."""
        self._watched[slot] = (hw, on_reading)
        if backed:
            self._backed.add(slot)
        else:
            self._backed.discard(slot)

    def unwatch(self, slot: int) -> None:
        self._watched.pop(slot, None)
        self._backed.discard(slot)

    @property
    def interval_s(self) -> float:
        """The fast period while any watched board has only this sweep to cut it."""
        if self._watched.keys() <= self._backed:
            return self.backup_interval_s
        return self.fast_interval_s

    async def run(self) -> None:
        while True:
            await self.sweep()
            await asyncio.sleep(self.interval_s)

    async def sweep(self) -> None:
        watched = dict(self._watched)
        if not watched:
            return
        now = self._clock()
        with_rails = now - self._rails_read_at >= self._rails_every_s
        if with_rails:
            self._rails_read_at = now
        self.sweeps += 1

        def read() -> list[tuple[int, Temps, str | None]]:
            return [
                (slot, hw.read_temps(), hw.rail_faults() if with_rails else None)
                for slot, (hw, _) in watched.items()
            ]

        readings: list[tuple[int, Temps, str | None]] = await self._call(read)
        for slot, temps, rail_fault in readings:
            entry = self._watched.get(slot)
            if entry is not None and entry is watched[slot]:  # still the same watcher
                entry[1](temps, rail_fault)
