"""`hashbay fleet` as a real process on a real mosquitto: against a real agent on the
simulated rig, with TLS and credentials, and with settings or brokers it cannot use."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hashbay.tools.bench.fleet_traffic import load_sample
from hashbay.tools.broker import HOST, Broker, free_port, make_tls_files
from hashbay.tools.sim.control import request

from .support import AgentProcess, write_config

CLI = [sys.executable, "-m", "hashbay.tools.cli"]
MINER = "sim-rig-01"


class LiveView:
    """`hashbay fleet --json` running live; each frame a JSON line, read by a thread."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [*CLI, "fleet", "--json", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.frames: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.frames.put(json.loads(line))

    def until(
        self, what: str, check: Callable[[dict[str, Any]], bool], timeout_s: float = 60
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                frame = self.frames.get(timeout=0.5)
            except queue.Empty:
                assert self.process.poll() is None, self.process.stderr.read()  # type: ignore[union-attr]
                continue
            if check(frame):
                return frame
        raise AssertionError(f"the fleet view never showed {what}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def fleet(*args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "fleet", *args], capture_output=True, text=True, timeout=timeout_s)


def agent_config(directory: Path, port: int) -> Path:
    """The packaged rig, short boards and fast timings, publishing to the test's broker."""
    path = write_config(directory / "agent.toml", extra=f'[mqtt]\nhost = "{HOST}"\nport = {port}\n')
    text = path.read_text()
    text = text.replace("[chain]\n", "[chain]\nsample_interval_s = 0.2\nchip_poll_interval_s = 2\n")
    text = text.replace("chips_per_board = 126\n", "chips_per_board = 42\nchips_per_domain = 1\n")
    path.write_text(text)
    return path


@pytest.fixture
def agent(tmp_path: Path, broker: Broker) -> Iterator[AgentProcess]:
    process = AgentProcess(agent_config(tmp_path, broker.port), tmp_path / "s", tmp_path / "r")
    yield process
    process.stop()


def slots_of(frame: dict[str, Any]) -> dict[str, int]:
    modules: dict[str, int] = frame["summary"]["modules"]
    return modules


def test_the_fleet_view_follows_a_real_agent_through_a_fault_and_its_will(
    broker: Broker, agent: AgentProcess
) -> None:
    view = LiveView("--port", str(broker.port), "--every", "0.3s")
    detail = LiveView("--port", str(broker.port), "--every", "0.3s", "--miner", MINER)
    try:
        frame = view.until("three modules hashing", lambda f: slots_of(f).get("hashing") == 3, 90)
        summary = frame["summary"]
        assert (summary["miners"], summary["online"], summary["offline"]) == (1, 1, 0)
        assert summary["hashrate_hs"] > 1e12
        assert summary["power_w"] > 100
        assert 5 < summary["j_per_th"] < 100
        assert frame["swap_queue"] == []
        the_bench_replays_what_this_agent_publishes(broker.port)

        assert request(agent.runtime_dir / "sim.sock", "inject dcdc-overcurrent 1").startswith("ok")
        frame = view.until("the faulted module queued", lambda f: bool(f["swap_queue"]))
        [item] = frame["swap_queue"]
        assert (item["miner"], item["slot"], item["category"]) == (MINER, 1, "fault")
        assert item["serial"] and "over-current" in item["reason"]
        seen = detail.until(
            "the fault event in the miner's detail",
            lambda f: any(e["kind"] == "fault" for e in f["events"]),
        )
        assert [s["state"] for s in seen["slots"]][:3].count("hashing") >= 2

        agent.process.kill()  # no goodbye: the broker's will says offline
        agent.process.wait()
        frame = view.until("the miner offline", lambda f: f["summary"]["offline"] == 1, 120)
        assert frame["summary"]["hashrate_hs"] == 0
    finally:
        view.stop()
        detail.stop()


def the_bench_replays_what_this_agent_publishes(port: int) -> None:
    """The fleet bench's payloads (captured from the agent) have the live agent's keys;
    the sample adds only what a pool brings (`pools`, `work`)."""
    sample = load_sample()
    live = {
        "miner_state": retained(port, f"hashbay/{MINER}/state"),
        "slot_state_hashing": retained(port, f"hashbay/{MINER}/slot/0/state"),
    }
    assert set(sample["miner_state"]) - set(live["miner_state"]) == {"pools", "work"}
    assert set(live["miner_state"]) <= set(sample["miner_state"])
    assert set(sample["slot_state_hashing"]) == set(live["slot_state_hashing"])
    assert set(sample["slot_state_fault"]) == set(live["slot_state_hashing"])
    for key in ("health", "prediction"):
        assert set(sample["slot_state_hashing"][key]) == set(live["slot_state_hashing"][key])


def retained(port: int, topic: str) -> dict[str, Any]:
    got: queue.Queue[bytes] = queue.Queue()
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_message = lambda _c, _u, message: got.put(bytes(message.payload))
    client.connect(HOST, port)
    client.subscribe(topic)
    client.loop_start()
    try:
        payload: dict[str, Any] = json.loads(got.get(timeout=10))
    finally:
        client.loop_stop()
        client.disconnect()
    return payload


def test_once_prints_the_retained_farm_in_words_and_exits(broker: Broker) -> None:
    publish_farm(broker.port, "hashbay")
    done = fleet("--port", str(broker.port), "--once")
    assert done.returncode == 0, done.stderr
    assert "Miners: 2  online 2  offline 0  stale 0" in done.stdout
    assert "Swap queue: 1 module" in done.stdout
    assert "rig-b" in done.stdout and "DC-DC over-current" in done.stdout


def test_html_writes_the_page_once_or_rewrites_it_every_interval(
    broker: Broker, tmp_path: Path
) -> None:
    publish_farm(broker.port, "hashbay")
    (tmp_path / "www").mkdir()
    page = tmp_path / "www" / "farm.html"
    done = fleet("--port", str(broker.port), "--html", str(page))
    assert done.returncode == 0, done.stderr
    assert f"wrote {page}: 2 miners, 1 in the swap queue" in done.stdout
    text = page.read_text()
    assert 'data-tile="Miners">Miners<b>2</b>' in text
    assert "http-equiv" not in text  # written once: nothing to reload

    args = ["--port", str(broker.port), "--html", str(page), "--every", "0.2s", "--count", "3"]
    done = fleet(*args, "--json")
    assert done.returncode == 0, done.stderr
    frames = [json.loads(line) for line in done.stdout.splitlines()]
    assert [f["html"] for f in frames] == [str(page)] * 3
    assert '<meta http-equiv="refresh" content="1">' in page.read_text()
    assert [p.name for p in page.parent.iterdir()] == ["farm.html"]  # no half-written files


def test_credentials_and_tls_come_from_the_agents_mqtt_settings(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    server = Broker(tmp_path / "broker", users={"fleet": "s3cret"}, tls=tls)
    server.start()
    try:
        publish_farm(server.port, "site7", tls_ca=tls.ca, user=("fleet", "s3cret"))
        password = tmp_path / "password"
        password.write_text("s3cret\n")
        config = tmp_path / "fleet.toml"
        config.write_text(
            f'[mqtt]\nhost = "{HOST}"\nport = {server.port}\ntls = true\n'
            f'ca_file = "{tls.ca}"\nusername = "fleet"\npassword_file = "{password}"\n'
            'topic_prefix = "site7"\n'
        )
        done = fleet("--config", str(config), "--once", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["summary"]["miners"] == 2

        password.write_text("wrong\n")
        refused = fleet("--config", str(config), "--once")
        assert refused.returncode == 69
        assert f"cannot read the broker at {HOST}:{server.port}" in refused.stderr
    finally:
        server.stop()


def test_settings_it_cannot_use_exit_2_with_the_agents_words(tmp_path: Path) -> None:
    done = fleet("--port", "0", "--once")
    assert done.returncode == 2
    assert "mqtt.port: must be an integer from 1 to 65535" in done.stderr
    done = fleet("--password-file", str(tmp_path / "missing"), "--username", "u", "--once")
    assert done.returncode == 2
    assert "mqtt.password_file" in done.stderr


def test_no_broker_exits_69(tmp_path: Path) -> None:
    done = fleet("--port", str(free_port()), "--once")
    assert done.returncode == 69
    assert "cannot read the broker" in done.stderr


def test_an_unknown_miner_exits_1(broker: Broker) -> None:
    publish_farm(broker.port, "hashbay")
    done = fleet("--port", str(broker.port), "--once", "--miner", "rig-z")
    assert done.returncode == 1
    assert "no miner 'rig-z'" in done.stderr


def test_a_group_splits_the_events_while_each_member_reads_the_whole_farm(
    broker: Broker,
) -> None:
    publish_farm(broker.port, "hashbay")
    port = str(broker.port)
    members = [LiveView("--port", port, "--every", "0.2s", "--group", "techs") for _ in range(2)]
    alone = LiveView("--port", port, "--every", "0.2s")
    views = [*members, alone]
    try:
        for view in views:
            view.until("the retained farm", lambda f: f["summary"]["miners"] == 2)
        sent = publish_events(broker.port, "hashbay", count=200)
        alone.until("every event", lambda f: f["summary"]["events"] == sent, 30)
        deadline = time.monotonic() + 30
        taken = [0, 0]
        while sum(taken) < sent and time.monotonic() < deadline:
            taken = [newest(view)["summary"]["events"] for view in members]
        assert sum(taken) == sent  # every event once in the group, none twice
        assert min(taken) > sent // 10  # and both members took a share
        assert all(newest(view)["summary"]["miners"] == 2 for view in views)  # state: everyone's
    finally:
        for view in views:
            view.stop()


def test_a_group_name_that_is_no_topic_level_is_a_usage_error() -> None:
    done = fleet("--group", "a/b", "--once")
    assert done.returncode == 2
    assert "a group name is 1-64 letters" in done.stderr


def newest(view: LiveView) -> dict[str, Any]:
    """The first frame the view draws after now (older ones are dropped)."""
    while not view.frames.empty():
        view.frames.get_nowait()
    return view.frames.get(timeout=30)


def publish_events(port: int, prefix: str, *, count: int) -> int:
    """`count` distinct events from rig-a, at QoS 1; returns how many were sent."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect(HOST, port)
    client.loop_start()
    try:
        for seq in range(1, count + 1):
            body = {"seq": seq, "stream": "g1", "kind": "tuned", "slot": seq % 3, "serial": None}
            body |= {"message": "tuned", "details": {}, "at": 1000.0 + seq}
            client.publish(f"{prefix}/rig-a/event", json.dumps(body), qos=1).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()
    return count


def publish_farm(
    port: int,
    prefix: str,
    *,
    tls_ca: Path | None = None,
    user: tuple[str, str] | None = None,
) -> None:
    """Two miners' retained trees; rig-b's slot 0 faulted."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    if tls_ca is not None:
        client.tls_set(ca_certs=str(tls_ca))
    if user is not None:
        client.username_pw_set(*user)
    client.connect(HOST, port)
    client.loop_start()
    try:
        for name in ("rig-a", "rig-b"):
            state = {"name": name, "hashrate_hs": 2e14, "psu_input_power_w": 3500.0}
            messages = [("status", "online"), ("state", json.dumps(state))]
            for slot in range(3):
                now, detail = "hashing", ""
                if name == "rig-b" and slot == 0:
                    now, detail = "fault", "power fault: DC-DC over-current"
                body = {"slot": slot, "state": now, "serial": f"{name}-{slot}", "detail": detail}
                messages.append((f"slot/{slot}/state", json.dumps(body)))
            for suffix, payload in messages:
                info = client.publish(f"{prefix}/{name}/{suffix}", payload, qos=1, retain=True)
                info.wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()
