"""A flood of 1,000 MQTT commands in one second at the running agent: how many are answered.

The agent runs as a process on the simulated rig with a real mosquitto. One MQTT v5
client publishes 1,000 commands (QoS 1, each with a ResponseTopic and CorrelationData)
evenly over a second — a third of them not even JSON, the rest for a slot that does not
exist, so nothing changes — and counts the distinct replies that come back. Every
command must be answered exactly once: carried out, refused, or `busy` beyond
`mqtt.commands_per_s`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hashbay.agent.daemon.config import default_config_path
from hashbay.tools.bench import Figure
from hashbay.tools.broker import HOST, Broker

PREFIX = "bench"
MINER = "sim-rig-01"
COMMANDS = 1000
AGENT = [sys.executable, "-m", "hashbay.agent.daemon.main"]
REPLY_TOPIC = "flood/replies"  # outside the agent's tree, or it would refuse it


class Counter:
    def __init__(self) -> None:
        self.replies: dict[bytes, int] = {}
        self.codes: dict[str, int] = {}
        self.lock = threading.Lock()

    def on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        correlation = getattr(message.properties, "CorrelationData", None)
        if correlation is None:
            return
        code = str(json.loads(message.payload).get("code", "ok"))
        with self.lock:
            key = bytes(correlation)
            self.replies[key] = self.replies.get(key, 0) + 1
            self.codes[code] = self.codes.get(code, 0) + 1


def _wait_for_broker_connection(agent: subprocess.Popen[str]) -> None:
    assert agent.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = agent.stderr.readline()
        if not line:
            raise RuntimeError("the agent exited before connecting to the broker")
        if '"mqtt connected"' in line:
            return
    raise RuntimeError("the agent did not connect to the broker")


def _drain(agent: subprocess.Popen[str]) -> None:
    assert agent.stderr is not None
    for _ in agent.stderr:
        pass


def flood(broker: Broker) -> tuple[Counter, float]:
    counter = Counter()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-flood", protocol=paho.MQTTv5)
    client.on_message = counter.on_message
    client.max_inflight_messages_set(COMMANDS)
    client.connect(HOST, broker.port)
    client.loop_start()
    client.subscribe(REPLY_TOPIC, qos=1)
    time.sleep(0.5)
    started = time.monotonic()
    for n in range(COMMANDS):
        payload = b'{"command": "locate", "slot": 7, "mode": "on"}' if n % 3 else b"{oops"
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ResponseTopic = REPLY_TOPIC
        properties.CorrelationData = str(n).encode()
        client.publish(f"{PREFIX}/{MINER}/cmd", payload, qos=1, properties=properties)
        time.sleep(max(0.0, started + (n + 1) / COMMANDS - time.monotonic()))
    sent_s = time.monotonic() - started
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with counter.lock:
            if len(counter.replies) >= COMMANDS:
                break
        time.sleep(0.05)
    time.sleep(0.5)  # late duplicates would arrive by now
    client.loop_stop()
    client.disconnect()
    return counter, sent_s


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="hb-bench-commands-") as scratch:
        directory = Path(scratch)
        broker = Broker(directory / "broker")
        broker.start()
        text = default_config_path().read_text().replace("port = 4028", "port = 0")
        text += f'\n[mqtt]\nhost = "{HOST}"\nport = {broker.port}\ntopic_prefix = "{PREFIX}"\n'
        config = directory / "agent.toml"
        config.write_text(text)
        dirs = ["--state-dir", str(directory / "state"), "--runtime-dir", str(directory / "run")]
        agent = subprocess.Popen(
            [*AGENT, "--config", str(config), *dirs, "--log-format", "json"],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_for_broker_connection(agent)
            threading.Thread(target=_drain, args=(agent,), daemon=True).start()
            counter, sent_s = flood(broker)
        finally:
            agent.terminate()
            agent.wait(timeout=20)
            broker.stop()
    answered = len(counter.replies)
    twice = sum(1 for count in counter.replies.values() if count > 1)
    return [
        Figure("mqtt_command_flood_replied", answered, f"of {COMMANDS}", goal="1000"),
        Figure("mqtt_command_flood_replied_twice", twice, "commands", goal="0"),
        Figure("mqtt_command_flood_busy", counter.codes.get("busy", 0), "replies"),
        Figure("mqtt_command_flood_send_time", sent_s, "s"),
    ]
