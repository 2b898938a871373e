"""The whole agent on the simulated rig with a real mosquitto: modules come up to hashing,
are swapped hot (prepared or by surprise), fault, and every step reaches MQTT."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hashbay.agent.core.status import SlotState
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.config import Config
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.tools.broker import HOST, Broker, mosquitto_available
from hashbay.tools.sim.rig import SimRig

from .support import rig_config

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed")
PREFIX = "hb"
MINER = "sim-rig-01"


def agent_config(tmp_path: Path, broker: Broker, *, modules: tuple[int, ...] = (0, 1, 2)) -> Config:
    """The packaged simulated rig, with short boards (42 chips) and fast timings, on `broker`."""
    config = rig_config(tmp_path, modules=modules)
    return dataclasses.replace(
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


class Watcher:
    """A real MQTT subscriber on the agent's topics."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.messages: list[tuple[float, str, bytes, Any]] = []

    async def __aenter__(self) -> Watcher:
        self.client = aiomqtt.Client(HOST, self.broker.port, protocol=aiomqtt.ProtocolVersion.V5)
        await self.client.__aenter__()
        await self.client.subscribe(f"{PREFIX}/#", qos=1)
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        with suppress(aiomqtt.MqttError):
            async for message in self.client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                self.messages.append(
                    (time.monotonic(), str(message.topic), payload, message.properties)
                )

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task
        with suppress(aiomqtt.MqttError):
            await self.client.__aexit__(None, None, None)

    def events(self, kind: str | None = None, slot: int | None = None) -> list[dict[str, Any]]:
        found = []
        for _, topic, payload, _ in self.messages:
            if topic == f"{PREFIX}/{MINER}/event":
                event = json.loads(payload)
                if (kind is None or event["kind"] == kind) and (
                    slot is None or event["slot"] == slot
                ):
                    found.append(event)
        return found

    def slot_state(self, slot: int) -> dict[str, Any] | None:
        for _, topic, payload, _ in reversed(self.messages):
            if topic == f"{PREFIX}/{MINER}/slot/{slot}/state":
                return dict(json.loads(payload))
        return None

    async def request(self, command: dict[str, Any], timeout_s: float = 10) -> dict[str, Any]:
        """A command with an MQTT v5 response topic and correlation data; its reply."""
        reply_topic = f"test-replies/{uuid.uuid4().hex}"  # outside the agent's tree
        correlation = uuid.uuid4().bytes
        await self.client.subscribe(reply_topic, qos=1)
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = reply_topic
        props.CorrelationData = correlation
        await self.client.publish(
            f"{PREFIX}/{MINER}/cmd", json.dumps(command).encode(), qos=1, properties=props
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for _, topic, payload, properties in self.messages:
                if (
                    topic == reply_topic
                    and getattr(properties, "CorrelationData", None) == correlation
                ):
                    return dict(json.loads(payload))
            await asyncio.sleep(0.02)
        raise AssertionError(f"no reply to {command}")


async def until(condition: Callable[[], Any], timeout_s: float = 20, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or condition}")


@pytest.fixture
async def running(tmp_path: Path, broker: Broker) -> AsyncIterator[tuple[Agent, SimRig, Watcher]]:
    async with Watcher(broker) as watcher:
        agent = Agent(agent_config(tmp_path, broker), notifier=SystemdNotifier({}))
        task = asyncio.create_task(agent.run())
        rig: SimRig = agent.rig.buses.sim
        try:
            yield agent, rig, watcher
        finally:
            agent.supervisor.request_stop("test over")
            assert await asyncio.wait_for(task, 15) == 0


def states(agent: Agent) -> list[SlotState]:
    return [c.state for c in agent.controllers]


async def all_hashing(agent: Agent, slots: tuple[int, ...] = (0, 1, 2)) -> None:
    await until(
        lambda: all(agent.controllers[s].state is SlotState.HASHING for s in slots),
        what=f"slots {slots} hashing (now {states(agent)})",
    )


async def test_seated_modules_come_up_to_hashing_and_say_so(
    running: tuple[Agent, SimRig, Watcher],
) -> None:
    agent, rig, watcher = running
    await all_hashing(agent)
    await until(lambda: len(watcher.events("inserted")) == 3, what="three inserted events")
    await until(lambda: (watcher.slot_state(0) or {}).get("state") == "hashing", what="mqtt state")
    state = watcher.slot_state(0)
    assert state is not None
    assert state["serial"] == rig.slots[0].module.serial  # type: ignore[union-attr]
    path = [after for _, after, _ in agent.controllers[0].transitions]
    assert path == [
        SlotState.INSERTED,
        SlotState.IDENTIFYING,
        SlotState.POWERING,
        SlotState.ENUMERATING,
        SlotState.RAMPING,
        SlotState.HASHING,
    ]
    # Retained: a subscriber that arrives late still sees availability and state.
    async with Watcher(watcher.broker) as late:
        await until(lambda: late.slot_state(2), what="retained slot state")
        statuses = [p for _, t, p, _ in late.messages if t == f"{PREFIX}/{MINER}/status"]
        assert statuses == [b"online"]


async def test_prepared_swap_powers_off_before_safe_to_remove_then_module_comes_back(
    running: tuple[Agent, SimRig, Watcher],
) -> None:
    agent, rig, watcher = running
    await all_hashing(agent)
    serial = agent.controllers[1].status.serial
    power_at_event: list[tuple[bool, float]] = []

    reply = await watcher.request({"command": "prepare_swap", "slot": 1})
    assert reply["ok"] is True
    assert reply["result"]["state"] in ("draining", "safe_to_remove")

    def safe_event() -> bool:
        if watcher.events("safe_to_remove", slot=1) and not power_at_event:
            module = rig.slots[1].module
            assert module is not None
            power_at_event.append((rig.slots[1].hotswap.on, module.board_v))
        return bool(power_at_event)

    await until(safe_event, what="safe_to_remove event")
    assert power_at_event == [(False, 0.0)]  # power really off when the event arrived
    assert rig.pin_factory.pin(rig.slots[1].config.power_pin).state == 0
    assert agent.controllers[1].status.locate == "blink"
    # The other modules kept hashing throughout.
    assert states(agent)[0] is SlotState.HASHING and states(agent)[2] is SlotState.HASHING

    rig.pull_module(1)
    removed = await until(lambda: watcher.events("removed", slot=1), what="removed event")
    assert removed[0]["details"]["prepared"] is True
    assert removed[0]["serial"] == serial
    assert agent.controllers[1].state is SlotState.EMPTY

    assert rig.insert_module(1) == serial  # the repaired module goes back in
    await all_hashing(agent, (1,))
    assert agent.controllers[1].status.serial == serial


async def test_surprise_pull_is_reported_and_the_others_keep_hashing(
    running: tuple[Agent, SimRig, Watcher],
) -> None:
    agent, rig, watcher = running
    await all_hashing(agent)
    before = [c.chain.counters.nonces if c.chain else 0 for c in agent.controllers]
    rig.pull_module(2)
    removed = await until(lambda: watcher.events("removed", slot=2), what="removed event")
    assert removed[0]["details"]["prepared"] is False
    assert removed[0]["details"]["previous_state"] == "hashing"
    assert "without a prepared swap" in removed[0]["message"]
    assert agent.controllers[2].state is SlotState.EMPTY
    assert rig.pin_factory.pin(rig.slots[2].config.power_pin).state == 0
    await asyncio.sleep(1.0)
    after = [c.chain.counters.nonces if c.chain else 0 for c in agent.controllers]
    assert after[0] > before[0] and after[1] > before[1]
    assert states(agent)[:2] == [SlotState.HASHING, SlotState.HASHING]
    rig.insert_module(2, new=True)
    await all_hashing(agent, (2,))


async def test_rail_fault_powers_the_module_off_and_raises_a_fault_event(
    running: tuple[Agent, SimRig, Watcher],
) -> None:
    agent, rig, watcher = running
    await all_hashing(agent)
    rig.dcdc_overcurrent(0)
    fault = await until(lambda: watcher.events("fault", slot=0), what="fault event")
    assert "over-current" in fault[0]["message"]
    assert agent.controllers[0].state is SlotState.FAULT
    assert rig.slots[0].hotswap.on is False
    assert agent.controllers[0].status.locate == "on"
    # Seen by the protection sweep or the health sample, whichever read the rail first
    # (the converter itself switched its output off when it latched).
    detail = agent.controllers[0].status.detail
    assert "DC-DC" in detail and "fault" in detail
    assert states(agent)[1:] == [SlotState.HASHING, SlotState.HASHING]


async def test_commands_the_agent_cannot_carry_out_get_clear_errors(
    tmp_path: Path, broker: Broker
) -> None:
    async with Watcher(broker) as watcher:
        agent = Agent(agent_config(tmp_path, broker, modules=(0,)), notifier=SystemdNotifier({}))
        task = asyncio.create_task(agent.run())
        try:
            await all_hashing(agent, (0,))
            empty = await watcher.request({"command": "prepare_swap", "slot": 2})
            assert empty == {"ok": False, "code": "refused", "error": "slot 2 is empty"}
            nothing = await watcher.request({"command": "cancel_swap", "slot": 0})
            assert nothing["ok"] is False and "no swap prepared" in nothing["error"]
            bad = await watcher.request({"command": "prepare_swap", "slot": 7})
            assert bad["ok"] is False and "slot" in bad["error"]
            assert agent.controllers[0].state is SlotState.HASHING
        finally:
            agent.supervisor.request_stop("test over")
            assert await asyncio.wait_for(task, 15) == 0


async def test_module_with_a_corrupt_identity_is_never_powered(
    tmp_path: Path, broker: Broker
) -> None:
    async with Watcher(broker) as watcher:
        agent = Agent(agent_config(tmp_path, broker, modules=()), notifier=SystemdNotifier({}))
        task = asyncio.create_task(agent.run())
        rig: SimRig = agent.rig.buses.sim
        try:
            rig.insert_module(0)
            module = rig.slots[0].module
            assert module is not None
            module.eeprom.memory[30] ^= 0xFF  # a damaged serial number: CRC no longer matches
            fault = await until(lambda: watcher.events("fault", slot=0), what="fault event")
            assert "corrupt EEPROM" in fault[0]["message"]
            assert agent.controllers[0].state is SlotState.FAULT
            await asyncio.sleep(0.5)
            assert rig.slots[0].hotswap.on is False
            assert rig.pin_factory.pin(rig.slots[0].config.power_pin).state == 0
        finally:
            agent.supervisor.request_stop("test over")
            assert await asyncio.wait_for(task, 15) == 0
