"""Commands over MQTT: exactly one reply for every request, and no waiting while receiving.

The receive loop only sorts. A retained message, a ResponseTopic the agent will not
publish to, a sender beyond `mqtt.commands_per_s`, or a full queue is answered at once;
anything else waits in a short queue for the one worker that parses and carries out
commands in arrival order. Replies are handed to the client without waiting for their
PUBACK (a refusal is logged when the broker's answer comes), so a flood cannot make the
loop fall behind the client's incoming buffer, where messages would be lost unanswered.

Reply shape: `{"ok": true, "result": {...}}` or `{"ok": false, "code": CODE, "error": "..."}`
with CODE one of `invalid` (not a valid command, a retained or misaddressed request),
`refused` (valid, but not now), `failed` (the agent failed carrying it out), `busy` (over
the rate limit or the queue is full: try again later) — the control socket's codes.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from hashbay.agent.core.quoting import quote
from hashbay.agent.interfaces.commands import CommandError, CommandHandler, parse_command
from hashbay.agent.interfaces.mqtt_topics import Topics

log = structlog.get_logger("hashbay.mqtt")

COMMAND_QUEUE = 16  # valid-looking commands waiting for the worker; beyond it: busy
MAX_PENDING_REPLIES = 1024  # replies the broker has not acknowledged yet; beyond: dropped
REPLY_EXPIRY_S = 60  # an unread reply is not worth keeping longer
LOG_BURST = 5  # refusals logged one by one per LOG_WINDOW_S; the rest are counted
LOG_WINDOW_S = 10.0


class ReplyCode(enum.StrEnum):
    INVALID = "invalid"
    REFUSED = "refused"
    FAILED = "failed"
    BUSY = "busy"


class Sender(Protocol):
    """What the channel needs of an MQTT client: publish now, learn the outcome later."""

    def send(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> asyncio.Future[ReasonCode]: ...


class RateLimit:
    """A token bucket: `per_s` on average, bursts of as many."""

    def __init__(self, per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_s = per_s
        self._clock = clock
        self._tokens = per_s
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._per_s, self._tokens + (now - self._at) * self._per_s)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class LogThrottle:
    """At most LOG_BURST lines per window; what is held back is counted in the next one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._window_at = clock()
        self._lines = 0
        self.suppressed = 0

    def allow(self) -> bool:
        now = self._clock()
        if now - self._window_at >= LOG_WINDOW_S:
            if self.suppressed:
                log.warning("mqtt command refusals not logged", count=self.suppressed)
            self._window_at, self._lines, self.suppressed = now, 0, 0
        if self._lines < LOG_BURST:
            self._lines += 1
            return True
        self.suppressed += 1
        return False


@dataclass
class CommandStats:
    received: int = 0
    executed: int = 0  # reached the handler
    refused: int = 0  # answered with an error before the handler (invalid or busy)
    busy: int = 0
    replies_dropped: int = 0  # too many replies unacknowledged by the broker


class CommandChannel:
    """The command topic's two halves: `receive` sorts, `work` carries out. One per agent;
    both are run per connection with the queue `begin_session` gives."""

    def __init__(
        self,
        topics: Topics,
        *,
        discovery_prefix: str,
        slots: int,
        handle: CommandHandler,
        per_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._topics = topics
        self._discovery_prefix = discovery_prefix
        self._slots = slots
        self._handle = handle
        self._rate = RateLimit(per_s, clock)
        self._log = LogThrottle(clock)
        self._pending_replies = 0
        self._session = 0
        self.stats = CommandStats()

    def begin_session(self) -> asyncio.Queue[aiomqtt.Message]:
        """A new connection: a fresh queue, and replies of the old one no longer count
        (their acknowledgements died with it)."""
        self._session += 1
        self._pending_replies = 0
        return asyncio.Queue(COMMAND_QUEUE)

    async def receive(
        self,
        client: Sender,
        messages: AsyncIterator[aiomqtt.Message],
        queue: asyncio.Queue[aiomqtt.Message],
    ) -> None:
        async for message in messages:
            if not message.topic.matches(self._topics.cmd):
                continue
            self.stats.received += 1
            refusal = self._admission(message)
            if refusal is None:
                try:
                    queue.put_nowait(message)
                    continue
                except asyncio.QueueFull:
                    refusal = (ReplyCode.BUSY, "busy: too many commands waiting; try again")
            code, text = refusal
            self.stats.refused += 1
            self.stats.busy += code is ReplyCode.BUSY
            if self._log.allow():
                log.warning("command refused", code=code.value, error=text)
            self.reply(client, message, {"ok": False, "code": code.value, "error": text})

    async def work(self, client: Sender, queue: asyncio.Queue[aiomqtt.Message]) -> None:
        while True:
            message = await queue.get()
            self.reply(client, message, await self._execute(message.payload))

    def _admission(self, message: aiomqtt.Message) -> tuple[ReplyCode, str] | None:
        if message.retain:
            return ReplyCode.INVALID, "retained commands are never executed; publish without retain"
        asked = _response_topic(message)
        if asked is not None:
            why = self._topics.may_reply_to(asked, self._discovery_prefix)
            if why is not None:
                return ReplyCode.INVALID, f"{why}; the command was not executed"
        if not self._rate.take():
            return ReplyCode.BUSY, "busy: too many commands per second; try again"
        return None

    async def _execute(self, payload: bytes | bytearray | Any) -> dict[str, Any]:
        try:
            if not isinstance(payload, bytes | bytearray):
                raise CommandError("command must be a JSON object in the payload")
            command = parse_command(bytes(payload), slots=self._slots)
        except CommandError as exc:
            self.stats.refused += 1
            if self._log.allow():
                log.warning("command refused", code=ReplyCode.INVALID.value, error=str(exc))
            return _error(ReplyCode.INVALID, str(exc))
        bound = log.bind(command=command.name, **command.args)
        bound.info("command received")
        self.stats.executed += 1
        try:
            result = await self._handle(command)
        except CommandError as exc:
            bound.warning("command refused", error=str(exc))
            return _error(ReplyCode.REFUSED, str(exc))
        except Exception as exc:
            bound.exception("command failed")
            return _error(ReplyCode.FAILED, f"{command.name} failed inside the agent: {exc}")
        return {"ok": True, "result": result}

    def reply(self, client: Sender, request: aiomqtt.Message, reply: dict[str, Any]) -> None:
        """Publish the reply (QoS 1) without waiting: on the request's ResponseTopic when
        it may be used, else on `cmd/reply`; with its CorrelationData."""
        if self._pending_replies >= MAX_PENDING_REPLIES:
            self.stats.replies_dropped += 1
            if self._log.allow():
                log.warning("command reply dropped: the broker is not acknowledging replies")
            return
        asked = _response_topic(request)
        topic = asked if isinstance(asked, str) else self._topics.cmd_reply
        if self._topics.may_reply_to(asked, self._discovery_prefix) is not None:
            topic = self._topics.cmd_reply
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.MessageExpiryInterval = REPLY_EXPIRY_S
        correlation = getattr(request.properties, "CorrelationData", None)
        if isinstance(correlation, bytes | bytearray):
            properties.CorrelationData = bytes(correlation)
        payload = json.dumps(reply, separators=(",", ":"), default=str).encode()
        future = client.send(topic, payload, qos=1, properties=properties)
        self._pending_replies += 1
        session = self._session
        future.add_done_callback(lambda done: self._reply_done(done, session))

    def _reply_done(self, future: asyncio.Future[ReasonCode], session: int) -> None:
        if session == self._session:
            self._pending_replies -= 1
        if future.cancelled() or future.exception() is not None:
            return
        reason = future.result()
        if reason.is_failure and self._log.allow():
            log.warning("broker refused a command reply", reason=quote(str(reason)))


def _response_topic(message: aiomqtt.Message) -> Any:
    return getattr(message.properties, "ResponseTopic", None)


def _error(code: ReplyCode, text: str) -> dict[str, Any]:
    return {"ok": False, "code": code.value, "error": text}
