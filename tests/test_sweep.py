"""The protection sweep: one hardware trip per period for every watched board, rails at
most every so often (by the clock, not the count), the slower backup pace while every
board is cut in hardware, and nothing delivered to a board once it is no longer watched."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from hashbay.agent.modules.sweep import SensorSweep

from .support import Clock


class Board:
    def __init__(self, temp_c: float) -> None:
        self.temp_c = temp_c
        self.rail_reads = 0

    def read_temps(self) -> tuple[float | None, ...]:
        return (self.temp_c, None)

    def rail_faults(self) -> str | None:
        self.rail_reads += 1
        return "DC-DC over-current" if self.temp_c > 90 else None


async def test_one_trip_per_sweep_rails_every_few_and_unwatch_stops_delivery() -> None:
    trips: list[int] = []

    async def call(fn: Callable[[], Any]) -> Any:
        trips.append(1)
        return await asyncio.to_thread(fn)

    clock = Clock(5 * 86400.0)
    sweep = SensorSweep(call, 0.01, rails_every_s=0.03, clock=clock)
    cool, hot = Board(40.0), Board(95.0)
    seen: dict[int, list[tuple[tuple[float | None, ...], str | None]]] = {0: [], 1: []}
    sweep.watch(0, cool, lambda temps, rail: seen[0].append((temps, rail)))
    sweep.watch(1, hot, lambda temps, rail: seen[1].append((temps, rail)))
    for _ in range(6):
        await sweep.sweep()
        clock.now += 0.01
    assert len(trips) == 6  # both boards in one trip each time
    assert [rail for _, rail in seen[1]] == ["DC-DC over-current", None, None] * 2
    assert seen[0][0] == ((40.0, None), None)
    assert cool.rail_reads == hot.rail_reads == 2
    sweep.unwatch(1)
    await sweep.sweep()
    assert len(seen[1]) == 6 and len(seen[0]) == 7


async def test_a_slow_sweep_reads_the_rails_every_time() -> None:
    async def call(fn: Callable[[], Any]) -> Any:
        return fn()

    clock = Clock(5 * 86400.0)
    sweep = SensorSweep(call, 0.5, rails_every_s=0.15, clock=clock)
    hot = Board(95.0)
    rails: list[str | None] = []
    sweep.watch(0, hot, lambda temps, rail: rails.append(rail))
    for _ in range(4):
        await sweep.sweep()
        clock.now += 0.5
    assert rails == ["DC-DC over-current"] * 4


async def test_the_backup_pace_holds_only_while_every_watched_board_is_cut_in_hardware() -> None:
    async def call(fn: Callable[[], Any]) -> Any:
        return fn()

    sweep = SensorSweep(call, 0.02, backup_interval_s=0.5)
    assert sweep.interval_s == 0.5  # nothing to watch
    sweep.watch(0, Board(40.0), lambda temps, rail: None, backed=True)
    assert sweep.interval_s == 0.5
    sweep.watch(1, Board(40.0), lambda temps, rail: None)
    assert sweep.interval_s == 0.02  # slot 1 has only the sweep
    sweep.unwatch(1)
    assert sweep.interval_s == 0.5
    sweep.watch(0, Board(40.0), lambda temps, rail: None, backed=False)
    assert sweep.interval_s == 0.02


async def test_an_idle_sweep_touches_no_hardware() -> None:
    calls: list[int] = []

    async def call(fn: Callable[[], Any]) -> Any:
        calls.append(1)
        return fn()

    sweep = SensorSweep(call, 0.01)
    await sweep.sweep()
    assert calls == []
