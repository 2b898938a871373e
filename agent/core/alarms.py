"""Alarm events, debounced and bounded: the same condition on the same slot is told at most
once per `repeat_s`, however often it flaps.

A flapping condition (a sensor on a noisy bus, a board hovering at a threshold, a pool
that keeps dropping) would otherwise fill the event spool during a broker outage and push
out the events that matter. The first event of a condition goes out at once, and so does
one more severe than any told in the current interval (a warning becoming a throttle is
news, not a flap); the others inside the interval are folded: only the newest is kept,
and when the interval ends it is published with `details.folded`, the number of events
it stands for that were not sent. So the last word on a condition always arrives, at
most `repeat_s` late, and each severity is told at most once per interval.

Intervals run on the agent's clock (the simulated rig's, when simulated); `run` is the
small supervised service that publishes what is due.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace

from hashbay.agent.core.events import Event, EventBus

FLUSH_EVERY_S = 1.0  # real seconds between checks for folded events that are due


@dataclass
class _Condition:
    next_s: float  # when the next event of this condition may go out
    severity: int  # the most severe told in this interval
    pending: Event | None = None  # the newest event folded since
    pending_severity: int = 0
    folded: int = 0  # events not sent since the last one that was


class AlarmGate:
    """Publishes alarm events through `events`, one per condition per `repeat_s`."""

    def __init__(self, events: EventBus, clock: Callable[[], float], repeat_s: float) -> None:
        self._events = events
        self._clock = clock
        self.repeat_s = repeat_s
        self._conditions: dict[tuple[int | None, str], _Condition] = {}
        self.folded_total = 0

    def raise_event(self, condition: str, event: Event, severity: int = 0) -> bool:
        """Tell `event` now, or fold it into the next; True when it went out now.

        `condition` names what the event is about on its slot ("temperature", "sensors",
        "bus 0x20", "pool 1"): events with the same slot and condition replace each other.
        `severity` orders them (0 = all clear): a more severe one than told so far in the
        interval is never held back.
        """
        now = self._clock()
        key = (event.slot, condition)
        state = self._conditions.get(key)
        if state is None or now >= state.next_s or severity > state.severity:
            folded = 0
            if state is not None:  # the newest folded one is superseded by this one too
                folded = state.folded + (state.pending is not None)
            fresh = state is None or now >= state.next_s
            self._publish(key, event, folded, now, severity)
            if not fresh and state is not None:  # an escalation keeps the interval
                self._conditions[key].next_s = state.next_s
            return True
        if state.pending is not None:
            state.folded += 1
        state.pending, state.pending_severity = event, severity
        self.folded_total += 1
        return False

    def flush(self) -> None:
        """Publish each folded condition whose interval is over (its newest event)."""
        now = self._clock()
        for key, state in list(self._conditions.items()):
            if state.pending is not None and now >= state.next_s:
                self._publish(key, state.pending, state.folded, now, state.pending_severity)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            self.flush()

    def _publish(
        self, key: tuple[int | None, str], event: Event, folded: int, now: float, severity: int
    ) -> None:
        if folded:
            event = replace(
                event,
                message=f"{event.message} ({folded} more folded in since the last report)",
                details={**event.details, "folded": folded},
            )
        self._events.publish(event)
        self._conditions[key] = _Condition(next_s=now + self.repeat_s, severity=severity)
