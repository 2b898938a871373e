"""The MQTT broker killed (SIGKILL) and stopped (SIGTERM) while events flow: every event
still reaches a fleet consumer, in order; a repeat is allowed (delivery is at least
once, consumers drop repeats on (stream, seq)), a gap is not."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hashbay.agent.core.events import Event, EventKind
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.tools.broker import HOST, Broker, mosquitto_available

from ..support import rig_config
from .rig import until

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
]
PREFIX = "chaos"
EVENT_TOPIC = f"{PREFIX}/sim-rig-01/event"


class Consumer:
    """A fleet consumer: a persistent session (queued for while it is away), reconnecting
    whenever the broker drops it."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.events: list[dict[str, Any]] = []
        self.connected = asyncio.Event()

    async def run(self) -> None:
        expiry = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        expiry.SessionExpiryInterval = 600
        while True:
            try:
                async with aiomqtt.Client(
                    HOST,
                    self.broker.port,
                    protocol=aiomqtt.ProtocolVersion.V5,
                    identifier="chaos-consumer",
                    clean_start=False,
                    properties=expiry,
                ) as client:
                    await client.subscribe(EVENT_TOPIC, qos=1)
                    self.connected.set()
                    async for message in client.messages:
                        if isinstance(message.payload, bytes):
                            self.events.append(json.loads(message.payload))
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.05)

    def numbers(self) -> list[int]:
        return [e["details"]["n"] for e in self.events if e["kind"] == "decision"]


async def test_no_event_is_lost_when_the_broker_is_killed_or_stopped(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker", persistent=True)
    broker.start()
    consumer = Consumer(broker)
    consuming = asyncio.create_task(consumer.run())
    config = rig_config(tmp_path, modules=())
    config = dataclasses.replace(
        config,
        mqtt=dataclasses.replace(
            config.mqtt,
            enabled=True,
            host=broker.host,
            port=broker.port,
            topic_prefix=PREFIX,
            discovery=False,
            reconnect_min_s=0.05,
            reconnect_max_s=0.5,
        ),
    )
    agent = Agent(config, notifier=SystemdNotifier({}))
    running = asyncio.create_task(agent.run())
    produced = 0

    async def produce(seconds: float) -> None:
        nonlocal produced
        for _ in range(int(seconds / 0.02)):
            agent.events.publish(Event(EventKind.DECISION, None, "chaos", details={"n": produced}))
            produced += 1
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(consumer.connected.wait(), 10)
        await produce(1.0)
        broker.stop()  # SIGTERM: mosquitto saves the consumer's session on the way out
        await produce(1.0)
        broker.start()
        await produce(1.0)
        broker.kill()  # SIGKILL: nothing saved since
        await produce(1.0)
        broker.start()
        await produce(1.0)
        await until(lambda: set(consumer.numbers()) >= set(range(produced)), 30, "every event")
    finally:
        agent.supervisor.request_stop("test over")
        assert await asyncio.wait_for(running, 15) == 0
        consuming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consuming
        broker.stop()
    numbers = consumer.numbers()
    first_seen = list(dict.fromkeys(numbers))
    assert first_seen == list(range(produced))  # all of them, in order
    seqs = list(dict.fromkeys(e["seq"] for e in consumer.events))
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap in the stream
    print(f"{produced} events, {len(numbers) - produced} repeats across the broker kills")
