"""The MQTT service: the miner's state and events out, commands in, through one broker.

Topics (`<prefix>` is `mqtt.topic_prefix`, `<miner>` is `agent.name`):

| topic                              | dir | retained | QoS | payload                    |
|------------------------------------|-----|----------|-----|----------------------------|
| `<prefix>/<miner>/status`          | out | yes      | 1   | `online` / `offline`       |
| `<prefix>/<miner>/state`           | out | yes      | 0   | miner summary JSON         |
| `<prefix>/<miner>/slot/<n>/state`  | out | yes      | 0   | `SlotStatus.to_json()`     |
| `<prefix>/<miner>/event`           | out | no       | 1   | one event JSON, with `seq` |
| `<prefix>/<miner>/cmd`             | in  | no       | 1   | command JSON               |
| `<prefix>/<miner>/cmd/reply`       | out | no       | 1   | reply JSON (default topic) |
| `<discovery_prefix>/.../config`    | out | yes      | 1   | Home Assistant discovery   |

- status: `online` is published on connect; `offline` is the last will and is also
  published before a clean disconnect.
- state: the dict the agent supplies, plus `spool: {pending, dropped, stream, durable}`.
- event: `{seq, stream, kind, slot, serial, message, details, at}`.
- cmd: e.g. `{"command": "locate", "slot": 1, "mode": "blink"}`; replies go to the
  request's ResponseTopic, else to `cmd/reply`.
- discovery: `<discovery_prefix>/{sensor,binary_sensor}/hashbay_<miner>/<object>/config`.

Retained state is one topic per miner and per slot, whatever happens: no topic is made
per message, module or event. State is republished when something that matters changed
(a state, serial, reason, or a number moving past its deadband, see `DEADBANDS`) and
at least every `mqtt.state_interval_s`; floats are rounded to 4 significant digits
(integer digits are kept). On every connect, everything is republished, and retained
state and discovery of slots beyond the configured count (up to 8) are cleared.

Events are delivered from the durable spool strictly in order, one at a time (the next
is sent only after the previous one's PUBACK): each is acknowledged in the spool only
once the broker's PUBACK says it was accepted. aiomqtt 2.x's `publish()` does wait for
the PUBACK, but ignores its MQTT v5 reason code (a broker may answer "not authorized")
and hides the message id; `_Client.send` below keeps both. A refused event is not
acknowledged: the connection is dropped and the event retried, in place, after the
backoff, so nothing overtakes it. One event per round trip is plenty for what events
are (transitions; state goes to the retained topics) and keeps the order strict even
when a broker refuses one message of several in flight. Delivery is at-least-once: if
the connection drops after the broker took an event but before its PUBACK arrived, that
event is sent again after the reconnect. Consumers de-duplicate on (`stream`, `seq`):
`seq` grows by one per event within a stream, a gap means events were dropped at the
spool's bound, and a new stream starts only with a fresh spool file.

Latency: the socket has TCP_NODELAY (paho leaves Nagle on, which can hold a small
publish for the peer's delayed ACK, 40 ms on Linux). A broker that delivers to
subscribers benefits from the same (`set_tcp_nodelay true` in mosquitto).

Commands: see `hashbay.agent.interfaces.commands`. A reply goes to the request's MQTT v5
ResponseTopic with its CorrelationData, else to `<prefix>/<miner>/cmd/reply` (with the
CorrelationData if any): `{"ok": true, "result": {...}}` or `{"ok": false, "error": "..."}`.
Commands are handled one at a time, in arrival order. Retained messages on the command
topic are never executed. Consumers may read state and events through shared
subscriptions (`$share/<group>/<prefix>/+/event`); nothing here depends on who reads.

Connection: MQTT v5, a stable client id, a clean start (commands sent while the agent is
away are not queued for it: a late `prepare_swap` is worse than none). Connection losses
are retried with jittered exponential backoff between `reconnect_min_s` and
`reconnect_max_s`; unusable settings (password file, TLS files) are logged as config
errors and retried on the same backoff, so fixing the file needs no restart.

Promptness: the spool wakes the event sender on every append. The agent calls
`notify_changed()` after each hardware poll (or sets the `wake` event given to the
constructor); without either, state is still checked every second.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import socket
import ssl
from collections.abc import Callable, Coroutine
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from hashbay.agent.core.status import SlotStatus
from hashbay.agent.daemon.config import MqttSection
from hashbay.agent.interfaces.commands import CommandHandler
from hashbay.agent.interfaces.discovery import MAX_SLOTS, clear_messages, discovery_messages
from hashbay.agent.interfaces.mqtt_commands import CommandChannel
from hashbay.agent.interfaces.mqtt_topics import Topics
from hashbay.agent.interfaces.spool import EventSpool
from hashbay.drivers.errors import ConfigError

log = structlog.get_logger("hashbay.mqtt")

OPERATION_TIMEOUT_S = 10.0  # connect, subscribe, PUBACK
STABLE_SESSION_S = 10.0  # a connection that lasted this long resets the backoff
STATE_CHECK_S = 1.0  # state is looked at this often even without notify_changed()
EVENT_CHECK_S = 1.0
GOODBYE_TIMEOUT_S = 1.0  # bound on publishing `offline` during shutdown
# Messages aiomqtt buffers before the receive loop takes them; beyond it they would be
# discarded unanswered. The loop never waits on the broker, so it keeps far ahead of a
# flood of 1,000 commands a second; MAX_PACKET_BYTES bounds what the buffer can hold.
INCOMING_QUEUE = 1024
MAX_PACKET_BYTES = 16 * 1024  # told to the broker: it sends us nothing larger
SIGNIFICANT_DIGITS = 4


@dataclass(frozen=True)
class MqttStats:
    """For the status page and the console; `bytes_sent` counts topic + payload bytes."""

    connected: bool
    messages_sent: int
    bytes_sent: int
    events_delivered: int
    commands_handled: int
    reconnects: int
    last_error: str


@dataclass(frozen=True)
class Deadband:
    """How far a number may move before it is worth publishing before the interval is up."""

    absolute: float = 0.0
    relative: float = 0.0

    def exceeded(self, old: float, new: float) -> bool:
        return abs(new - old) > max(self.absolute, self.relative * max(abs(old), abs(new)))


# Matched against the end of a JSON key (our keys carry their unit); a list takes its
# key's deadband. Integers, strings and booleans must match exactly.
DEADBANDS: dict[str, Deadband] = {
    "_c": Deadband(absolute=2.0),
    "_v": Deadband(absolute=0.2),
    "_w": Deadband(relative=0.05),
    "_a": Deadband(relative=0.05),
    "_hs": Deadband(relative=0.05),
    "_dba": Deadband(absolute=2.0),  # estimated from tach counts: jitters by a dB or so
    "rpm": Deadband(relative=0.10),
    "duty": Deadband(absolute=0.05),
    "_s": Deadband(relative=0.10),
    "score": Deadband(absolute=5.0),
    "penalty": Deadband(absolute=5.0),
    "rate": Deadband(absolute=0.005),
    "confidence": Deadband(absolute=0.1),
    "worst_chips": Deadband(absolute=0.01),
}
OTHER_FLOATS = Deadband(relative=0.02)
PROSE_KEYS = frozenset({"text", "trend"})  # restate numbers in words; follow the interval
# Counters that grow with every share or every failed bus transaction (integers too):
# news once they moved by a tenth (a first one always is); the exact figure follows the
# interval. Without this the miner state went out with every accepted share.
COUNTER_KEYS = frozenset(
    {
        "accepted",
        "rejected",
        "stale",
        "unanswered",
        "accepted_difficulty",
        "rejected_difficulty",
        "best_share",
        "nacks",
        "pec_errors",
        "timeouts",
        "bus_errors",
        "pending",  # the spool's backlog
    }
)
COUNTER_MAPS = frozenset({"reject_reasons"})  # reason -> count: each count is a counter
COUNTERS = Deadband(relative=0.10)
TIMESTAMPS = Deadband(absolute=60.0)  # `*_at` (unix seconds): a minute is not news


class PublishRefused(aiomqtt.MqttError):
    """The broker answered a QoS 1 publish with a failure reason code."""


class _Client(aiomqtt.Client):
    """aiomqtt's client with publishes that report how they ended, without `wait_for`.

    aiomqtt 2.x's `publish()` waits for the PUBACK but drops its MQTT v5 reason code, so
    a message the broker refused ("not authorized") would look delivered; and it waits
    with `asyncio.wait_for`, which on Python 3.11 can swallow a cancellation that arrives
    as the publish completes (the service would then never stop). `send` hands the
    message to paho at once, in call order, and returns a future that paho's on_publish
    (routed through aiomqtt's `_on_publish`) completes: after the PUBACK for QoS 1, after
    the write for QoS 0. Checked against aiomqtt 2.5 and paho-mqtt 2.2; a test with a
    refusing broker covers it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks: dict[int, asyncio.Future[ReasonCode]] = {}

    def send(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> asyncio.Future[ReasonCode]:
        info = self._client.publish(topic, payload, qos, retain, properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, f"could not publish on {topic}")
        future: asyncio.Future[ReasonCode] = asyncio.get_running_loop().create_future()
        if info.is_published():  # a QoS 0 message paho could write straight away
            future.set_result(ReasonCode(PacketTypes.PUBACK))
        else:
            self._acks[info.mid] = future
        return future

    async def lost(self) -> None:
        """Raise MqttError as soon as the connection is gone (for racing other work)."""
        disconnected = self._disconnected
        await asyncio.wait({disconnected})
        error = None if disconnected.cancelled() else disconnected.exception()
        raise aiomqtt.MqttError(f"connection lost: {error}" if error else "disconnected")

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        future = self._acks.pop(mid, None)
        if future is None:
            super()._on_publish(client, userdata, mid, reason_code, properties)
        elif not future.done():
            future.set_result(reason_code)


class MqttPublisher:
    """Runs one broker connection at a time, for ever; `run()` is the supervised service."""

    def __init__(  # noqa: PLR0917 - the agent wires these positionally, in this order
        self,
        settings: MqttSection,
        miner: str,
        slots: int,
        spool: EventSpool,
        miner_state: Callable[[], dict[str, Any]],
        slot_states: Callable[[], list[SlotStatus]],
        handle: CommandHandler,
        *,
        wake: asyncio.Event | None = None,
    ) -> None:
        self._settings = settings
        self._slots = slots
        self._spool = spool
        self._miner_state = miner_state
        self._slot_states = slot_states
        self._wake = wake
        self.topics = Topics(settings.topic_prefix, miner)
        self._commands = CommandChannel(
            self.topics,
            discovery_prefix=settings.discovery_prefix,
            slots=slots,
            handle=handle,
            per_s=settings.commands_per_s,
        )
        self.client_id = settings.client_id or f"hashbay-{miner}"
        self._states_due = asyncio.Event()
        self._events_due = asyncio.Event()
        self._connected = False
        self._connected_at: float | None = None
        self._messages_sent = 0
        self._bytes_sent = 0
        self._events_delivered = 0
        self._reconnects = 0
        self._last_error = ""
        self._dropped_reported = spool.dropped
        self._state_error = ""

    @property
    def stats(self) -> MqttStats:
        return MqttStats(
            connected=self._connected,
            messages_sent=self._messages_sent,
            bytes_sent=self._bytes_sent,
            events_delivered=self._events_delivered,
            commands_handled=self._commands.stats.executed,
            reconnects=self._reconnects,
            last_error=self._last_error,
        )

    def notify_changed(self) -> None:
        """State may have changed: look now instead of at the next check. Loop thread only."""
        self._states_due.set()
        self._events_due.set()

    async def run(self) -> None:
        if not self._settings.enabled:
            log.info("mqtt disabled in the configuration")
            return
        self._spool.add_listener(self._events_due.set)
        relay = asyncio.create_task(self._relay(self._wake)) if self._wake is not None else None
        try:
            await self._connect_forever()
        finally:
            self._spool.remove_listener(self._events_due.set)
            if relay is not None:
                relay.cancel()

    # -- connection -----------------------------------------------------------------------

    async def _connect_forever(self) -> None:
        settings = self._settings
        loop = asyncio.get_running_loop()
        delay = settings.reconnect_min_s
        while True:
            self._connected_at = None
            unusable = False
            try:
                await self._session()
            except ConfigError as exc:
                self._last_error, unusable = str(exc), True
            except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"
            if self._was_stable(loop.time()):
                delay = settings.reconnect_min_s
            # Jittered, so a site's agents do not all come back in the same instant.
            wait_s = max(settings.reconnect_min_s, random.uniform(delay / 2, delay))
            self._report_failure(unusable, wait_s)
            # A cancel that aiomqtt's connect swallowed (wait_for on 3.11) must still stop
            # the service, or shutdown would wait on a loop that retries for ever.
            _honour_cancellation()
            await asyncio.sleep(wait_s)
            delay = min(delay * 2, settings.reconnect_max_s)
            self._reconnects += 1

    def _was_stable(self, now: float) -> bool:
        """Whether the last connection lasted long enough to start the backoff over."""
        return self._connected_at is not None and now - self._connected_at >= STABLE_SESSION_S

    def _report_failure(self, unusable: bool, wait_s: float) -> None:
        broker = f"{self._settings.host}:{self._settings.port}"
        if unusable:
            what = "mqtt settings unusable (fix the file; no restart needed)"
            log.error(what, error=self._last_error, retry_in_s=round(wait_s, 2))
            return
        what = "mqtt connection lost" if self._connected_at is not None else "mqtt cannot connect"
        log.warning(what, broker=broker, error=self._last_error, retry_in_s=round(wait_s, 2))

    async def _session(self) -> None:
        client = await self._make_client()
        async with client:
            self._connected_at = asyncio.get_running_loop().time()
            self._connected = True
            log.info(
                "mqtt connected",
                broker=f"{self._settings.host}:{self._settings.port}",
                client_id=self.client_id,
            )
            try:
                # Every wait below ends as soon as the connection does, not at a timeout.
                await _until_one_fails(client.lost(), self._serve(client))
            except asyncio.CancelledError:
                await self._say_offline(client)
                raise
            finally:
                self._connected = False

    async def _serve(self, client: _Client) -> None:
        await self._confirmed(client, self.topics.status, b"online", retain=True)
        await self._subscribe_commands(client)
        await self._publish_housekeeping(client)
        commands = self._commands.begin_session()
        await _until_one_fails(
            self._commands.receive(client, client.messages, commands),
            self._commands.work(client, commands),
            self._deliver_events(client),
            self._publish_states(client),
        )

    async def _make_client(self) -> _Client:
        settings = self._settings
        password = _read_password(settings)
        tls = await asyncio.to_thread(_tls_context, settings) if settings.tls else None
        return _Client(
            settings.host,
            settings.port,
            username=settings.username or None,
            password=password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(self.topics.status, b"offline", qos=1, retain=True),
            clean_start=True,
            keepalive=settings.keepalive_s,
            timeout=OPERATION_TIMEOUT_S,
            tls_context=tls,
            max_queued_incoming_messages=INCOMING_QUEUE,
            properties=_connect_properties(),
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )

    async def _subscribe_commands(self, client: _Client) -> None:
        # Retained commands are never delivered on subscribing, and one retained while we
        # are subscribed keeps its retain flag (retain-as-published), so it is refused: a
        # command left retained by mistake must not run again on every reconnect.
        options = SubscribeOptions(
            qos=1,
            retainAsPublished=True,
            retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND,
        )
        granted = await client.subscribe(self.topics.cmd, options=options)
        if any(isinstance(code, ReasonCode) and code.is_failure for code in granted):
            log.error(
                "broker refused the command subscription; commands will not be received",
                topic=self.topics.cmd,
                reason=str(granted[0]),
            )

    async def _publish_housekeeping(self, client: _Client) -> None:
        """Discovery, and clearing what belongs to slots the configuration no longer has."""
        settings = self._settings
        stale = range(self._slots, MAX_SLOTS)
        for slot in stale:
            await self._publish(client, self.topics.slot_state(slot), b"")
        if not settings.discovery:
            return
        messages = discovery_messages(self.topics, settings.discovery_prefix, self._slots)
        messages += clear_messages(self.topics, settings.discovery_prefix, stale)
        # All in flight at once (their order does not matter): one round trip, not 44,
        # before state and events flow on a slow link.
        sent = [(m, client.send(m.topic, m.payload, qos=1, retain=True)) for m in messages]
        async with asyncio.timeout(OPERATION_TIMEOUT_S):
            for message, future in sent:
                reason = await future
                if reason.is_failure:
                    log.warning(
                        "broker refused a discovery message",
                        topic=message.topic,
                        reason=str(reason),
                    )
                else:
                    self._count(message.topic, message.payload)

    async def _say_offline(self, client: _Client) -> None:
        """Runs while the task is being cancelled, so it waits on the PUBACK directly."""
        topic = self.topics.status
        try:
            future = client.send(topic, b"offline", qos=1, retain=True)
            async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                reason = await future
        except (TimeoutError, aiomqtt.MqttError) as exc:
            log.warning("could not publish offline before disconnecting", error=str(exc))
            return
        if reason.is_failure:
            log.warning("broker refused offline before disconnecting", reason=str(reason))
        else:
            self._count(topic, b"offline")

    async def _relay(self, wake: asyncio.Event) -> None:
        while True:
            await wake.wait()
            wake.clear()
            self.notify_changed()

    # -- publishing -----------------------------------------------------------------------

    async def _confirmed(
        self,
        client: _Client,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        """A QoS 1 publish that returns only once the broker has accepted it."""
        await self._send(client, topic, payload, qos=1, retain=retain, properties=properties)

    async def _publish(self, client: _Client, topic: str, payload: bytes) -> None:
        """Retained at QoS 0: the next republish repairs a loss."""
        await self._send(client, topic, payload, qos=0, retain=True)

    async def _send(
        self,
        client: _Client,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool,
        properties: Properties | None = None,
    ) -> None:
        _honour_cancellation()
        future = client.send(topic, payload, qos=qos, retain=retain, properties=properties)
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT_S):
                reason = await future
        except TimeoutError:
            what = "PUBACK" if qos else "write"
            raise aiomqtt.MqttError(
                f"no {what} for {topic} within {OPERATION_TIMEOUT_S:g} s"
            ) from None
        if reason.is_failure:
            raise PublishRefused(f"broker refused a publish on {topic}: {reason}")
        self._count(topic, payload)

    def _count(self, topic: str, payload: bytes) -> None:
        self._messages_sent += 1
        self._bytes_sent += len(topic) + len(payload)

    async def _deliver_events(self, client: _Client) -> None:
        while True:
            stream = self._spool.stream
            batch = self._spool.pending(32)
            if not batch:
                self._events_due.clear()
                await _wait(self._events_due, EVENT_CHECK_S)
                continue
            for seq, event in batch:
                body = {"seq": seq, "stream": stream, **event}
                payload = json.dumps(body, separators=(",", ":")).encode()
                await self._confirmed(client, self.topics.event, payload)
                self._spool.acknowledge(seq)
                self._events_delivered += 1

    async def _publish_states(self, client: _Client) -> None:
        loop = asyncio.get_running_loop()
        interval_s = self._settings.state_interval_s
        published: dict[str, tuple[Any, float]] = {}
        while True:
            self._states_due.clear()
            for topic, data in self._current_states():
                now = loop.time()
                last = published.get(topic)
                if last is None or now - last[1] >= interval_s or changed(last[0], data):
                    payload = json.dumps(data, separators=(",", ":"), default=str).encode()
                    await self._publish(client, topic, payload)
                    published[topic] = (data, now)
            self._report_drops()
            next_due = min((at + interval_s for _, at in published.values()), default=0.0)
            timeout = min(STATE_CHECK_S, max(next_due - loop.time(), 0.01))
            await _wait(self._states_due, timeout)

    def _current_states(self) -> list[tuple[str, Any]]:
        spool = self._spool
        try:
            miner = dict(self._miner_state())
            statuses = self._slot_states()
        except Exception as exc:
            if str(exc) != self._state_error:
                log.exception("cannot read the agent's state for publishing")
                self._state_error = str(exc)
            return []
        self._state_error = ""
        miner["spool"] = {
            "pending": spool.pending_count,
            "dropped": spool.dropped,
            "stream": spool.stream,
            "durable": spool.durable,
        }
        found = [(self.topics.state, rounded(miner))]
        for status in statuses:
            if 0 <= status.slot < self._slots:
                found.append((self.topics.slot_state(status.slot), rounded(status.to_json())))
        return found

    def _report_drops(self) -> None:
        dropped = self._spool.dropped
        if dropped > self._dropped_reported:
            log.warning(
                "events were dropped because the spool was full",
                dropped=dropped - self._dropped_reported,
                dropped_total=dropped,
                max_events=self._spool.max_events,
            )
            self._dropped_reported = dropped


def changed(old: Any, new: Any, key: str = "") -> bool:
    """Whether `new` differs from the last published `old` by something worth sending now."""
    if _is_number(old) and _is_number(new):
        if key in COUNTER_KEYS:
            return COUNTERS.exceeded(float(old), float(new))
        if key.endswith("_at"):
            return TIMESTAMPS.exceeded(float(old), float(new))
        if isinstance(old, float) or isinstance(new, float):
            return _deadband(key).exceeded(float(old), float(new))
    if isinstance(old, dict) and isinstance(new, dict):
        if old.keys() != new.keys():
            return True
        if key in COUNTER_MAPS:
            return any(changed(old[k], new[k], "accepted") for k in new)
        return any(k not in PROSE_KEYS and changed(old[k], new[k], k) for k in new)
    if isinstance(old, list) and isinstance(new, list):
        return len(old) != len(new) or any(
            changed(a, b, key) for a, b in zip(old, new, strict=True)
        )
    return bool(old != new)


def rounded(value: Any) -> Any:
    """JSON-ready copy with floats to 4 significant digits (never dropping integer digits);
    NaN and infinities become null."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value == 0:
            return 0.0
        digits = SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(abs(value)))
        return round(value, max(digits, 0))
    if isinstance(value, dict):
        return {str(k): rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    return value


def _deadband(key: str) -> Deadband:
    for suffix, band in DEADBANDS.items():
        if key.endswith(suffix):
            return band
    return OTHER_FLOATS


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


async def _until_one_fails(*workers: Coroutine[Any, Any, None]) -> None:
    """Run a connection's workers until one ends; stop the others; raise what it raised.

    Not an `asyncio.TaskGroup`: on Python 3.11, a TaskGroup whose child fails while the
    parent already waits in `__aexit__` cancels the parent and never takes that back
    (fixed in 3.12), which would leave this long-lived task half-cancelled after the
    first lost connection.
    """
    tasks = [asyncio.create_task(worker) for worker in workers]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
    for task in done:
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error
    raise aiomqtt.MqttError("a connection worker stopped")


def _honour_cancellation() -> None:
    """Raise CancelledError if this task was asked to stop but the request got lost.

    On Python 3.11 `asyncio.wait_for` (used inside aiomqtt's subscribe and connect) can
    swallow a cancellation that coincides with completion; the task then runs on with
    `cancelling() > 0`, and every later `asyncio.timeout` would turn the next cancel into
    a TimeoutError. Checked before each wait so the service always stops when told.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    _honour_cancellation()
    with suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()


def _connect_properties() -> Properties:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.MaximumPacketSize = MAX_PACKET_BYTES
    return properties


def _read_password(settings: MqttSection) -> str | None:
    if not settings.password_file:
        return None
    if not settings.username:
        raise ConfigError("mqtt.password_file: is set but mqtt.username is empty; set both")
    path = Path(settings.password_file)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"mqtt.password_file: cannot read {path}: {reason}") from None
    if not lines or not lines[0]:
        raise ConfigError(f"mqtt.password_file: {path} is empty; its first line is the password")
    return lines[0]


def _tls_context(settings: MqttSection) -> ssl.SSLContext:
    """Built per connection attempt, so renewed certificates are picked up without a restart."""
    try:
        context = ssl.create_default_context(cafile=settings.ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"mqtt.ca_file: cannot load {settings.ca_file}: {exc}") from None
    if settings.key_file and not settings.cert_file:
        raise ConfigError("mqtt.key_file: is set but mqtt.cert_file is empty; set both")
    if settings.cert_file:
        try:
            context.load_cert_chain(settings.cert_file, settings.key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"mqtt.cert_file: cannot load {settings.cert_file} "
                f"(key {settings.key_file or 'in the same file'}): {exc}"
            ) from None
    return context
