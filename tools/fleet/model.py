"""The farm as its miners publish it: a model fed (topic, payload) pairs from the broker.

Pure and synchronous (no sockets, no clock of its own), so it is tested message by
message and the same code runs in `hashbay fleet`, the bench and the HTML writer. What it
reads is the agents' MQTT tree (README, MQTT):

- `<prefix>/<miner>/status`: `online`, or `offline` (a clean stop, or the broker's will);
- `<prefix>/<miner>/state` and `<prefix>/<miner>/slot/<n>/state`: retained, republished at
  least every `mqtt.state_interval_s`; an empty payload clears the topic;
- `<prefix>/<miner>/event`: `{seq, stream, kind, slot, serial, message, details, at}`,
  delivered at least once, so de-duplicated on (stream, seq).

A miner whose state has not come for `stale_after_s` is stale (its agent, link or broker
path is stuck though no will fired). Retained state carries no publish time, so state
delivered on subscribing counts from the moment it arrived: a live agent republishes
within its interval, a dead one without a will goes stale one `stale_after_s` later.

Every payload comes from outside: anything unreadable is counted in `rejected` and
ignored, never raised.
"""

from __future__ import annotations

import json
import math
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hashbay.agent.modules.swap_order import swap_rank

MAX_SLOT = 63
SEQ_WINDOW = 4096  # seqs this far below a stream's highest are taken as already seen
RECENT_EVENTS = 200
MINER_HISTORY = 60  # points of hashrate and hottest temperature per miner (sparklines)
FARM_HISTORY = 720  # farm samples kept (two hours at one every 10 s)
STALE_AFTER_S = 90.0  # three of the agent's default state intervals (30 s)
LOW_HEALTH = 70.0  # the agent's default health.degraded_below
MAX_PAYLOAD = 64 * 1024
RECOVERY_SLACK_S = 1.0  # published `since` is rounded to whole seconds

# A module in the swap queue, most urgent category first.
NEEDS_SERVICE, FAULT, DEGRADING, LOW_HEALTH_CATEGORY = (
    "needs_service",
    "fault",
    "degrading",
    "low_health",
)
CATEGORY_RANK = {NEEDS_SERVICE: 0, FAULT: 1, DEGRADING: 2, LOW_HEALTH_CATEGORY: 3}
# Events after which a module is no longer the faulted one the last fault event named.
CLEARING_EVENTS = frozenset({"recovered", "restarting", "removed", "inserted", "swap_cancelled"})
QUEUEING_EVENTS = {"fault": FAULT, "needs_service": NEEDS_SERVICE, "degrading": DEGRADING}
OFF_STATES = frozenset({"fault", "draining", "safe_to_remove"})


@dataclass
class SeenSeqs:
    """Which seqs of one event stream were taken; older than the window counts as seen."""

    highest: int = -1
    recent: set[int] = field(default_factory=set)

    def first_time(self, seq: int) -> bool:
        if seq <= self.highest - SEQ_WINDOW or seq in self.recent:
            return False
        self.recent.add(seq)
        if seq > self.highest:
            self.highest = seq
            if len(self.recent) > 2 * SEQ_WINDOW:
                floor = seq - SEQ_WINDOW
                self.recent = {s for s in self.recent if s > floor}
        return True


@dataclass
class Flag:
    """Something an event said about a module, kept until the module's state moves on."""

    at: float  # the event's own time (the agent's clock), to compare with state `since`
    received: float  # the model's clock
    serial: str | None
    reason: str
    code: Any = None
    time_to_failure_s: float | None = None


@dataclass
class SlotView:
    status: dict[str, Any] = field(default_factory=dict)
    received: float = 0.0
    fault: Flag | None = None
    needs_service: Flag | None = None
    degrading: Flag | None = None


@dataclass
class MinerView:
    name: str
    status: str = "unknown"  # online / offline / unknown (no status topic seen)
    state: dict[str, Any] | None = None
    state_received: float | None = None
    slots: dict[int, SlotView] = field(default_factory=dict)
    streams: dict[str, SeenSeqs] = field(default_factory=dict)
    history: deque[tuple[float, float | None, float | None]] = field(
        default_factory=lambda: deque(maxlen=MINER_HISTORY)
    )  # (wall time, hashrate H/s, hottest °C)


@dataclass(frozen=True)
class SwapItem:
    """One module to swap, with what the technician needs at the rack."""

    miner: str
    slot: int
    serial: str | None
    category: str
    reason: str
    code: Any
    time_to_failure_s: float | None
    score: float | None
    state: str
    miner_status: str  # online / offline / stale / unknown

    def key(self) -> tuple[int, float, float, str, int]:
        rank = CATEGORY_RANK[self.category]
        if self.category == DEGRADING:
            first = self.time_to_failure_s if self.time_to_failure_s is not None else math.inf
        elif self.category == LOW_HEALTH_CATEGORY:
            first = self.score if self.score is not None else 100.0
        else:
            first = 0.0
        return (rank, first, self.score if self.score is not None else 100.0, self.miner, self.slot)

    def to_json(self) -> dict[str, Any]:
        return {
            "miner": self.miner,
            "slot": self.slot,
            "serial": self.serial,
            "category": self.category,
            "reason": self.reason,
            "code": self.code,
            "time_to_failure_s": self.time_to_failure_s,
            "score": self.score,
            "state": self.state,
            "miner_status": self.miner_status,
        }


@dataclass(frozen=True)
class FarmSummary:
    miners: int
    online: int
    offline: int
    stale: int
    unknown: int
    hashrate_hs: float
    power_w: float
    j_per_th: float | None
    modules: dict[str, int]  # slot state -> count, over miners not offline
    swap_queue: int
    events: int  # taken by this consumer (its share, in a group)
    duplicates: int  # events delivered again and dropped
    rejected: int  # messages that could not be read

    def to_json(self) -> dict[str, Any]:
        return {
            "miners": self.miners,
            "online": self.online,
            "offline": self.offline,
            "stale": self.stale,
            "unknown": self.unknown,
            "hashrate_hs": self.hashrate_hs,
            "power_w": self.power_w,
            "j_per_th": self.j_per_th,
            "modules": dict(self.modules),
            "swap_queue": self.swap_queue,
            "events": self.events,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
        }


@dataclass(frozen=True)
class FarmPoint:
    at: float  # wall time
    hashrate_hs: float
    power_w: float
    swap_queue: int


# Called when a fault, needs_service or degrading event puts a module in the queue (or
# changes why it is there): (miner, slot, category, event).
QueueListener = Callable[[str, int, str, Mapping[str, Any]], None]


class FleetModel:
    """Everything the farm's miners published, as one consumer saw it."""

    def __init__(
        self,
        prefix: str,
        *,
        clock: Callable[[], float],
        wall: Callable[[], float],
        stale_after_s: float = STALE_AFTER_S,
        low_health: float = LOW_HEALTH,
        on_queued: QueueListener | None = None,
    ) -> None:
        self.prefix = prefix
        self._clock = clock
        self._wall = wall
        self.stale_after_s = stale_after_s
        self.low_health = low_health
        self.on_queued = on_queued
        self.miners: dict[str, MinerView] = {}
        # Modules in the queue, kept up to date as their slot's messages come, so reading
        # the queue costs its length, not the farm's size: (item, when its ttf was told).
        self._queued: dict[tuple[str, int], tuple[SwapItem, float]] = {}
        self.events: deque[tuple[str, dict[str, Any]]] = deque(maxlen=RECENT_EVENTS)
        self.history: deque[FarmPoint] = deque(maxlen=FARM_HISTORY)
        self.messages = 0
        self.events_taken = 0
        self.duplicates = 0
        self.rejected = 0

    # -- ingest ---------------------------------------------------------------------------

    def ingest(self, topic: str, payload: bytes) -> bool:
        """Take one message; False (and counted in `rejected`) if it could not be read."""
        self.messages += 1
        try:
            taken = self._ingest(topic, payload)
        except (ValueError, TypeError, KeyError, AttributeError):
            taken = False
        if not taken:
            self.rejected += 1
        return taken

    def _ingest(self, topic: str, payload: bytes) -> bool:
        parts = topic.split("/")
        if len(parts) < 3 or parts[0] != self.prefix or not parts[1] or len(payload) > MAX_PAYLOAD:
            return False
        name, rest = parts[1], parts[2:]
        if rest == ["status"]:
            return self._take_status(name, payload)
        if rest == ["state"]:
            return self._take_state(name, payload)
        if rest == ["event"]:
            return self._take_event(name, payload)
        if len(rest) == 3 and rest[0] == "slot" and rest[2] == "state":
            slot = _slot_index(rest[1])
            return slot is not None and self._take_slot(name, slot, payload)
        return False

    def _miner(self, name: str) -> MinerView:
        miner = self.miners.get(name)
        if miner is None:
            miner = self.miners[name] = MinerView(name)
        return miner

    def _take_status(self, name: str, payload: bytes) -> bool:
        text = payload.decode()
        if text not in ("online", "offline", ""):
            return False
        self._miner(name).status = text or "unknown"
        return True

    def _take_state(self, name: str, payload: bytes) -> bool:
        miner = self._miner(name)
        if not payload:
            miner.state, miner.state_received = None, None
            return True
        state = _object(payload)
        if state is None:
            return False
        miner.state, miner.state_received = state, self._clock()
        miner.history.append((self._wall(), _number(state.get("hashrate_hs")), _hottest(state)))
        return True

    def _take_slot(self, name: str, slot: int, payload: bytes) -> bool:
        miner = self._miner(name)
        if not payload:
            miner.slots.pop(slot, None)
            self._queued.pop((name, slot), None)
            return True
        status = _object(payload)
        if status is None or not isinstance(status.get("state"), str):
            return False
        view = miner.slots.setdefault(slot, SlotView())
        view.status, view.received = status, self._clock()
        self._settle_flags(view)
        self._requeue(name, slot, view)
        return True

    def _requeue(self, name: str, slot: int, view: SlotView) -> None:
        found = self._queue_item(name, slot, view)
        if found is None:
            self._queued.pop((name, slot), None)
        else:
            self._queued[(name, slot)] = found

    def _settle_flags(self, view: SlotView) -> None:
        """Drop what events said once the published state has moved past it."""
        status = view.status
        since = _number(status.get("since"))
        state = status.get("state")
        serial = status.get("serial")
        for name in ("fault", "needs_service"):
            flag: Flag | None = getattr(view, name)
            if flag is None:
                continue
            moved_on = state not in OFF_STATES and (
                since is not None and since + RECOVERY_SLACK_S >= flag.at
            )
            if moved_on or (serial and flag.serial and serial != flag.serial):
                setattr(view, name, None)
        degrading = view.degrading
        if degrading is not None and (
            state == "empty" or (serial and degrading.serial and serial != degrading.serial)
        ):
            view.degrading = None

    def _take_event(self, name: str, payload: bytes) -> bool:
        event = _object(payload)
        if event is None:
            return False
        seq, stream, kind = event.get("seq"), event.get("stream"), event.get("kind")
        if not (isinstance(seq, int) and isinstance(stream, str) and isinstance(kind, str)):
            return False
        miner = self._miner(name)
        if not miner.streams.setdefault(stream, SeenSeqs()).first_time(seq):
            self.duplicates += 1
            return True
        self.events_taken += 1
        self.events.append((name, event))
        slot = event.get("slot")
        if isinstance(slot, int) and not isinstance(slot, bool) and 0 <= slot <= MAX_SLOT:
            self._apply_event(miner, slot, kind, event)
        return True

    def _apply_event(self, miner: MinerView, slot: int, kind: str, event: dict[str, Any]) -> None:
        view = miner.slots.setdefault(slot, SlotView())
        details = event.get("details")
        details = details if isinstance(details, dict) else {}
        serial = event.get("serial") if isinstance(event.get("serial"), str) else None
        flag = Flag(
            at=_number(event.get("at")) or 0.0,
            received=self._clock(),
            serial=serial,
            reason=_text(details.get("reason")) or _text(event.get("message")),
            code=event_code(event),
            time_to_failure_s=_number(details.get("time_to_failure_s")),
        )
        if kind in CLEARING_EVENTS:
            view.fault = view.needs_service = None
            if kind in ("removed", "inserted"):
                view.degrading = None
            self._requeue(miner.name, slot, view)
            return
        category = QUEUEING_EVENTS.get(kind)
        if category is None:
            return
        setattr(view, category, flag)
        self._requeue(miner.name, slot, view)
        if self.on_queued is not None:
            self.on_queued(miner.name, slot, category, event)

    # -- reading --------------------------------------------------------------------------

    def miner_status(self, miner: MinerView) -> str:
        """online / offline / stale / unknown."""
        if miner.status == "offline":
            return "offline"
        received = miner.state_received
        if received is not None and self._clock() - received > self.stale_after_s:
            return "stale"
        if miner.status == "online":
            return "online"
        return "unknown"

    def swap_queue(self) -> list[SwapItem]:
        """Every module to swap, the first to swap first (see README, Fleet view)."""
        now = self._clock()
        statuses: dict[str, str] = {}
        items: list[SwapItem] = []
        for (name, _), (item, told) in self._queued.items():
            status = statuses.get(name)
            if status is None:
                status = statuses[name] = self.miner_status(self.miners[name])
            ttf = item.time_to_failure_s
            if ttf is not None:
                ttf = max(0.0, ttf - (now - told))
            items.append(
                SwapItem(
                    *(item.miner, item.slot, item.serial, item.category, item.reason),
                    *(item.code, ttf, item.score, item.state, status),
                )
            )
        return sorted(items, key=SwapItem.key)

    def _queue_item(self, name: str, slot: int, view: SlotView) -> tuple[SwapItem, float] | None:
        """The module's place in the queue as its slot's messages tell it, if it has one,
        and when its time to failure was told (it counts down from there)."""
        published = view.status
        health = _mapping(published.get("health"))
        prediction = _mapping(published.get("prediction"))
        state = _text(published.get("state")) or "unknown"
        score = _number(health.get("score"))
        detail = _text(published.get("detail"))
        serial = published.get("serial") if isinstance(published.get("serial"), str) else None
        code = slot_code(published)
        category, reason, ttf, told = "", "", None, view.received
        rank = swap_rank(published)[0] if published else None
        if view.needs_service is not None or (state == "fault" and "needs service" in detail):
            flag = view.needs_service
            category = NEEDS_SERVICE
            reason = detail or (flag.reason if flag else "")
            code = code if code is not None else (flag.code if flag else None)
        elif view.fault is not None or state == "fault" or health.get("level") == "fault":
            flag = view.fault
            category = FAULT
            reason = (flag.reason if flag else "") or detail or _health_reasons(health)
            code = code if code is not None else (flag.code if flag else None)
        elif view.degrading is not None or prediction.get("degrading") is True:
            flag = view.degrading
            category = DEGRADING
            ttf = _number(prediction.get("time_to_failure_s"))
            if ttf is None and flag is not None:
                ttf, told = flag.time_to_failure_s, flag.received
            reason = _text(prediction.get("trend")) or (flag.reason if flag else "")
        elif (
            rank is not None
            and state not in ("empty", "sleeping")
            and score is not None
            and (score < self.low_health or health.get("level") == "degraded")
        ):
            category = LOW_HEALTH_CATEGORY
            reason = _health_reasons(health) or detail
            if code is None:
                code = _first_reason_code(health)
        if not category:
            return None
        if serial is None:
            for flag in (view.needs_service, view.fault, view.degrading):
                if flag is not None and flag.serial:
                    serial = flag.serial
                    break
        item = SwapItem(name, slot, serial, category, reason, code, ttf, score, state, "")
        return item, told

    def summary(self, queue: list[SwapItem] | None = None) -> FarmSummary:
        counts = Counter[str]()
        hashrate = power = 0.0
        statuses = Counter[str]()
        for miner in self.miners.values():
            status = self.miner_status(miner)
            statuses[status] += 1
            if status == "offline":
                continue
            state = miner.state or {}
            if status != "stale":
                hashrate += _number(state.get("hashrate_hs")) or 0.0
                power += _number(state.get("psu_input_power_w")) or 0.0
            for view in miner.slots.values():
                counts[_text(view.status.get("state")) or "unknown"] += 1
        queue = self.swap_queue() if queue is None else queue
        return FarmSummary(
            miners=len(self.miners),
            online=statuses["online"],
            offline=statuses["offline"],
            stale=statuses["stale"],
            unknown=statuses["unknown"],
            hashrate_hs=hashrate,
            power_w=power,
            j_per_th=power / (hashrate / 1e12) if hashrate > 0 else None,
            modules=dict(sorted(counts.items())),
            swap_queue=len(queue),
            events=self.events_taken,
            duplicates=self.duplicates,
            rejected=self.rejected,
        )

    def sample(self, summary: FarmSummary) -> FarmPoint:
        """Record the farm's totals now, for the charts of the recent window."""
        point = FarmPoint(self._wall(), summary.hashrate_hs, summary.power_w, summary.swap_queue)
        self.history.append(point)
        return point

    def miner_detail(self, name: str) -> dict[str, Any] | None:
        miner = self.miners.get(name)
        if miner is None:
            return None
        now = self._clock()
        state = miner.state or {}
        return {
            "miner": name,
            "status": self.miner_status(miner),
            "state_age_s": None if miner.state_received is None else now - miner.state_received,
            "hashrate_hs": _number(state.get("hashrate_hs")),
            "power_w": _number(state.get("psu_input_power_w")),
            "hottest_c": _hottest(state),
            "fans": state.get("fans"),
            "pools": state.get("pools"),
            "slots": [_slot_detail(slot, miner.slots[slot].status) for slot in sorted(miner.slots)],
            "events": [event for who, event in self.events if who == name][-20:],
        }


# -- reading published values (all untrusted) -----------------------------------------


def event_code(event: Mapping[str, Any]) -> Any:
    """The fault code an event carries, at the top or in its details; None before codes."""
    code = event.get("code")
    if code is None:
        details = event.get("details")
        code = details.get("code") if isinstance(details, Mapping) else None
    return code if isinstance(code, int | str) and not isinstance(code, bool) else None


def slot_code(status: Mapping[str, Any]) -> Any:
    for key in ("code", "fault_code"):
        code = status.get(key)
        if isinstance(code, int | str) and not isinstance(code, bool):
            return code
    return None


def _slot_detail(slot: int, status: Mapping[str, Any]) -> dict[str, Any]:
    health = _mapping(status.get("health"))
    prediction = _mapping(status.get("prediction"))
    return {
        "slot": slot,
        "state": status.get("state"),
        "serial": status.get("serial"),
        "detail": status.get("detail"),
        "score": _number(health.get("score")),
        "hashrate_hs": _number(health.get("hashrate_hs")),
        "power_w": _number(status.get("power_w")),
        "temps_c": status.get("temps_c"),
        "degrading": prediction.get("degrading") is True,
        "time_to_failure_s": _number(prediction.get("time_to_failure_s")),
        "code": slot_code(status),
    }


def _health_reasons(health: Mapping[str, Any]) -> str:
    reasons = health.get("reasons")
    if not isinstance(reasons, list):
        return ""
    texts = [_text(r.get("text")) for r in reasons[:2] if isinstance(r, dict)]
    return "; ".join(t for t in texts if t)


def _first_reason_code(health: Mapping[str, Any]) -> Any:
    reasons = health.get("reasons")
    if isinstance(reasons, list) and reasons and isinstance(reasons[0], dict):
        code = reasons[0].get("code")
        return code if isinstance(code, str) else None
    return None


def _hottest(state: Mapping[str, Any]) -> float | None:
    return _number(_mapping(state.get("thermal")).get("hottest_c"))


def _object(payload: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _slot_index(text: str) -> int | None:
    if not text.isdigit() or len(text) > 2:
        return None
    slot = int(text)
    return slot if slot <= MAX_SLOT else None
