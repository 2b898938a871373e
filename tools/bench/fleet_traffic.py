"""A farm's MQTT traffic, miner by miner, as the agent publishes it: for the fleet bench
(through a real mosquitto, in real time) and the HTML test (straight into a model).

Each miner sends what a hashbay agent on a pool sends (payloads from
`fleet_sample.json`, captured from the agent): its retained status, miner state and three
slot states, republished at the measured steady-state rate (`tools/run bench agent`:
about 199 B/s per miner on a pool, states in rotation, the numbers moving a little), and
events with (stream, seq). On top, modules fail and are swapped much more often than on
a real farm, so the swap queue is always busy: faults that restart and recover or run
out of restarts (needs service), predictive warnings with a time to failure, health
that sags, swaps (safe to remove, removed, inserted with a new serial), and now and then
an event delivered twice, as at-least-once delivery does.
"""

from __future__ import annotations

import copy
import heapq
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hashbay.agent.interfaces.mqtt import rounded

SAMPLE = Path(__file__).with_name("fleet_sample.json")
STEADY_BYTES_PER_S = 199.0  # per miner on a pool, README: Benchmarks (agent)
EVENTS_PER_MINER_S = 1 / 120  # one module change every two minutes per miner: busy
DUPLICATE_SHARE = 0.02
OFFLINE_SHARE = 0.01
SLOTS = 3
QUEUEING = frozenset({"fault", "needs_service", "degrading"})


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    queueing: bool = False  # an event that puts a module in the swap queue


def load_sample() -> dict[str, Any]:
    sample: dict[str, Any] = json.loads(SAMPLE.read_text())
    return sample


@dataclass
class _Slot:
    serial: str
    condition: str = "ok"  # ok / fault / needs_service / degrading / low_health / empty
    since: float = 0.0
    ttf_s: float | None = None


@dataclass
class _Miner:
    name: str
    stream: str
    slots: list[_Slot]
    online: bool = True
    seq: int = 0
    rotation: int = 0
    hashrate_scale: float = 1.0
    last_event: dict[str, Any] | None = None
    serials: int = 0


@dataclass(order=True)
class _Due:
    at: float
    miner: int = field(compare=False)
    what: str = field(compare=False)  # state / event


class FarmTraffic:
    """Messages for `miners` miners; `due(now)` gives those due by `now` (seconds)."""

    def __init__(
        self,
        miners: int,
        *,
        prefix: str = "farm",
        seed: int = 1,
        wall: Callable[[], float],
        events_per_miner_s: float = EVENTS_PER_MINER_S,
        bytes_per_miner_s: float = STEADY_BYTES_PER_S,
    ) -> None:
        self.prefix = prefix
        self._random = random.Random(seed)
        self._wall = wall
        self._sample = load_sample()
        self._event_rate = events_per_miner_s
        self.miners = [self._new_miner(n) for n in range(miners)]
        for miner in self._random.sample(self.miners, int(miners * OFFLINE_SHARE)):
            miner.online = False
        rotation_bytes = self._rotation_bytes()
        # One message of the rotation every `period`: the cycle's bytes at the steady rate.
        self.state_period_s = rotation_bytes / (SLOTS + 1) / bytes_per_miner_s
        self._queue: list[_Due] = []
        for n, miner in enumerate(self.miners):
            if not miner.online:
                continue
            heapq.heappush(
                self._queue, _Due(self._random.uniform(0, self.state_period_s), n, "state")
            )
            heapq.heappush(self._queue, _Due(self._next_event_in(), n, "event"))
        self.published_bytes = 0

    # -- what is sent -----------------------------------------------------------------

    def retained(self) -> list[Message]:
        """Every miner's retained tree, as a broker holds it when the fleet view connects."""
        out: list[Message] = []
        for miner in self.miners:
            out.append(self._status(miner))
            out.append(self._miner_state(miner))
            out += [self._slot_state(miner, n) for n in range(SLOTS)]
        return out

    def due(self, now: float) -> list[Message]:
        out: list[Message] = []
        while self._queue and self._queue[0].at <= now:
            item = heapq.heappop(self._queue)
            miner = self.miners[item.miner]
            if item.what == "state":
                out.append(self._next_state(miner))
                heapq.heappush(
                    self._queue, _Due(item.at + self.state_period_s, item.miner, "state")
                )
            else:
                out += self._module_changes(miner)
                heapq.heappush(
                    self._queue, _Due(item.at + self._next_event_in(), item.miner, "event")
                )
        for message in out:
            self.published_bytes += len(message.topic) + len(message.payload)
        return out

    # -- miners -------------------------------------------------------------------------

    def _new_miner(self, n: int) -> _Miner:
        name = f"rack{n // 40:03d}-m{n % 40:02d}"
        miner = _Miner(name, f"{self._random.getrandbits(32):08x}", [], serials=SLOTS)
        miner.slots = [_Slot(f"HB{n:05d}{s:02d}") for s in range(SLOTS)]
        miner.hashrate_scale = self._random.uniform(0.95, 1.05)
        return miner

    def _next_event_in(self) -> float:
        return self._random.expovariate(self._event_rate)

    def _rotation_bytes(self) -> int:
        miner = self.miners[0] if self.miners else self._new_miner(0)
        messages = [self._miner_state(miner)] + [self._slot_state(miner, n) for n in range(SLOTS)]
        return sum(len(m.topic) + len(m.payload) for m in messages)

    def _next_state(self, miner: _Miner) -> Message:
        miner.rotation = (miner.rotation + 1) % (SLOTS + 1)
        if miner.rotation == 0:
            return self._miner_state(miner)
        return self._slot_state(miner, miner.rotation - 1)

    def _status(self, miner: _Miner) -> Message:
        status = b"online" if miner.online else b"offline"
        return Message(f"{self.prefix}/{miner.name}/status", status, 1, True)

    def _miner_state(self, miner: _Miner) -> Message:
        state = copy.deepcopy(self._sample["miner_state"])
        hashing = sum(1 for s in miner.slots if s.condition in ("ok", "degrading", "low_health"))
        jitter = self._random.gauss(1.0, 0.01)
        state["name"] = miner.name
        state["hashrate_hs"] = rounded(
            state["hashrate_hs"] * hashing / SLOTS * miner.hashrate_scale * jitter
        )
        state["psu_input_power_w"] = rounded(140.0 + 1350.0 * hashing * jitter)
        state["slots"] = {str(n): _slot_word(s) for n, s in enumerate(miner.slots)}
        state["thermal"]["hottest_c"] = rounded(self._random.gauss(70.0, 2.0) if hashing else 35.0)
        state["spool"]["stream"] = miner.stream
        return Message(f"{self.prefix}/{miner.name}/state", _json(state), 0, True)

    def _slot_state(self, miner: _Miner, n: int) -> Message:
        slot = miner.slots[n]
        topic = f"{self.prefix}/{miner.name}/slot/{n}/state"
        if slot.condition == "empty":
            empty = {"slot": n, "state": "empty", "serial": None, "detail": "no module"}
            return Message(topic, _json(empty), 0, True)
        fault = slot.condition in ("fault", "needs_service")
        status: dict[str, Any] = copy.deepcopy(
            self._sample["slot_state_fault" if fault else "slot_state_hashing"]
        )
        status["slot"], status["serial"], status["since"] = n, slot.serial, slot.since
        health, prediction = status["health"], status["prediction"]
        health["hashrate_hs"] = rounded(health["hashrate_hs"] * self._random.gauss(1.0, 0.01))
        if slot.condition == "needs_service":
            status["detail"] += "; 3 restarts in 1 h: needs service"
            status["restarts"] = 3
        elif slot.condition == "degrading":
            prediction.update(degrading=True, time_to_failure_s=slot.ttf_s, confidence=0.8)
            prediction.update(trend="error rate of chip 17 doubling every 2.1 h", chip=17)
            health.update(score=65.0, level="degraded")
            health["reasons"] = [
                {"code": "degrading", "text": "chip 17 expected to fail", "penalty": 35.0}
            ]
        elif slot.condition == "low_health":
            health.update(score=58.0, level="degraded")
            health["reasons"] = [
                {"code": "hashrate_low", "text": "hashrate 12 % below expected", "penalty": 42.0}
            ]
        return Message(topic, _json(status), 0, True)

    # -- module changes -----------------------------------------------------------------

    def _module_changes(self, miner: _Miner) -> list[Message]:
        if miner.last_event is not None and self._random.random() < DUPLICATE_SHARE:
            return [self._event_message(miner, miner.last_event)]  # a resend after a lost ack
        n = self._random.randrange(SLOTS)
        slot = miner.slots[n]
        now = self._wall()
        out: list[Message] = []

        def event(kind: str, message: str, **details: Any) -> None:
            out.append(self._event(miner, n, kind, message, now, **details))

        roll = self._random.random()
        if slot.condition == "ok":
            if roll < 0.5:
                slot.condition = "fault"
                event(
                    "fault",
                    f"module in slot {n} faulted: power fault: DC-DC output over-current fault",
                    reason="power fault: DC-DC output over-current fault",
                )
            elif roll < 0.8:
                slot.condition, slot.ttf_s = "degrading", self._random.uniform(3600, 48 * 3600)
                event(
                    "degrading",
                    f"module {slot.serial} likely to fail",
                    time_to_failure_s=slot.ttf_s,
                    chip=17,
                )
            else:
                slot.condition = "low_health"
        elif slot.condition == "fault" and roll < 0.5:
            event("restarting", f"slot {n}: restarting (restart 1 of 3)", restart=1)
            slot.condition = "ok"
            event("recovered", f"module in slot {n} recovered")
        elif slot.condition == "fault":
            slot.condition = "needs_service"
            event("needs_service", f"slot {n}: 3 restarts in 1 h: needs service")
        elif slot.condition == "empty":
            miner.serials += 1
            slot.serial = f"HB{self.miners.index(miner):05d}{miner.serials:02d}"
            slot.condition = "ok"
            event("inserted", f"module inserted in slot {n}")
        else:  # degrading, low health, needs service: swapped
            event("safe_to_remove", f"slot {n}: safe to remove")
            slot.condition = "empty"
            event("removed", f"module removed from slot {n}", prepared=True)
        slot.since = now
        out.append(self._slot_state(miner, n))
        return out

    def _event(
        self, miner: _Miner, slot: int, kind: str, message: str, at: float, **details: Any
    ) -> Message:
        miner.seq += 1
        body = {
            "seq": miner.seq,
            "stream": miner.stream,
            "kind": kind,
            "slot": slot,
            "serial": miner.slots[slot].serial,
            "message": message,
            "details": details,
            "at": round(at, 3),
        }
        miner.last_event = body
        return self._event_message(miner, body)

    def _event_message(self, miner: _Miner, body: dict[str, Any]) -> Message:
        queueing = body["kind"] in QUEUEING
        return Message(f"{self.prefix}/{miner.name}/event", _json(body), 1, False, queueing)


def _slot_word(slot: _Slot) -> str:
    return {"fault": "fault", "needs_service": "fault", "empty": "empty"}.get(
        slot.condition, "hashing"
    )


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
