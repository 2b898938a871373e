"""Events: what happened to a module, told once to everyone who needs to know.

An event is first written to the durable spool (so a broker outage or an agent restart
loses nothing), then handed to live subscribers (console, control socket streams). The
MQTT publisher drains the spool in order. Each event is also logged.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import structlog

from hashbay.agent.core.fault_codes import with_code

log = structlog.get_logger("hashbay.events")


class EventKind(enum.StrEnum):
    INSERTED = "inserted"
    REMOVED = "removed"  # details["prepared"] says whether a swap was prepared first
    FAULT = "fault"
    DEGRADING = "degrading"  # predictive warning, with an estimated time to failure
    SAFE_TO_REMOVE = "safe_to_remove"
    RECOVERED = "recovered"  # back to hashing after degraded or fault
    SWAP_CANCELLED = "swap_cancelled"
    OVERHEAT = "overheat"  # a protection tier was crossed: warn, throttle or cut
    THROTTLED = "throttled"  # details carry the scale, the reason and the temperature
    RESTARTING = "restarting"  # a faulted module comes back by itself (retry n of max)
    NEEDS_SERVICE = "needs_service"  # retries used up: stays off until a person acts
    CURTAILED = "curtailed"  # miner asleep or at minimum power, with the cause
    RESUMED = "resumed"
    DECISION = "decision"  # power governor: target, profit choice, with the numbers
    TUNED = "tuned"  # autotuning finished for a module, with its efficiency
    STATE_DROPPED = "state_dropped"  # a damaged stored file or entry was left out, and why
    SENSOR_UNREADABLE = "sensor_unreadable"  # a temperature sensor failed reads past the debounce
    BUS_NOISE = "bus_noise"  # a slot's I2C device fails a steady share of its transactions
    POOL_FAILED = "pool_failed"  # the active pool was lost, or a pool was judged useless


@dataclass(frozen=True)
class Event:
    kind: EventKind
    slot: int | None
    message: str
    serial: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "slot": self.slot,
            "serial": self.serial,
            "message": self.message,
            "details": dict(self.details),
            "at": round(self.at, 3),
        }


class EventSink(Protocol):
    """Where events must go before anyone else hears of them (the durable spool)."""

    def append(self, event: Event) -> int: ...


class Subscription(asyncio.Queue[Event]):
    """A subscriber's bounded queue; `dropped` counts the events it lost by being slow."""

    dropped: int = 0


class EventBus:
    """Fan-out to subscribers with bounded queues; a slow subscriber loses its oldest.

    The last `recent_size` events are also kept in memory for "what happened lately"
    (`hashbay events`), independent of what the spool has delivered.
    """

    def __init__(
        self, sink: EventSink | None = None, queue_size: int = 256, recent_size: int = 200
    ) -> None:
        self._sink = sink
        self._queue_size = queue_size
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._recent: deque[Event] = deque(maxlen=recent_size)
        self.dropped = 0

    def publish(self, event: Event) -> None:
        """Spool, log and fan out. Call from the event loop thread."""
        details = with_code(event.kind.value, event.details)
        if details is not event.details:
            event = replace(event, details=details)
        if self._sink is not None:
            self._sink.append(event)
        log.info(
            f"event {event.kind.value}",
            slot=event.slot,
            serial=event.serial,
            message=event.message,
            **dict(event.details),
        )
        self._recent.append(event)
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
                if isinstance(queue, Subscription):
                    queue.dropped += 1
            queue.put_nowait(event)

    def subscribe(self) -> Subscription:
        queue = Subscription(self._queue_size)
        self._subscribers.add(queue)
        return queue

    def recent(self, limit: int) -> list[Event]:
        """The last `limit` events, oldest first."""
        if limit <= 0:
            return []
        return list(self._recent)[-limit:]

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._subscribers.discard(queue)
