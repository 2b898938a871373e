"""The running agent, attacked from outside as a hostile or buggy client would.

One real `hashbay-agent` process on the simulated rig with a real mosquitto, its control
socket, miner API and MQTT command topic open. Every attack — generated (hypothesis) and
named — must leave the agent alive, every board hashing, nothing changed, a well-behaved
client answered within a second meanwhile, and the attacker answered with the documented
error shape. The log stays one bounded JSON object per line throughout.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hashbay.agent.daemon.config import default_config_path
from hashbay.agent.interfaces.commands import CommandError, parse_command_mapping
from hashbay.agent.interfaces.control_protocol import ErrorCode, request_message
from hashbay.tools.broker import Broker, mosquitto_available
from hashbay.tools.cli import ControlClient

from .attack_peer import PeerAs
from .support import AgentProcess, with_setting

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed")

PREFIX = "hb"
MINER = "attacked"
CMD = f"{PREFIX}/{MINER}/cmd"
REPLY = f"{PREFIX}/{MINER}/cmd/reply"
NOBODY = 65534
IS_ROOT = os.geteuid() == 0
CONTROL_CODES = {code.value for code in ErrorCode}
MQTT_CODES = {"invalid", "refused", "failed", "busy"}
MAX_LOG_LINE = 4096  # no client input can make a log line longer than this
ATTACK = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class Target:
    agent: AgentProcess
    broker: Broker
    api_port: int
    state_dir: Path

    @property
    def control(self) -> Path:
        return self.agent.control_socket


def attacked_config(directory: Path, broker: Broker) -> Path:
    text = default_config_path().read_text()
    for table, key, value in [
        ("agent", "name", f'"{MINER}"'),
        ("agent", "poll_interval_s", "0.2"),
        ("sim", "chips_per_board", "42"),
        ("sim", "chips_per_domain", "1"),
        ("sim", "control_socket", "false"),
        ("api", "port", "0"),
        ("mqtt", "host", f'"{broker.host}"'),
        ("mqtt", "port", str(broker.port)),
        ("mqtt", "topic_prefix", f'"{PREFIX}"'),
        ("mqtt", "commands_per_s", "50"),
        ("mqtt", "reconnect_min_s", "0.2"),
        ("control", "group", '"nogroup"'),
        ("control", "request_timeout_s", "1.0"),
        ("control", "max_clients", "12"),
        ("control", "max_clients_per_user", "4"),
        ("control", "reserved_for_admins", "3"),
    ]:
        text = with_setting(text, table, key, value)
    path = directory / "attacked.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    # /tmp, traversable by others: a peer running as nobody must reach the socket.
    directory = Path(tempfile.mkdtemp(prefix="hb-attack-", dir="/tmp"))
    directory.chmod(0o711)
    broker = Broker(directory / "broker")
    broker.start()
    runtime = directory / "run"
    runtime.mkdir()
    runtime.chmod(0o711)
    agent = AgentProcess(attacked_config(directory, broker), directory / "state", runtime)
    try:
        port = int(agent.wait_for_log("miner API listening")["port"])
        found = Target(agent, broker, port, directory / "state")
        wait_until_hashing(found)
        yield found
    finally:
        code = agent.stop()
        broker.stop()
        shutil.rmtree(directory, ignore_errors=True)
    assert code == 0, agent.log()[-30:]


def status(target: Target, timeout_s: float = 10.0) -> dict[str, Any]:
    with ControlClient(target.control, timeout_s) as client:
        result: dict[str, Any] = client.call("status")
    return result


def wait_until_hashing(target: Target, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    states: list[str] = []
    while time.monotonic() < deadline:
        try:
            states = [s["state"] for s in status(target)["slots"]]
        except Exception:
            states = []
        if states == ["hashing"] * 3:
            return
        time.sleep(0.2)
    raise AssertionError(f"not every slot hashing: {states}")


def assert_unharmed(target: Target) -> None:
    """Alive, every board hashing, nothing changed, and a good client served in < 1 s."""
    assert target.agent.process.poll() is None, target.agent.log()[-30:]
    started = time.monotonic()
    snapshot = status(target, timeout_s=5)
    assert time.monotonic() - started < 1.0, "a well-behaved client waited over a second"
    slots = snapshot["slots"]
    assert [s["state"] for s in slots] == ["hashing"] * 3, [s["detail"] for s in slots]
    assert all(s.get("locate", "off") == "off" for s in slots)
    assert not (target.state_dir / "controls.json").exists(), "an attack changed a control"
    assert snapshot["miner"]["power"]["controls"] == {
        "power_target_w": None,
        "quiet": None,
        "fan_override": None,
        "curtail": None,
        "profit": None,
        "electricity_per_kwh": None,
        "hashprice_per_th_day": None,
    }


# -- control socket ---------------------------------------------------------------------------


def raw_exchange(path: Path, data: bytes) -> bytes:
    """Send raw bytes on the control socket, then read until the agent closes or goes quiet."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(3.0)
    sock.connect(str(path))
    return exchange(sock, data)


def exchange(sock: socket.socket, data: bytes) -> bytes:
    """Send, half-close, and read what comes back until the end or a quiet spell."""
    with sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return bytes(received)


def replies_in(data: bytes) -> list[dict[str, Any]]:
    """Decode every reply frame the agent sent; each must be a well-formed frame."""
    replies = []
    while data:
        assert len(data) >= 4, data
        (length,) = struct.unpack(">I", data[:4])
        body, data = data[4 : 4 + length], data[4 + length :]
        assert len(body) == length
        replies.append(msgpack.unpackb(body, raw=False))
    return replies


def assert_control_shape(reply: dict[str, Any]) -> None:
    assert reply["v"] == 1
    if reply["ok"]:
        assert "result" in reply
    else:
        assert reply["error"]["code"] in CONTROL_CODES, reply
        assert isinstance(reply["error"]["message"], str)
        assert len(reply["error"]["message"]) <= 1000


@ATTACK
@given(data=st.binary(min_size=1, max_size=2048))
def test_control_socket_survives_arbitrary_bytes(target: Target, data: bytes) -> None:
    for reply in replies_in(raw_exchange(target.control, data)):
        assert_control_shape(reply)
    assert_unharmed(target)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=30,
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=30,
)
ops = st.sampled_from(["hello", "status", "slot", "events", "command", "subscribe", "x", ""])
commands = st.sampled_from(
    ["prepare_swap", "locate", "power_target", "curtail", "fan_override", "reset_slot", "tune"]
)


@st.composite
def hostile_requests(draw: st.DrawFn) -> dict[str, Any]:
    request: dict[str, Any] = {
        "v": draw(st.sampled_from([1, 1, 1, 2, "1", None])),
        "id": draw(st.integers(min_value=-5, max_value=2**60) | msgpack_values),
        "op": draw(ops),
    }
    if draw(st.booleans()):
        args = draw(st.dictionaries(st.text(max_size=12), msgpack_values, max_size=4))
        if draw(st.booleans()):
            args["command"] = draw(commands)
        request["args"] = args
    if draw(st.booleans()):
        request[draw(st.text(max_size=5))] = draw(msgpack_values)
    return request


@ATTACK
@given(request=hostile_requests())
def test_control_socket_answers_generated_requests_with_the_documented_shape(
    target: Target, request: dict[str, Any]
) -> None:
    args = request.get("args")
    if request.get("op") == "command" and isinstance(args, dict):
        try:
            parse_command_mapping(args, slots=3)
        except CommandError:
            pass
        else:
            assume(False)  # a valid command would rightly change things
    body = msgpack.packb(request, use_bin_type=True)
    for reply in replies_in(raw_exchange(target.control, struct.pack(">I", len(body)) + body)):
        assert_control_shape(reply)
    assert_unharmed(target)


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def frame(message: dict[str, Any]) -> bytes:
    body: bytes = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def test_control_socket_refuses_deep_nesting_as_a_bad_frame(target: Target) -> None:
    request = request_message(7, "command", {"command": "locate", "slot": nested(1000)})
    replies = replies_in(raw_exchange(target.control, frame(request)))
    assert [r["error"]["code"] for r in replies] == ["bad_frame"]
    assert "deeper" in replies[0]["error"]["message"]
    assert_unharmed(target)


@pytest.mark.skipif(not IS_ROOT, reason="needs root to act as another user")
def test_one_user_cannot_take_every_connection_and_root_still_gets_in(target: Target) -> None:
    # 12 connections, 4 per user, 3 kept for administrators: a reader opening 12 gets 4.
    peer = PeerAs(NOBODY, str(target.control), [b"\x00"] * 12)
    try:
        results = peer.results()
        busy = [r for r in results if (r.get("reply") or {}).get("error", {}).get("code") == "busy"]
        assert len(busy) == 8, results
        assert all("uid" in r["reply"]["error"]["message"] for r in busy)
        assert_unharmed(target)  # root, meanwhile
    finally:
        peer.release()


@pytest.mark.skipif(not IS_ROOT, reason="needs root to act as another user")
def test_half_sent_prefixes_are_dropped_at_the_frame_deadline(target: Target) -> None:
    stalled = PeerAs(NOBODY, str(target.control), [b"\x00"] * 4)  # the user's whole share
    try:
        assert all(r["reply"] is None for r in stalled.results())  # held, not refused
        time.sleep(1.5)  # control.request_timeout_s = 1.0: all four are dropped by now
        hello = frame(request_message(1, "hello"))
        fresh = PeerAs(NOBODY, str(target.control), [hello] * 4)
        try:
            replies = [r["reply"] for r in fresh.results()]
        finally:
            fresh.release()
        assert all(r is not None and r["ok"] for r in replies), replies
        assert_unharmed(target)
    finally:
        stalled.release()


@pytest.mark.skipif(not IS_ROOT, reason="needs root to act as another user")
def test_a_reader_is_denied_changes_and_the_denial_log_line_stays_short(target: Target) -> None:
    huge = {"command": "curtail", "mode": "sleep", "padding": "x" * 60_000}
    deep = {"command": "curtail", "mode": nested(6)}
    peer = PeerAs(
        NOBODY,
        str(target.control),
        [frame(request_message(1, "command", huge)), frame(request_message(2, "command", deep))],
    )
    try:
        results = peer.results()
    finally:
        peer.release()
    codes = [r["reply"]["error"]["code"] for r in results]
    assert codes == ["denied", "denied"], results
    denials = [line for line in target.agent.log() if "control change denied" in line]
    assert len(denials) >= 2
    assert all(len(line) < 1000 for line in denials)
    assert_unharmed(target)


# -- miner API --------------------------------------------------------------------------------


def api_exchange(port: int, data: bytes) -> bytes:
    return exchange(socket.create_connection(("127.0.0.1", port), timeout=10), data)


def assert_api_refusal_shape(reply: bytes) -> None:
    assert reply.endswith(b"\x00"), reply[-50:]
    text = reply[:-1].decode()
    if text.startswith("{"):
        body = json.loads(text)
        # One reply, or a joined one: a list of replies under each command's name.
        sections = [body] if "STATUS" in body else [r[0] for k, r in body.items() if k != "id"]
        assert sections
        for section in sections:
            assert section["STATUS"][0]["STATUS"] in {"S", "E", "I", "W"}
    else:
        assert text.startswith("STATUS="), text[:80]


@ATTACK
@given(data=st.binary(min_size=1, max_size=12_000))
def test_miner_api_answers_arbitrary_bytes_with_a_status_reply(target: Target, data: bytes) -> None:
    assert_api_refusal_shape(api_exchange(target.api_port, data))
    assert_unharmed(target)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b'{"command": "ascdisable", "parameter": "0"}',
        b"ascdisable|1",
        b'{"command": "summary+ascidentify", "parameter": "0"}',
        b'{"command": "' + b"[" * 5000 + b'"}',
        b'{"command": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"command": "summary", "parameter": NaN}',
        b"x" * 9000,
    ],
)
def test_miner_api_refuses_changes_and_garbage(target: Target, request_bytes: bytes) -> None:
    reply = api_exchange(target.api_port, request_bytes)
    assert_api_refusal_shape(reply)
    assert b"STATUS" in reply
    assert_unharmed(target)


# -- MQTT --------------------------------------------------------------------------------------


class Requester:
    """A real MQTT v5 client that sends commands and collects replies by correlation."""

    def __init__(self, broker: Broker) -> None:
        self.replies: dict[bytes, list[dict[str, Any]]] = {}
        self.other: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"attacker-{time.monotonic_ns()}",
            protocol=paho.MQTTv5,
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.max_inflight_messages_set(1000)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe([("attack/replies", 1), (REPLY, 1), (f"{PREFIX}/{MINER}/state", 0)])
        assert self._subscribed.wait(10)

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        correlation = getattr(message.properties, "CorrelationData", None)
        with self._lock:
            if message.topic in ("attack/replies", REPLY) and correlation is not None:
                body = json.loads(message.payload)
                self.replies.setdefault(bytes(correlation), []).append(body)
            else:
                self.other.append((message.topic, bytes(message.payload)))

    def send(
        self,
        payload: bytes,
        correlation: bytes,
        *,
        response_topic: str | None = "attack/replies",
        retain: bool = False,
    ) -> None:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.CorrelationData = correlation
        if response_topic is not None:
            properties.ResponseTopic = response_topic
        self.client.publish(CMD, payload, qos=1, retain=retain, properties=properties)

    def wait_for(self, count: int, timeout_s: float = 30.0) -> dict[bytes, list[dict[str, Any]]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.replies) >= count:
                    break
            time.sleep(0.01)
        time.sleep(0.3)  # a second reply to any request would arrive by now
        with self._lock:
            return dict(self.replies)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def requester(target: Target) -> Iterator[Requester]:
    client = Requester(target.broker)
    yield client
    client.close()


def assert_mqtt_shape(reply: dict[str, Any]) -> None:
    assert isinstance(reply["ok"], bool)
    if not reply["ok"]:
        assert reply["code"] in MQTT_CODES, reply
        assert isinstance(reply["error"], str)
        assert len(reply["error"]) <= 1000


@ATTACK
@given(payload=st.binary(max_size=5000) | json_values.map(lambda v: json.dumps(v).encode()))
def test_mqtt_answers_every_generated_payload_once_and_changes_nothing(
    target: Target, payload: bytes
) -> None:
    try:
        parse_command_mapping(json.loads(payload), slots=3)
    except Exception:  # noqa: S110 - anything but a valid command is what we want
        pass
    else:
        assume(False)
    client = Requester(target.broker)
    try:
        client.send(payload, b"one")
        replies = client.wait_for(1)
    finally:
        client.close()
    assert list(replies) == [b"one"]
    assert len(replies[b"one"]) == 1
    assert_mqtt_shape(replies[b"one"][0])
    assert replies[b"one"][0]["ok"] is False
    assert_unharmed(target)


def test_mqtt_flood_of_1000_commands_gets_1000_replies(
    target: Target, requester: Requester
) -> None:
    started = time.monotonic()
    for n in range(1000):
        payload = b'{"command": "locate", "slot": 9, "mode": "on"}' if n % 3 else b"[1, 2"
        requester.send(payload, str(n).encode())
        time.sleep(max(0.0, started + n / 1000 - time.monotonic()))  # 1,000 in one second
    replies = requester.wait_for(1000, timeout_s=60)
    assert sorted(int(k) for k in replies) == list(range(1000))
    assert all(len(bodies) == 1 for bodies in replies.values())
    for bodies in replies.values():
        assert_mqtt_shape(bodies[0])
        assert bodies[0]["ok"] is False  # slot 9 does not exist, "[1, 2" is not JSON
    codes = [bodies[0]["code"] for bodies in replies.values()]
    assert codes.count("busy") > 0
    assert_unharmed(target)


@pytest.mark.parametrize(
    "topic",
    [
        f"{PREFIX}/{MINER}/status",
        f"{PREFIX}/{MINER}/state",
        f"{PREFIX}/{MINER}/slot/0/state",
        f"{PREFIX}/other/state",
        "homeassistant/sensor/hashbay_attacked/hashrate/config",
        "attack/#",
    ],
)
def test_mqtt_reply_topics_inside_the_agents_trees_are_refused(
    target: Target, requester: Requester, topic: str
) -> None:
    requester.send(b'{"command": "curtail", "mode": "sleep"}', b"rt", response_topic=topic)
    replies = requester.wait_for(1)
    assert replies[b"rt"][0]["code"] == "invalid"
    assert "ResponseTopic" in replies[b"rt"][0]["error"]
    assert_unharmed(target)


def test_mqtt_retained_command_is_refused_and_not_run(target: Target, requester: Requester) -> None:
    requester.send(b'{"command": "curtail", "mode": "sleep"}', b"kept", retain=True)
    replies = requester.wait_for(1)
    requester.client.publish(CMD, b"", qos=1, retain=True)  # take it off the broker
    assert replies[b"kept"][0]["code"] == "invalid"
    assert "retained" in replies[b"kept"][0]["error"]
    assert_unharmed(target)


# -- the log, after everything above ------------------------------------------------------


def test_every_log_line_is_one_bounded_json_object(target: Target) -> None:
    lines = target.agent.log()
    assert len(lines) > 10
    for line in lines:
        assert len(line) <= MAX_LOG_LINE, line[:200]
        record = json.loads(line)
        assert {"event", "level", "timestamp"} <= set(record), line[:200]
