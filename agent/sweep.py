"""The protection fast path's eyes: every powered board's sensors, read in one sweep.

One trip to the hardware thread per period for all boards (not one per board) keeps the
20 ms path cheap on a Pi-class CPU; each board's controller judges its own readings at
once, in the loop, and cuts its power itself. Rail status words cost more bus traffic
and latch in the converters anyway, so they are read every few sweeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

log = structlog.get_logger("hashbay.sweep")

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
        rails_every: int = 8,
    ) -> None:
        self._call = call
        self.interval_s = interval_s
        self._rails_every = rails_every
        self._watched: dict[int, tuple[Watched, OnReading]] = {}
        self.sweeps = 0

    def watch(self, slot: int, hw: Watched, on_reading: OnReading) -> None:
        """From the next sweep on, `on_reading(temps, rail_fault)` gets slot's readings."""
        self._watched[slot] = (hw, on_reading)

    def unwatch(self, slot: int) -> None:
        self._watched.pop(slot, None)

    async def run(self) -> None:
        while True:
            await self.sweep()
            await asyncio.sleep(self.interval_s)

    async def sweep(self) -> None:
        watched = dict(self._watched)
        if not watched:
            return
        with_rails = self.sweeps % self._rails_every == 0
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
