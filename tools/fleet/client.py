"""The fleet view's broker connection: subscribe to every miner's tree, feed the model.

Broker address, TLS and credentials are the agent's `[mqtt]` settings, read and checked
by the agent's own code (the same password file rule, the same TLS context). It only
reads: it subscribes to status, miner state and slot state (retained, so a fresh
consumer learns the whole farm at once) and to events at QoS 1; with a group, events
come through the shared subscription `$share/<group>/<prefix>/+/event`, so the group's
consumers split them while each still reads all the retained state.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import AsyncIterator, Callable

import aiomqtt

from hashbay.agent.daemon.config import MqttSection
from hashbay.agent.interfaces.mqtt import _read_password, _tls_context
from hashbay.tools.fleet.model import FleetModel

OPERATION_TIMEOUT_S = 10.0
GROUP_PATTERN = r"[A-Za-z0-9_-]{1,64}"


def subscriptions(prefix: str, group: str | None) -> list[tuple[str, int]]:
    """(topic filter, QoS) for the whole farm; events shared when there is a group.

    Retained topics at QoS 0: a farm's burst on subscribing (about 5 per miner) is not held
    back by the broker's window of unacknowledged QoS 1 messages, and what a lost
    connection drops comes again, retained, on resubscribing.
    """
    event = f"{prefix}/+/event"
    return [
        (f"{prefix}/+/status", 0),
        (f"{prefix}/+/state", 0),
        (f"{prefix}/+/slot/+/state", 0),
        (f"$share/{group}/{event}" if group else event, 1),
    ]


def default_client_id() -> str:
    """Unique per process: two fleet views must never take each other's session."""
    return (
        f"hashbay-fleet-{socket.gethostname()[:24]}-{os.getpid()}-{random.randrange(1 << 16):04x}"
    )


async def connect(settings: MqttSection, client_id: str) -> aiomqtt.Client:
    """A client for the broker `settings` name (not yet connected: use `async with`)."""
    password = _read_password(settings)
    tls = await asyncio.to_thread(_tls_context, settings) if settings.tls else None
    return aiomqtt.Client(
        settings.host,
        settings.port,
        username=settings.username or None,
        password=password,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=True,
        keepalive=settings.keepalive_s,
        timeout=OPERATION_TIMEOUT_S,
        tls_context=tls,
        socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
    )


async def subscribe(client: aiomqtt.Client, prefix: str, group: str | None) -> None:
    """One SUBSCRIBE for every filter: its SUBACK comes before the retained burst, which
    on a large farm would otherwise delay the next SUBACK past the timeout."""
    topics = subscriptions(prefix, group)
    granted = await client.subscribe(topics)
    for (topic, _), code in zip(topics, granted, strict=False):
        if getattr(code, "is_failure", False):
            raise aiomqtt.MqttError(f"the broker refused the subscription to {topic}")


async def read_once(
    settings: MqttSection,
    model: FleetModel,
    *,
    client_id: str,
    group: str | None = None,
    quiet_s: float = 0.5,
    max_s: float = 5.0,
) -> None:
    """Connect, take the retained farm (and events meanwhile) until the broker falls quiet
    for `quiet_s` (retained messages come in a burst on subscribing), at most `max_s`."""
    async with await connect(settings, client_id) as client:
        await subscribe(client, settings.topic_prefix, group)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_s
        messages = _messages(client)
        while (left := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(min(quiet_s, left)):
                    topic, payload = await anext(messages)
            except TimeoutError:
                return
            model.ingest(topic, payload)


async def _messages(client: aiomqtt.Client) -> AsyncIterator[tuple[str, bytes]]:
    async for message in client.messages:
        payload = message.payload if isinstance(message.payload, bytes) else b""
        yield message.topic.value, payload


async def follow(
    settings: MqttSection,
    model: FleetModel,
    *,
    client_id: str,
    group: str | None = None,
    on_connected: Callable[[], None] | None = None,
    on_lost: Callable[[str, float], None] | None = None,
    reconnect_min_s: float = 1.0,
    reconnect_max_s: float = 30.0,
) -> None:
    """Feed the model for ever, reconnecting with jittered backoff after a lost broker."""
    delay = reconnect_min_s
    while True:
        try:
            async with await connect(settings, client_id) as client:
                await subscribe(client, settings.topic_prefix, group)
                delay = reconnect_min_s
                if on_connected is not None:
                    on_connected()
                async for topic, payload in _messages(client):
                    model.ingest(topic, payload)
        except (aiomqtt.MqttError, OSError) as exc:
            wait_s = random.uniform(delay / 2, delay)
            if on_lost is not None:
                on_lost(str(exc), wait_s)
            await asyncio.sleep(wait_s)
            delay = min(delay * 2, reconnect_max_s)
