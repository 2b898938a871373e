"""`hashbay` as real processes against a real agent on the simulated rig: every command,
its output and its exit code; plus the miner API of that same agent."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hashbay.tools import cli
from hashbay.tools.cli import ControlClient

from .support import AGENT, write_config
from .test_control_socket import run_as_nobody

CLI = [sys.executable, "-m", "hashbay.tools.cli"]
NOT_HANDLED = "is not handled by this agent"


@dataclass(frozen=True)
class RunningAgent:
    process: subprocess.Popen[bytes]
    directory: Path
    socket: Path
    api_port: int


def agent_config(directory: Path) -> Path:
    """The packaged rig with fast timings, short boards, no broker, an ephemeral API port,
    and a socket nobody (the test's unprivileged peer) may open but not change through."""
    path = write_config(
        directory / "agent.toml",
        extra='[mqtt]\nenabled = false\n\n[control]\ngroup = "nogroup"\nadmin_group = "root"\n',
    )
    text = path.read_text()
    text = text.replace("[chain]\n", "[chain]\nsample_interval_s = 0.2\nchip_poll_interval_s = 2\n")
    text = text.replace("chips_per_board = 126\n", "chips_per_board = 42\nchips_per_domain = 1\n")
    path.write_text(text)
    return path


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 90) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def slot_states(path: Path) -> list[str]:
    try:
        with ControlClient(path, 5) as client:
            return [s["state"] for s in client.call("slots")["slots"]]
    except cli.CliError:
        return []


def api_port(log: Path) -> int | None:
    for line in log.read_text().splitlines():
        if "miner API listening" in line:
            return int(json.loads(line)["port"])
    return None


@pytest.fixture(scope="module")
def rig() -> Iterator[RunningAgent]:
    directory = Path(tempfile.mkdtemp(prefix="hb-cli-", dir="/tmp"))
    directory.chmod(0o711)  # the unprivileged peer must reach the socket
    log = directory / "agent.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [
                *AGENT,
                "--config",
                str(agent_config(directory)),
                "--state-dir",
                str(directory / "state"),
                "--runtime-dir",
                str(directory / "run"),
                "--log-format",
                "json",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    sock = directory / "run" / "control.sock"
    try:
        wait_for("all three slots hashing", lambda: slot_states(sock) == ["hashing"] * 3)
        port = wait_for("the miner API", lambda: api_port(log))
        yield RunningAgent(process, directory, sock, port)
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        shutil.rmtree(directory, ignore_errors=True)


def hashbay(
    rig: RunningAgent, *args: str, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--socket", str(rig.socket), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def change(rig: RunningAgent, *args: str) -> subprocess.CompletedProcess[str]:
    """A change command; every one must be handled by the agent."""
    done = hashbay(rig, *args)
    assert NOT_HANDLED not in done.stderr, f"`hashbay {' '.join(args)}` is not handled"
    return done


# -- reading ------------------------------------------------------------------------------


def test_status_slots_and_slot_describe_the_rig(rig: RunningAgent) -> None:
    commands = [
        ("status",),
        ("slots",),
        ("slot", "1"),
        ("slot", "1", "--chips"),
        ("--json", "slots"),
        ("--json", "slot", "0"),
        ("slots", "--swap-order"),
    ]
    with ThreadPoolExecutor(len(commands)) as pool:
        status, slots, slot, chips, slots_json, slot_json, ordered = pool.map(
            lambda args: hashbay(rig, *args), commands
        )
    for done in (status, slots, slot, chips, slots_json, slot_json, ordered):
        assert done.returncode == 0, done.stderr
    assert "sim-rig-01: 3/3 slots hashing" in status.stdout
    assert "PSU:" in status.stdout and "Fans: 4/4 ok" in status.stdout
    rows = [line.split() for line in slots.stdout.splitlines()]
    assert rows[0][:3] == ["SLOT", "STATE", "SERIAL"]
    assert [row[1] for row in rows[1:]] == ["hashing"] * 3
    swap_rows = [line.split() for line in ordered.stdout.splitlines()[1:]]
    assert [row[0] for row in swap_rows] == ["0", "1", "2"]  # all sound: ties keep slot order
    assert slot.stdout.startswith("Slot 1: hashing since ")
    for words in ("Module", "Health", "chips answering", "Rails", "Locate LED", "Chips (42"):
        assert words in slot.stdout
    assert len([ln for ln in chips.stdout.splitlines() if ln.strip().split(" ")[0].isdigit()]) == 42
    parsed = json.loads(slots_json.stdout)
    assert [s["slot"] for s in parsed["slots"]] == [0, 1, 2]
    detail = json.loads(slot_json.stdout)
    assert detail["status"]["health"]["chips_total"] == 42
    assert len(detail["chips"]) == 42


def test_fans_power_and_watch(rig: RunningAgent) -> None:
    fans = hashbay(rig, "fans")
    assert fans.returncode == 0, fans.stderr
    assert fans.stdout.splitlines()[0].split() == ["FAN", "DUTY", "%", "RPM", "STATE"]
    assert len([ln for ln in fans.stdout.splitlines() if ln.endswith(" ok")]) == 4
    power = hashbay(rig, "power")
    assert power.returncode == 0 and "PSU:" in power.stdout
    watch = hashbay(rig, "watch", "--count", "2", "--interval", "0.1")
    assert watch.returncode == 0, watch.stderr
    assert watch.stdout.count("slots hashing") == 2
    as_json = hashbay(rig, "--json", "watch", "--count", "2", "--interval", "0.1")
    frames = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert len(frames) == 2 and all("miner" in f for f in frames)


def test_events_list_recent_ones(rig: RunningAgent) -> None:
    done = hashbay(rig, "events", "--limit", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    shape = re.compile(r"\d\d:\d\d:\d\d  (slot \d( \S+)?|miner)  [a-z_]+: .+")
    assert all(shape.fullmatch(line) for line in lines), lines
    as_json = hashbay(rig, "--json", "events", "--limit", "200")
    kinds = [json.loads(line)["kind"] for line in as_json.stdout.splitlines()]
    assert kinds.count("inserted") == 3


# -- a prepared swap, followed live -------------------------------------------------------


def test_swap_prepare_waits_until_safe_and_says_so_while_events_follow(rig: RunningAgent) -> None:
    follower = subprocess.Popen(
        [*CLI, "--socket", str(rig.socket), "--json", "events", "--follow", "--limit", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert follower.stdout is not None
        first = follower.stdout.readline()  # the one recent event: subscribed by now
        assert json.loads(first)["kind"]
        reader = threading.Thread(target=lambda: lines.extend(follower.stdout or ()))
        reader.start()
        swap = hashbay(rig, "swap", "prepare", "2")
        assert swap.returncode == 0, swap.stderr
        assert swap.stdout.splitlines()[0].startswith("Slot 2: draining")
        assert swap.stdout.splitlines()[-1] == (
            "Slot 2: power is off — safe to remove the module (its LED blinks)."
        )

        def streamed() -> bool:
            events = [json.loads(line) for line in list(lines)]
            return any((e["kind"], e["slot"]) == ("safe_to_remove", 2) for e in events)

        wait_for("the follower to print safe_to_remove", streamed, timeout_s=30)
        follower.send_signal(signal.SIGINT)  # Ctrl-C ends a live view normally
        assert follower.wait(10) == 0
        reader.join(10)
    finally:
        follower.kill()
        follower.wait()
    again = hashbay(rig, "--json", "swap", "prepare", "2")  # already there: says so at once
    assert again.returncode == 0
    assert json.loads(again.stdout.splitlines()[-1])["safe_to_remove"] is True
    cancel = hashbay(rig, "swap", "cancel", "2")
    assert cancel.returncode == 0, cancel.stderr
    assert cancel.stdout.startswith("slot 2: state=")
    wait_for("slot 2 hashing again", lambda: slot_states(rig.socket)[2] == "hashing")


def test_refusals_fail_with_the_agents_reason(rig: RunningAgent) -> None:
    refused = hashbay(rig, "swap", "cancel", "0")  # nothing prepared there
    assert refused.returncode == cli.EXIT_FAILED
    assert refused.stderr.startswith("hashbay: slot 0 has no swap prepared")
    assert "[refused]" in refused.stderr
    out_of_range = hashbay(rig, "slot", "7")
    assert out_of_range.returncode == cli.EXIT_FAILED
    assert "0 to 2" in out_of_range.stderr


def test_locate_sets_the_led(rig: RunningAgent) -> None:
    done = hashbay(rig, "locate", "0")
    assert (done.returncode, done.stdout.strip()) == (0, "slot 0: locate=blink")
    assert '"locate":"blink"' in hashbay(rig, "--json", "slot", "0").stdout
    assert hashbay(rig, "locate", "0", "off").stdout.strip() == "slot 0: locate=off"


# -- miner-wide changes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (("quiet", "on"), "quiet=on"),
        (("quiet", "schedule"), "quiet=schedule"),
        (("fans", "override", "60%"), "fan_override=0.6"),
        (("fans", "auto"), "controls"),
        (("power", "--target", "2500"), "power_target_w=2500"),
        (("power", "--clear"), "controls"),
        (("prices", "--electricity", "0.08", "--hashprice", "0.05"), "electricity_per_kwh=0.08"),
        (("profit", "off"), "profit=False"),
    ],
)
def test_miner_wide_changes_report_the_controls_now_in_force(
    rig: RunningAgent, args: tuple[str, ...], shown: str
) -> None:
    done = change(rig, *args)
    assert done.returncode == 0, done.stderr
    assert shown in done.stdout


def test_curtail_and_resume(rig: RunningAgent) -> None:
    curtail = change(rig, "curtail", "--mode", "min")
    assert curtail.returncode == 0, curtail.stderr
    assert "curtail=min" in curtail.stdout
    resume = change(rig, "resume")
    assert resume.returncode == 0, resume.stderr
    assert "curtail" not in resume.stdout.replace("resume:", "")


def test_reset_of_a_healthy_module_is_refused(rig: RunningAgent) -> None:
    done = change(rig, "reset", "1")
    assert done.returncode == cli.EXIT_FAILED
    assert "[refused]" in done.stderr


def test_tune_starts_autotuning(rig: RunningAgent) -> None:
    done = change(rig, "tune", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("slot 1: ")


# -- who may do what, and when the agent is away ------------------------------------------


def test_a_reader_may_look_but_a_change_is_denied_with_exit_77(rig: RunningAgent) -> None:
    def as_reader(*argv: str) -> Callable[[], int]:
        return lambda: cli.main(["--socket", str(rig.socket), *argv])

    code, output = run_as_nobody(as_reader("slots"))
    assert code == 0, output
    assert "hashing" in output
    code, output = run_as_nobody(as_reader("locate", "1"))
    assert code == cli.EXIT_NOPERM
    assert "changing needs root or membership of group 'root'" in output
    assert "[denied]" in output


def test_a_socket_the_user_may_not_open_exits_77(tmp_path: Path) -> None:
    directory = Path(tempfile.mkdtemp(prefix="hb-", dir="/tmp"))
    directory.chmod(0o711)
    path = directory / "private.sock"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(str(path))
            path.chmod(0o600)
            server.listen()
            code, output = run_as_nobody(lambda: cli.main(["--socket", str(path), "status"]))
        assert code == cli.EXIT_NOPERM
        assert "permission denied" in output
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_no_agent_means_exit_69_with_a_plain_message(tmp_path: Path) -> None:
    missing = subprocess.run(
        [*CLI, "--socket", str(tmp_path / "none.sock"), "status"], capture_output=True, text=True
    )
    assert missing.returncode == cli.EXIT_UNAVAILABLE
    assert "the hashbay agent is not running" in missing.stderr
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(stale))  # a socket file nobody listens on
    assert cli.main(["--socket", str(stale), "slots"]) == cli.EXIT_UNAVAILABLE


def test_an_agent_that_does_not_answer_exits_75(tmp_path: Path) -> None:
    path = tmp_path / "mute.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        accepted: list[socket.socket] = []
        thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
        thread.start()
        code = cli.main(["--socket", str(path), "--timeout", "0.3", "status"])
        thread.join(5)
        for conn in accepted:
            conn.close()
    assert code == cli.EXIT_TEMPFAIL


@pytest.mark.parametrize(
    "argv",
    [[], ["slot"], ["slot", "one"], ["fans", "override"], ["fans", "override", "150%"],
     ["quiet", "loud"], ["power", "--target", "-5"], ["events", "--count", "0"]],
)  # fmt: skip
def test_usage_errors_exit_2(argv: list[str], tmp_path: Path) -> None:
    code = cli.main(["--socket", str(tmp_path / "none.sock"), *argv])
    assert code == cli.EXIT_USAGE


def test_the_default_socket_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.SOCKET_ENV, "/run/elsewhere/c.sock")
    assert cli.default_socket() == Path("/run/elsewhere/c.sock")
    monkeypatch.delenv(cli.SOCKET_ENV)
    assert cli.default_socket() == Path("/run/hashbay/control.sock")


# -- the same agent through the miner API -------------------------------------------------


def api(rig: RunningAgent, request: dict[str, Any]) -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", rig.api_port), timeout=10) as conn:
        conn.sendall(json.dumps(request).encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    assert data.endswith(b"\0")
    parsed: dict[str, Any] = json.loads(data[:-1])
    return parsed


def test_the_miner_api_reports_the_running_rig(rig: RunningAgent) -> None:
    wait_for("three boards hashing", lambda: slot_states(rig.socket) == ["hashing"] * 3)
    reply = api(rig, {"command": "summary+devs+stats"})
    summary = reply["summary"][0]["SUMMARY"][0]
    assert summary["MHS 5s"] > 0
    assert isinstance(summary["Elapsed"], int) and 0 <= summary["Elapsed"] < 3600
    devs = reply["devs"][0]["DEVS"]
    assert [d["Status"] for d in devs] == ["Alive"] * 3
    assert all(d["Total MH"] > 0 for d in devs)
    stats = reply["stats"][0]["STATS"][1]
    assert [stats[f"chain_acn{n}"] for n in (1, 2, 3)] == [42, 42, 42]
    assert stats["fan_num"] == 4
    denied = api(rig, {"command": "ascdisable", "parameter": "0"})
    assert denied["STATUS"][0]["Code"] == 45  # read-only by default
    assert os.path.exists(rig.socket)
