"""Runs the governor: gathers what it needs, hands each slot its budget, says why.

Slots ask `mode()` and `budget_w(slot)` (the `Director` protocol) whenever they plan; a
change of mind nudges them so a curtail command takes effect within a second, not at
the next health sample. Every change of mode or limiting reason is logged and raised
as an event with its numbers, so an operator can see why the miner runs as it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog

from hashbay.agent.core.events import Event, EventBus, EventKind
from hashbay.agent.core.schedule import minute_of_day
from hashbay.agent.core.state import AgentState
from hashbay.agent.power.controls import Controls, ControlStore
from hashbay.agent.power.governor import CurvePoint, Decision, Governor, Inputs, Mode

log = structlog.get_logger("hashbay.power")

BUDGET_NUDGE_W = 5.0  # smaller budget moves wait for the slot's next sample


class Governed(Protocol):
    index: int

    def curve(self) -> list[CurvePoint] | None: ...

    def nudge(self) -> None: ...


class PowerService:
    def __init__(
        self,
        governor: Governor,
        controls: ControlStore,
        state: AgentState,
        slots: Sequence[Governed],
        events: EventBus,
        *,
        quiet_scale: Callable[[], float] = lambda: 1.0,
        work_available: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
        local_minute: Callable[[], int] = minute_of_day,
    ) -> None:
        self.governor = governor
        self.controls = controls
        self._state = state
        self._slots = slots
        self._events = events
        self._quiet_scale = quiet_scale
        self._work_available = work_available
        self._clock = clock
        self._local_minute = local_minute
        self._wake = asyncio.Event()
        controls.on_change(lambda _controls: self._wake.set())
        # Decide once before any slot asks, so a miner curtailed before a restart never
        # powers its boards up in between.
        self.decision = governor.step(self._inputs())
        self._announced: tuple[Mode, tuple[str, ...], Controls] | None = None

    # -- the Director protocol, for the slots ----------------------------------------------

    def mode(self) -> Mode:
        return self.decision.mode

    def budget_w(self, slot: int) -> float | None:
        return self.decision.budgets_w.get(slot)

    def refresh(self) -> None:
        """Decide now, in place: a board about to power up asks with itself counted."""
        self.step()

    def wake(self) -> None:
        """Re-decide now (a command or a pool change), not at the next interval."""
        self._wake.set()

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        interval_s = self.governor.power.interval_s
        while True:
            self.step()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await self._wake.wait()
            self._wake.clear()

    def step(self) -> Decision:
        before = self.decision
        decision = self.governor.step(self._inputs())
        self.decision = decision
        self._announce(before, decision)
        for slot in self._slots:
            if _moved(before, decision, slot.index):
                slot.nudge()
        return decision

    def status_json(self) -> dict[str, Any]:
        return {**self.decision.to_json(), "controls": self.controls.current.to_json()}

    def _inputs(self) -> Inputs:
        snapshot = self._state.snapshot
        curves = {}
        for slot in self._slots:
            curve = slot.curve()
            if curve:
                curves[slot.index] = curve
        return Inputs(
            now_s=self._clock(),
            minute_of_day=self._local_minute(),
            input_w=snapshot.psu.pin_w if snapshot and snapshot.psu else None,
            curves=curves,
            controls=self.controls.current,
            quiet_scale=self._quiet_scale(),
            work_available=self._work_available(),
        )

    def _announce(self, before: Decision, after: Decision) -> None:
        key = (after.mode, after.limits, self.controls.current)
        if key == self._announced:
            return
        first = self._announced is None
        self._announced = key
        numbers = dict(after.numbers)
        log.info("power decision", mode=after.mode.value, reason=after.reason, **numbers)
        if first and after.mode is Mode.RUN:
            return
        if after.mode is not Mode.RUN and (
            first or before.mode is Mode.RUN or before.mode != after.mode
        ):
            kind = EventKind.CURTAILED
        elif after.mode is Mode.RUN and before.mode is not Mode.RUN:
            kind = EventKind.RESUMED
        else:
            kind = EventKind.DECISION
        self._events.publish(
            Event(kind, None, after.reason, details={"mode": after.mode.value, **numbers})
        )


def _moved(before: Decision, after: Decision, slot: int) -> bool:
    if before.mode is not after.mode:
        return True
    old, new = before.budgets_w.get(slot), after.budgets_w.get(slot)
    if old is None or new is None:
        return old is not new
    return abs(old - new) >= BUDGET_NUDGE_W
