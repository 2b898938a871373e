"""MQTT service against a real mosquitto, watched by real aiomqtt subscribers."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hashbay.agent.core.events import Event, EventBus, EventKind
from hashbay.agent.core.status import Health, HealthLevel, Reason, SlotState, SlotStatus
from hashbay.agent.daemon.config import MqttSection
from hashbay.agent.interfaces.commands import Command, CommandError
from hashbay.agent.interfaces.discovery import MINER_FIELDS, clear_messages, discovery_messages
from hashbay.agent.interfaces.mqtt import STATE_CHECK_S, MqttPublisher, changed, rounded
from hashbay.agent.interfaces.mqtt_topics import Topics
from hashbay.agent.interfaces.spool import EventSpool
from hashbay.tools.broker import HOST, MOSQUITTO_PASSWD, Broker, make_tls_files, mosquitto_available

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed")

MINER = "m1"
TOPICS = Topics("hb", MINER)
# On connect, without discovery: status, 5 clears of slots 3-7, miner state, 3 slot states.
CONNECT_MESSAGES = 1 + 5 + 1 + 3


def mqtt_settings(broker: Broker, **changes: Any) -> MqttSection:
    base = MqttSection(
        host=broker.host,
        port=broker.port,
        topic_prefix="hb",
        keepalive_s=5,
        discovery=False,
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
    )
    return replace(base, **changes)


def health(score: float, hashrate_ths: float) -> Health:
    return Health(
        score=score,
        level=HealthLevel.OK,
        reasons=(),
        hashrate_hs=hashrate_ths * 1e12,
        expected_hs=80e12,
        hw_error_rate=0.0002,
        chips_answering=126,
        chips_total=126,
    )


class FakeAgent:
    """Stands in for the agent: the state it would publish and a command handler."""

    def __init__(self, slots: int = 3) -> None:
        self.miner: dict[str, Any] = {
            "hashrate_hs": 240.0e12,
            "psu_input_power_w": 3210.4,
            "fan_noise_dba": 61.73,
        }
        self.slots = [
            SlotStatus(
                n,
                SlotState.HASHING,
                serial=f"HB{n:04d}",
                model="BM1368x126",
                health=health(97.5, 80.1234),
                temps_c=(61.0625, 63.4375),
                board_v=13.2012,
                power_w=1043.77,
                freq_mhz=490.0,
                since=1_732_540_000.123,
            )
            for n in range(slots)
        ]
        self.calls: list[Command] = []
        self.refuse: str | None = None

    def miner_state(self) -> dict[str, Any]:
        return dict(self.miner)

    def slot_states(self) -> list[SlotStatus]:
        return list(self.slots)

    async def handle(self, command: Command) -> dict[str, Any]:
        self.calls.append(command)
        if self.refuse:
            raise CommandError(self.refuse)
        return {"slot": command.args["slot"], "accepted": True}


class Listener:
    """A real subscriber that records what arrives, and when."""

    def __init__(self, broker: Broker, *topics: str, **client: Any) -> None:
        self.broker = broker
        self.topics = topics or ("hb/#",)
        self.client_args = client
        self.received: list[tuple[float, aiomqtt.Message]] = []

    async def __aenter__(self) -> Listener:
        self.client = aiomqtt.Client(
            HOST,
            self.broker.port,
            protocol=aiomqtt.ProtocolVersion.V5,
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            **self.client_args,
        )
        await self.client.__aenter__()
        for topic in self.topics:
            await self.client.subscribe(topic, qos=1)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        with suppress(aiomqtt.MqttError):
            async for message in self.client.messages:
                self.received.append((time.monotonic(), message))

    async def __aexit__(self, *exc: object) -> None:
        self._reader.cancel()
        with suppress(asyncio.CancelledError):
            await self._reader
        with suppress(aiomqtt.MqttError):
            await self.client.__aexit__(None, None, None)

    def on(self, topic: str) -> list[aiomqtt.Message]:
        return [m for _, m in self.received if m.topic.matches(topic)]

    def payloads(self, topic: str) -> list[bytes]:
        return [bytes(m.payload) for m in self.on(topic)]

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.payloads(TOPICS.event)]

    async def wait_for(self, topic: str, count: int = 1, timeout_s: float = 5.0) -> None:
        await until(lambda: len(self.on(topic)) >= count, timeout_s, f"{count} on {topic}")


async def until(condition: Callable[[], bool], timeout_s: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.005)


@asynccontextmanager
async def running(publisher: MqttPublisher) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(publisher.run())
    try:
        yield task
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            async with asyncio.timeout(3):  # a service that ignores cancellation fails here
                await task


def properties(packet_type: int, **values: Any) -> Properties:
    found = Properties(packet_type)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(found, name, value)
    return found


def correlation_of(message: aiomqtt.Message) -> Any:
    return getattr(message.properties, "CorrelationData", None)


def make_publisher(
    settings: MqttSection, spool: EventSpool, agent: FakeAgent, **kwargs: Any
) -> MqttPublisher:
    return MqttPublisher(
        settings,
        MINER,
        len(agent.slots),
        spool,
        agent.miner_state,
        agent.slot_states,
        agent.handle,
        **kwargs,
    )


def fault(n: int) -> Event:
    return Event(EventKind.FAULT, n % 3, f"fault {n}", serial="HB0001", details={"n": n})


def numbers(events: list[dict[str, Any]]) -> list[int]:
    return [e["details"]["n"] for e in events]


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[EventSpool]:
    with EventSpool(tmp_path / "events.db", 1000) as events:
        yield events


# -- status: birth and will ---------------------------------------------------------------


async def test_birth_is_retained_online_and_clean_shutdown_leaves_offline(
    broker: Broker, spool: EventSpool
) -> None:
    publisher = make_publisher(mqtt_settings(broker), spool, FakeAgent())
    async with running(publisher):
        await until(lambda: publisher.stats.messages_sent >= CONNECT_MESSAGES)
        async with Listener(broker, TOPICS.status) as late:
            await late.wait_for(TOPICS.status)
            assert late.payloads(TOPICS.status) == [b"online"]
            assert late.on(TOPICS.status)[0].retain
        assert publisher.stats.connected
    async with Listener(broker, TOPICS.status) as late:
        await late.wait_for(TOPICS.status)
        assert late.payloads(TOPICS.status) == [b"offline"]
    assert not publisher.stats.connected


CHILD = """
import asyncio, sys
from pathlib import Path
from hashbay.agent.daemon.config import MqttSection
from hashbay.agent.interfaces.mqtt import MqttPublisher
from hashbay.agent.interfaces.spool import EventSpool

async def handle(command):
    return {}

settings = MqttSection(host="127.0.0.1", port=int(sys.argv[1]), topic_prefix="hb", discovery=False)
spool = EventSpool(Path(sys.argv[2]), 100)
asyncio.run(MqttPublisher(settings, "m1", 1, spool, dict, list, handle).run())
"""


async def test_last_will_marks_the_miner_offline_when_the_agent_dies(
    broker: Broker, tmp_path: Path
) -> None:
    child = await asyncio.create_subprocess_exec(
        *[sys.executable, "-c", CHILD, str(broker.port), str(tmp_path / "child.db")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with Listener(broker, TOPICS.status) as listener:
            await until(lambda: listener.payloads(TOPICS.status)[-1:] == [b"online"], 10)
            child.kill()  # no chance to say goodbye: the broker must publish the will
            await until(lambda: listener.payloads(TOPICS.status)[-1:] == [b"offline"])
    finally:
        with suppress(ProcessLookupError):
            child.kill()
        await child.wait()
    async with Listener(broker, TOPICS.status) as late:
        await late.wait_for(TOPICS.status)
        assert late.payloads(TOPICS.status) == [b"offline"]


# -- retained state -----------------------------------------------------------------------


async def test_late_subscriber_gets_retained_miner_and_slot_state(
    broker: Broker, spool: EventSpool
) -> None:
    agent = FakeAgent()
    publisher = make_publisher(mqtt_settings(broker), spool, agent)
    async with running(publisher):
        await until(lambda: publisher.stats.messages_sent >= CONNECT_MESSAGES)
        async with Listener(broker) as late:
            await late.wait_for(TOPICS.slot_state(2))
            await late.wait_for(TOPICS.state)
            miner = json.loads(late.payloads(TOPICS.state)[0])
            assert miner["psu_input_power_w"] == 3210.0  # 4 significant digits
            assert miner["spool"] == {
                "pending": 0,
                "dropped": 0,
                "stream": spool.stream,
                "durable": True,
            }
            for n in range(3):
                message = late.on(TOPICS.slot_state(n))[0]
                assert message.retain
                slot = json.loads(message.payload)
                assert slot["slot"] == n
                assert slot["state"] == "hashing"
                assert slot["serial"] == f"HB{n:04d}"
                assert slot["temps_c"] == [61.06, 63.44]
                assert slot["since"] == 1_732_540_000
            assert late.payloads(TOPICS.status) == [b"online"]


async def test_unchanged_state_is_not_republished_but_a_change_is_at_once(
    broker: Broker, spool: EventSpool
) -> None:
    agent = FakeAgent()
    publisher = make_publisher(mqtt_settings(broker), spool, agent)
    async with Listener(broker) as listener, running(publisher):
        await listener.wait_for(TOPICS.slot_state(2))
        for n in range(20):  # 20 polls, noise within the deadbands
            agent.slots[1] = replace(
                agent.slots[1],
                temps_c=(61.0625 + (n % 3) * 0.25, 63.4375),
                power_w=1043.77 + n % 4,
                health=health(97.5 - n % 2, 80.1234 + (n % 5) * 0.1),
            )
            agent.miner["psu_input_power_w"] = 3210.4 + n % 7
            publisher.notify_changed()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert len(listener.on(TOPICS.slot_state(1))) == 1
        assert len(listener.on(TOPICS.state)) == 1

        changed_at = time.monotonic()
        agent.slots[1] = replace(agent.slots[1], state=SlotState.DRAINING, detail="swap prepared")
        publisher.notify_changed()
        await listener.wait_for(TOPICS.slot_state(1), 2)
        arrived_at, message = [
            r for r in listener.received if r[1].topic.matches(TOPICS.slot_state(1))
        ][-1]
        assert json.loads(message.payload)["state"] == "draining"
        assert arrived_at - changed_at < STATE_CHECK_S / 2  # woken, not found by polling
        assert len(listener.on(TOPICS.slot_state(0))) == 1  # the others stay quiet

        agent.slots[2] = replace(agent.slots[2], temps_c=(61.0625, 66.0))  # +2.6 °C
        publisher.notify_changed()
        await listener.wait_for(TOPICS.slot_state(2), 2)


async def test_state_is_republished_at_least_every_interval(
    broker: Broker, spool: EventSpool
) -> None:
    publisher = make_publisher(mqtt_settings(broker, state_interval_s=0.3), spool, FakeAgent())
    async with Listener(broker, TOPICS.slot_state(0)) as listener, running(publisher):
        await listener.wait_for(TOPICS.slot_state(0), 3, timeout_s=2)
        times = [at for at, _ in listener.received]
        assert 0.2 < times[2] - times[1] < 0.6


async def test_steady_state_traffic_stays_far_below_a_kilobyte_per_second(
    broker: Broker, spool: EventSpool
) -> None:
    """A 3-slot miner polled at 1 Hz, compressed: 40 polls of realistic noise."""
    agent = FakeAgent()
    publisher = make_publisher(mqtt_settings(broker), spool, agent)
    async with running(publisher):
        await until(lambda: publisher.stats.messages_sent >= CONNECT_MESSAGES)
        before = publisher.stats.bytes_sent
        for n in range(40):
            for slot in range(3):
                agent.slots[slot] = replace(
                    agent.slots[slot],
                    temps_c=(61.0 + (n * 7 % 10) / 10, 63.0 + (n * 3 % 10) / 10),
                    power_w=1040.0 + (n * 13 % 20),
                    board_v=13.2 + (n % 3) / 100,
                    health=health(96.0 + n % 3, 79.5 + (n * 11 % 10) / 10),
                )
            publisher.notify_changed()
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        assert publisher.stats.bytes_sent == before  # nothing worth sending before the interval
    slot_bytes = len(json.dumps(rounded(agent.slots[0].to_json()), separators=(",", ":")))
    per_interval = 3 * slot_bytes + 300
    assert per_interval / 30.0 < 1024 / 10  # ≪ 1 KB/s with the default 30 s interval


async def test_stale_slot_state_beyond_the_configured_slots_is_cleared(
    broker: Broker, spool: EventSpool
) -> None:
    async with aiomqtt.Client(HOST, broker.port, protocol=aiomqtt.ProtocolVersion.V5) as old:
        await old.publish(TOPICS.slot_state(5), b'{"slot": 5}', qos=1, retain=True)
    publisher = make_publisher(mqtt_settings(broker), spool, FakeAgent())
    async with running(publisher):
        await until(lambda: publisher.stats.messages_sent >= CONNECT_MESSAGES)
        async with Listener(broker) as late:
            await late.wait_for(TOPICS.slot_state(2))
            await asyncio.sleep(0.05)
            assert late.on(TOPICS.slot_state(5)) == []


# -- events -------------------------------------------------------------------------------


async def test_events_arrive_in_order_at_qos_1(broker: Broker, spool: EventSpool) -> None:
    bus = EventBus(sink=spool)
    publisher = make_publisher(mqtt_settings(broker), spool, FakeAgent())
    async with Listener(broker, TOPICS.event) as listener, running(publisher):
        await until(lambda: publisher.stats.connected)
        for n in range(60):
            bus.publish(fault(n))
            await listener.wait_for(TOPICS.event, n + 1)
        events = listener.events()
        assert numbers(events) == list(range(60))
        assert [e["seq"] for e in events] == list(range(events[0]["seq"], events[0]["seq"] + 60))
        assert {e["stream"] for e in events} == {spool.stream}
        assert all(m.qos == 1 and not m.retain for m in listener.on(TOPICS.event))
        await until(lambda: spool.pending_count == 0)
        assert publisher.stats.events_delivered == 60


async def test_events_raised_during_an_outage_arrive_once_and_in_order(
    tmp_path: Path, spool: EventSpool
) -> None:
    broker = Broker(tmp_path / "persistent", persistent=True)
    broker.start()
    try:
        publisher = make_publisher(mqtt_settings(broker), spool, FakeAgent())
        session = {"identifier": "fleet-consumer", "clean_start": False}
        expiry = properties(PacketTypes.CONNECT, SessionExpiryInterval=300)
        async with running(publisher):
            async with Listener(broker, TOPICS.event, properties=expiry, **session) as listener:
                for n in range(5):
                    spool.append(fault(n))
                await listener.wait_for(TOPICS.event, 5)
                await until(lambda: spool.pending_count == 0)
                await asyncio.sleep(0.05)  # let the consumer's PUBACKs reach the broker
                broker.stop()
                await until(lambda: not publisher.stats.connected)
                for n in range(5, 25):
                    spool.append(fault(n))
                await asyncio.sleep(0.3)  # a few failed reconnects
                before = listener.events()
            broker.start()  # same port; the consumer's session comes back with it
            async with Listener(broker, TOPICS.event, properties=expiry, **session) as after:
                await until(lambda: len(before) + len(after.events()) >= 25)
                await asyncio.sleep(0.2)  # nothing more may come
                events = before + after.events()
        assert numbers(events) == list(range(25))
        assert len({e["seq"] for e in events}) == 25
        assert publisher.stats.reconnects >= 2
    finally:
        broker.stop()


async def test_spool_persists_across_a_publisher_restart(broker: Broker, tmp_path: Path) -> None:
    path = tmp_path / "restart.db"
    agent = FakeAgent()
    async with Listener(broker, TOPICS.event) as listener:
        with EventSpool(path, 100) as first:
            publisher = make_publisher(mqtt_settings(broker), first, agent)
            async with running(publisher):
                first.append(fault(0))
                first.append(fault(1))
                await listener.wait_for(TOPICS.event, 2)
                await until(lambda: first.pending_count == 0)
            first.append(fault(2))  # the agent stopped before these went out
            first.append(fault(3))
        with EventSpool(path, 100) as second:
            assert second.pending_count == 2
            async with running(make_publisher(mqtt_settings(broker), second, agent)):
                await listener.wait_for(TOPICS.event, 4)
                await until(lambda: second.pending_count == 0)
            await asyncio.sleep(0.05)
        events = listener.events()
    assert numbers(events) == [0, 1, 2, 3]
    assert [e["seq"] for e in events] == [1, 2, 3, 4]


async def test_full_spool_drops_the_oldest_and_the_state_says_how_many(
    broker: Broker, tmp_path: Path
) -> None:
    with EventSpool(tmp_path / "small.db", 10) as small:
        for n in range(15):  # raised while nothing could be sent
            small.append(fault(n))
        publisher = make_publisher(mqtt_settings(broker), small, FakeAgent())
        async with Listener(broker) as listener, running(publisher):
            await listener.wait_for(TOPICS.event, 10)
            await asyncio.sleep(0.05)
            events = listener.events()
            assert numbers(events) == list(range(5, 15))
            assert events[0]["seq"] == 6  # the gap shows the loss
            state = json.loads(listener.payloads(TOPICS.state)[-1])
            assert state["spool"]["dropped"] == 5


async def test_event_the_broker_refuses_stays_in_the_spool_until_accepted(
    tmp_path: Path, spool: EventSpool
) -> None:
    refusing = Broker(tmp_path / "acl", acl=f"topic readwrite #\ntopic deny {TOPICS.event}\n")
    refusing.start()
    try:
        publisher = make_publisher(mqtt_settings(refusing), spool, FakeAgent())
        async with running(publisher):
            spool.append(fault(0))
            await until(lambda: "Not authorized" in publisher.stats.last_error)
            assert spool.pending_count == 1
            assert publisher.stats.events_delivered == 0

            (refusing.directory / "acl").write_text("topic readwrite #\n")  # ACL fixed
            refusing.stop()
            refusing.start()
            async with Listener(refusing, TOPICS.event) as listener:
                await listener.wait_for(TOPICS.event)
                assert numbers(listener.events()) == [0]
            await until(lambda: spool.pending_count == 0)
    finally:
        refusing.stop()


# -- commands -----------------------------------------------------------------------------


async def request(
    client: aiomqtt.Client,
    payload: bytes,
    *,
    response_topic: str | None = "test/replies",
    correlation: bytes | None = b"req-1",
) -> None:
    values: dict[str, Any] = {}
    if response_topic is not None:
        values["ResponseTopic"] = response_topic
    if correlation is not None:
        values["CorrelationData"] = correlation
    await client.publish(
        TOPICS.cmd, payload, qos=1, properties=properties(PacketTypes.PUBLISH, **values)
    )


@asynccontextmanager
async def commanding(
    broker: Broker, spool: EventSpool, agent: FakeAgent
) -> AsyncIterator[tuple[Listener, MqttPublisher]]:
    publisher = make_publisher(mqtt_settings(broker), spool, agent)
    topics = ("test/replies", TOPICS.cmd_reply, TOPICS.state)
    async with Listener(broker, *topics) as replies, running(publisher):
        await replies.wait_for(TOPICS.state)  # subscribed by now
        yield replies, publisher


async def test_valid_command_reaches_the_handler_and_the_reply_its_requester(
    broker: Broker, spool: EventSpool
) -> None:
    agent = FakeAgent()
    async with commanding(broker, spool, agent) as (replies, _):
        await request(replies.client, b'{"command": "locate", "slot": 2, "mode": "blink"}')
        await replies.wait_for("test/replies")
        reply = replies.on("test/replies")[0]
        assert json.loads(reply.payload) == {"ok": True, "result": {"slot": 2, "accepted": True}}
        assert correlation_of(reply) == b"req-1"
        assert agent.calls == [Command("locate", {"slot": 2, "mode": "blink"})]


async def test_command_without_response_topic_is_answered_on_the_reply_topic(
    broker: Broker, spool: EventSpool
) -> None:
    agent = FakeAgent()
    async with commanding(broker, spool, agent) as (replies, _):
        await request(
            replies.client,
            b'{"command": "prepare_swap", "slot": 0}',
            response_topic=None,
            correlation=b"\x00\x01",
        )
        await replies.wait_for(TOPICS.cmd_reply)
        reply = replies.on(TOPICS.cmd_reply)[0]
        assert json.loads(reply.payload)["ok"] is True
        assert correlation_of(reply) == b"\x00\x01"


async def test_bad_commands_get_an_error_reply_and_never_reach_the_handler(
    broker: Broker, spool: EventSpool
) -> None:
    bad = {
        "malformed JSON": (b'{"command": "locate", ', "not valid JSON"),
        "unknown command": (b'{"command": "self_destruct"}', "unknown command"),
        "missing key": (b'{"command": "locate", "slot": 1}', 'missing key "mode"'),
        "extra key": (b'{"command": "cancel_swap", "slot": 1, "now": 1}', 'unexpected key "now"'),
        "wrong type": (b'{"command": "cancel_swap", "slot": "one"}', "must be an integer"),
        "bool as slot": (b'{"command": "cancel_swap", "slot": true}', "got true"),
        "slot out of range": (b'{"command": "cancel_swap", "slot": 3}', "from 0 to 2, got 3"),
        "bad enum": (b'{"command": "locate", "slot": 1, "mode": "strobe"}', "one of"),
        "oversize": (
            b'{"command": "cancel_swap", "slot": 1, "x": "' + b"x" * 5000 + b'"}',
            "at most 4096",
        ),
    }
    agent = FakeAgent()
    async with commanding(broker, spool, agent) as (replies, _):
        for n, (name, (payload, expected)) in enumerate(bad.items()):
            await request(replies.client, payload, correlation=name.encode())
            await replies.wait_for("test/replies", n + 1)
            reply = replies.on("test/replies")[n]
            body = json.loads(reply.payload)
            assert correlation_of(reply) == name.encode()
            assert body["ok"] is False, name
            assert body["code"] == "invalid", name
            assert expected in body["error"], (name, body["error"])
    assert agent.calls == []


async def test_handler_refusal_becomes_an_error_reply(broker: Broker, spool: EventSpool) -> None:
    agent = FakeAgent()
    agent.refuse = "slot 2 is empty"
    async with commanding(broker, spool, agent) as (replies, publisher):
        await request(replies.client, b'{"command": "prepare_swap", "slot": 2}')
        await replies.wait_for("test/replies")
        body = json.loads(replies.payloads("test/replies")[0])
        assert body == {"ok": False, "code": "refused", "error": "slot 2 is empty"}
        assert publisher.stats.commands_handled == 1


async def test_handler_crash_becomes_an_error_reply_not_a_crash(
    broker: Broker, spool: EventSpool
) -> None:
    agent = FakeAgent()

    async def broken(command: Command) -> dict[str, Any]:
        raise RuntimeError("led driver gone")

    publisher = MqttPublisher(
        mqtt_settings(broker), MINER, 3, spool, agent.miner_state, agent.slot_states, broken
    )
    async with Listener(broker, "test/replies", TOPICS.state) as replies, running(publisher):
        await replies.wait_for(TOPICS.state)
        await request(replies.client, b'{"command": "locate", "slot": 0, "mode": "on"}')
        await replies.wait_for("test/replies")
        body = json.loads(replies.payloads("test/replies")[0])
        assert body == {
            "ok": False,
            "code": "failed",
            "error": "locate failed inside the agent: led driver gone",
        }
        assert publisher.stats.connected


@pytest.mark.parametrize(
    "response_topic",
    [
        "test/#",
        "test/+/x",
        f"{TOPICS.status}",
        f"{TOPICS.state}",
        "hb/other-miner/state",
        "hb",
        "homeassistant/sensor/hashbay_m1/hashrate/config",
        "$SYS/broker/x",
    ],
)
async def test_a_reply_topic_inside_what_the_agent_publishes_is_refused_on_cmd_reply(
    broker: Broker, spool: EventSpool, response_topic: str
) -> None:
    agent = FakeAgent()
    async with commanding(broker, spool, agent) as (replies, publisher):
        payload = b'{"command": "cancel_swap", "slot": 1}'
        await request(replies.client, payload, response_topic=response_topic)
        await replies.wait_for(TOPICS.cmd_reply)
        body = json.loads(replies.payloads(TOPICS.cmd_reply)[0])
        assert body["ok"] is False
        assert body["code"] == "invalid"
        assert "ResponseTopic" in body["error"]
        assert correlation_of(replies.on(TOPICS.cmd_reply)[0]) == b"req-1"
        assert publisher.stats.connected
    assert agent.calls == []
    # Nothing but the agent's own publications reached its state topic.
    assert all(json.loads(p).get("ok") is None for p in replies.payloads(TOPICS.state))


async def test_a_reply_topic_may_be_the_agents_own_reply_topic(
    broker: Broker, spool: EventSpool
) -> None:
    agent = FakeAgent()
    async with commanding(broker, spool, agent) as (replies, _):
        payload = b'{"command": "cancel_swap", "slot": 1}'
        await request(replies.client, payload, response_topic=TOPICS.cmd_reply)
        await replies.wait_for(TOPICS.cmd_reply)
        assert json.loads(replies.payloads(TOPICS.cmd_reply)[0])["ok"] is True


async def test_retained_command_is_never_executed(broker: Broker, spool: EventSpool) -> None:
    async with aiomqtt.Client(HOST, broker.port, protocol=aiomqtt.ProtocolVersion.V5) as old:
        await old.publish(TOPICS.cmd, b'{"command": "prepare_swap", "slot": 1}', qos=1, retain=True)
    agent = FakeAgent()
    async with commanding(broker, spool, agent):
        await asyncio.sleep(0.1)
    assert agent.calls == []


async def test_a_command_published_retained_while_subscribed_is_refused_not_run(
    broker: Broker, spool: EventSpool
) -> None:
    agent = FakeAgent()
    async with commanding(broker, spool, agent) as (replies, _):
        await replies.client.publish(
            TOPICS.cmd,
            b'{"command": "prepare_swap", "slot": 1}',
            qos=1,
            retain=True,
            properties=properties(
                PacketTypes.PUBLISH, ResponseTopic="test/replies", CorrelationData=b"r"
            ),
        )
        await replies.wait_for("test/replies")
        body = json.loads(replies.payloads("test/replies")[0])
        assert body["ok"] is False
        assert "retained" in body["error"]
        await replies.client.publish(TOPICS.cmd, b"", qos=1, retain=True)  # clear it
    assert agent.calls == []


async def test_a_flood_gets_one_reply_per_command_and_the_excess_is_busy(
    broker: Broker, spool: EventSpool
) -> None:
    agent = FakeAgent()
    publisher = make_publisher(mqtt_settings(broker, commands_per_s=50.0), spool, agent)
    async with Listener(broker, "test/replies", TOPICS.state) as replies, running(publisher):
        await replies.wait_for(TOPICS.state)
        started = time.monotonic()
        sends = []
        for n in range(1000):
            payload = b'{"command": "locate", "slot": 1, "mode": "on"}' if n % 2 else b"{not json"
            values = {"ResponseTopic": "test/replies", "CorrelationData": str(n).encode()}
            sends.append(
                replies.client.publish(
                    TOPICS.cmd, payload, qos=1, properties=properties(PacketTypes.PUBLISH, **values)
                )
            )
        await asyncio.gather(*sends)
        await replies.wait_for("test/replies", 1000, timeout_s=30)
        elapsed_s = time.monotonic() - started
        await asyncio.sleep(0.3)  # nothing more may come
        answered = replies.on("test/replies")
        assert len(answered) == 1000
        assert sorted(int(correlation_of(m)) for m in answered) == list(range(1000))
        codes = [json.loads(m.payload).get("code", "ok") for m in answered]
        assert set(codes) <= {"ok", "invalid", "busy"}
        taken = 1000 - codes.count("busy")
        assert 0 < taken <= 50 + 50 * elapsed_s + 1  # the bucket: a burst of 50, then 50/s
        assert len(agent.calls) == codes.count("ok")
        assert publisher.stats.connected


# -- connection settings ------------------------------------------------------------------


@pytest.mark.skipif(MOSQUITTO_PASSWD is None, reason="mosquitto_passwd is not installed")
async def test_username_and_password_from_a_file(tmp_path: Path, spool: EventSpool) -> None:
    secured = Broker(tmp_path / "auth", users={"miner-m1": "s3cret pass"})
    secured.start()
    try:
        password_file = tmp_path / "mqtt-password"
        password_file.write_text("s3cret pass\nignored second line\n")
        settings = mqtt_settings(secured, username="miner-m1", password_file=str(password_file))
        publisher = make_publisher(settings, spool, FakeAgent())
        async with running(publisher):
            await until(lambda: publisher.stats.connected)

        password_file.write_text("wrong\n")
        publisher = make_publisher(settings, spool, FakeAgent())
        async with running(publisher):
            await until(lambda: publisher.stats.reconnects >= 2)
            assert not publisher.stats.connected
            assert (
                "Not authorized" in publisher.stats.last_error
                or "password" in publisher.stats.last_error
            )
    finally:
        secured.stop()


@pytest.mark.skipif(MOSQUITTO_PASSWD is None, reason="mosquitto_passwd is not installed")
async def test_a_refused_publisher_stops_when_cancelled_at_any_moment(
    tmp_path: Path, spool: EventSpool
) -> None:
    """Cancelled while a refused connect is under way (aiomqtt's wait_for may swallow the
    cancel on Python 3.11), it must still stop, not retry for ever."""
    secured = Broker(tmp_path / "auth", users={"miner-m1": "right"})
    secured.start()
    try:
        password_file = tmp_path / "mqtt-password"
        password_file.write_text("wrong\n")
        settings = mqtt_settings(
            secured, username="miner-m1", password_file=str(password_file), reconnect_max_s=0.05
        )
        for n in range(30):
            publisher = make_publisher(settings, spool, FakeAgent())
            async with running(publisher):  # fails if the task outlives its cancel by 3 s
                await asyncio.sleep(0.003 * n)
    finally:
        secured.stop()


async def test_unreadable_password_file_is_a_clear_error_not_a_crash(
    broker: Broker, spool: EventSpool, tmp_path: Path
) -> None:
    settings = mqtt_settings(broker, username="miner-m1", password_file=str(tmp_path / "missing"))
    publisher = make_publisher(settings, spool, FakeAgent())
    async with running(publisher) as task:
        await until(lambda: publisher.stats.reconnects >= 2)
        assert not task.done()
    assert publisher.stats.last_error.startswith("mqtt.password_file: cannot read")
    assert "No such file" in publisher.stats.last_error
    assert publisher.stats.messages_sent == 0


async def test_tls_setup_error_is_a_config_error_with_backoff(
    broker: Broker, spool: EventSpool, tmp_path: Path
) -> None:
    settings = mqtt_settings(broker, tls=True, ca_file=str(tmp_path / "no-ca.pem"))
    publisher = make_publisher(settings, spool, FakeAgent())
    async with running(publisher):
        await asyncio.sleep(0.5)
    assert publisher.stats.last_error.startswith("mqtt.ca_file: cannot load")
    assert 1 <= publisher.stats.reconnects <= 6  # 0.05 s doubling to 0.2 s: no spinning


async def test_connects_over_tls_with_the_configured_ca(tmp_path: Path, spool: EventSpool) -> None:
    try:
        files = make_tls_files(tmp_path / "tls")
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot make certificates: {exc}")
    secured = Broker(tmp_path / "tls-broker", tls=files)
    secured.start()
    try:
        settings = mqtt_settings(secured, tls=True, ca_file=str(files.ca))
        publisher = make_publisher(settings, spool, FakeAgent())
        async with running(publisher):
            await until(lambda: publisher.stats.messages_sent >= CONNECT_MESSAGES)
    finally:
        secured.stop()


async def test_broker_outage_is_retried_with_bounded_backoff(
    broker: Broker, spool: EventSpool
) -> None:
    publisher = make_publisher(mqtt_settings(broker), spool, FakeAgent())
    async with running(publisher):
        await until(lambda: publisher.stats.connected)
        broker.stop()
        await until(lambda: not publisher.stats.connected)
        start = publisher.stats.reconnects
        await asyncio.sleep(1.0)
        attempts = publisher.stats.reconnects - start
        assert 3 <= attempts <= 12  # ~0.1-0.2 s apart once the delay reached its cap
        broker.start()
        await until(lambda: publisher.stats.connected, 2)


async def test_wake_event_makes_state_publishing_prompt(broker: Broker, spool: EventSpool) -> None:
    agent = FakeAgent()
    wake = asyncio.Event()
    publisher = make_publisher(mqtt_settings(broker), spool, agent, wake=wake)
    async with Listener(broker, TOPICS.slot_state(0)) as listener, running(publisher):
        await listener.wait_for(TOPICS.slot_state(0))
        agent.slots[0] = replace(agent.slots[0], locate="blink")
        wake.set()
        changed_at = time.monotonic()
        await listener.wait_for(TOPICS.slot_state(0), 2, timeout_s=0.5)
        assert listener.received[-1][0] - changed_at < STATE_CHECK_S / 2


# -- Home Assistant discovery -------------------------------------------------------------


def test_discovery_payloads_have_what_home_assistant_needs() -> None:
    messages = discovery_messages(TOPICS, "homeassistant", 3)
    assert len(messages) == 4 + 3 * 5
    configs = {m.topic: json.loads(m.payload) for m in messages}
    unique_ids = [c["unique_id"] for c in configs.values()]
    assert len(set(unique_ids)) == len(unique_ids)
    for topic, config in configs.items():
        assert topic.startswith("homeassistant/") and topic.endswith("/config")
        assert {"name", "unique_id", "state_topic", "device", "origin"} <= config.keys()
        assert config["device"]["identifiers"]
        if "value_template" in config:
            assert config["availability_topic"] == TOPICS.status
    slot1 = [c for c in configs.values() if c["device"]["identifiers"] == ["hashbay_m1_slot1"]]
    assert len(slot1) == 5
    assert {c["state_topic"] for c in slot1} == {TOPICS.slot_state(1)}
    assert all(c["device"]["via_device"] == "hashbay_m1" for c in slot1)
    by_name = {c["name"]: c for c in slot1}
    assert by_name["Temperature"]["device_class"] == "temperature"
    assert by_name["Temperature"]["unit_of_measurement"] == "°C"
    assert by_name["Power"]["unit_of_measurement"] == "W"
    assert by_name["Hashrate"]["unit_of_measurement"] == "TH/s"
    assert by_name["Health score"]["unit_of_measurement"] == "%"
    assert "hashing" in by_name["State"]["options"]
    assert "state_class" not in by_name["State"]
    miner = {c["name"]: c for c in configs.values() if c["device"]["identifiers"] == ["hashbay_m1"]}
    assert set(miner) == {"Hashrate", "PSU input power", "Fan noise", "Online"}
    assert miner["Fan noise"]["device_class"] == "sound_pressure"
    for field in MINER_FIELDS:
        assert any(field in c.get("value_template", "") for c in miner.values())


def test_discovery_identifiers_are_stable_per_miner_and_slot() -> None:
    again = discovery_messages(TOPICS, "homeassistant", 3)
    assert again == discovery_messages(TOPICS, "homeassistant", 3)
    other = discovery_messages(Topics("hb", "m2"), "homeassistant", 3)
    assert not {m.topic for m in again} & {m.topic for m in other}


def test_clearing_discovery_is_empty_retained_configs_on_the_same_topics() -> None:
    published = {m.topic for m in discovery_messages(TOPICS, "ha", 3)}
    cleared = clear_messages(TOPICS, "ha", range(3), miner_too=True)
    assert {m.topic for m in cleared} == published
    assert all(m.payload == b"" for m in cleared)


async def test_discovery_is_published_retained_on_connect(
    broker: Broker, spool: EventSpool
) -> None:
    settings = mqtt_settings(broker, discovery=True, discovery_prefix="ha")
    publisher = make_publisher(settings, spool, FakeAgent())
    async with running(publisher):
        await until(lambda: publisher.stats.messages_sent >= CONNECT_MESSAGES + 19 + 25)
        async with Listener(broker, "ha/#") as late:
            await late.wait_for("ha/#", 19)
            assert all(m.retain for m in late.on("ha/#"))
            for payload in late.payloads("ha/#"):
                assert json.loads(payload)["unique_id"].startswith("hashbay_m1")


# -- the change policy --------------------------------------------------------------------


def test_change_policy_ignores_noise_and_prose_but_not_what_matters() -> None:
    old = rounded(FakeAgent().slots[0].to_json())

    def with_(**changes: Any) -> Any:
        return rounded(replace(FakeAgent().slots[0], **changes).to_json())

    assert not changed(old, with_(temps_c=(62.5, 63.4375)))
    assert changed(old, with_(temps_c=(64.0, 63.4375)))
    assert not changed(old, with_(power_w=1080.0))
    assert changed(old, with_(power_w=1120.0))
    assert changed(old, with_(state=SlotState.FAULT))
    assert changed(old, with_(locate="on"))
    assert changed(old, with_(temps_c=(61.0625, None)))
    reason = Reason("hashrate_low", "hashrate 71.0 TH/s is 12 % below", 10.0)
    worse = with_(health=replace(health(97.5, 80.1234), reasons=(reason,)))
    reworded = Reason("hashrate_low", "hashrate 71.2 TH/s is 11.8 % below", 10.5)
    assert changed(old, worse)
    assert not changed(worse, with_(health=replace(health(97.5, 80.1234), reasons=(reworded,))))


def test_rounding_keeps_four_significant_digits_and_every_integer_digit() -> None:
    assert rounded(
        {"a": 61.0625, "b": 0.000123456, "c": 1_732_540_000.123, "d": 8.07123e13, "e": 3}
    ) == {"a": 61.06, "b": 0.0001235, "c": 1_732_540_000.0, "d": 80712300000000.0, "e": 3}
    assert rounded([float("nan"), float("inf"), 0.0, -12.3456]) == [None, None, 0.0, -12.35]


def test_share_counters_are_news_only_once_they_moved_by_a_tenth() -> None:
    pool = {
        "accepted": 1000,
        "rejected": 0,
        "stale": 3,
        "accepted_difficulty": 0.0061,
        "best_share": 1.2e-5,
        "last_share_at": 1_732_540_000,
        "reject_reasons": {},
        "failures": 0,
        "state": "alive",
    }
    miner = {"pools": [pool]}

    def with_(**changes: Any) -> Any:
        return {"pools": [pool | changes]}

    assert not changed(miner, with_(accepted=1001, accepted_difficulty=0.00611))
    assert not changed(miner, with_(last_share_at=1_732_540_030, stale=3))
    assert changed(miner, with_(accepted=1200))
    assert changed(miner, with_(rejected=1))  # the first rejection is news
    assert changed(miner, with_(reject_reasons={"low difficulty share (23)": 1}))
    assert changed(miner, with_(failures=1))  # not a share counter: exact
    assert changed(miner, with_(state="backoff"))
    assert changed(miner, with_(last_share_at=1_732_540_061))
    bus = {"device": "DC-DC", "nacks": 2, "pec_errors": 400, "noisy": True}
    assert not changed(bus, bus | {"pec_errors": 430})
    assert changed(bus, bus | {"noisy": False})
