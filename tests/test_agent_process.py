"""hashbay-agent as a real process: readiness, watchdog, signals, exit codes, logs."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from .support import AGENT, NotifyListener, start_agent


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_ready_watchdog_then_clean_stop_on_signal(
    sim_config: Path, tmp_path: Path, notify_listener: NotifyListener, signum: int
) -> None:
    agent = start_agent(
        sim_config,
        tmp_path,
        env={"NOTIFY_SOCKET": str(notify_listener.path), "WATCHDOG_USEC": "400000"},
    )
    try:
        ready = notify_listener.wait_for("READY", "1")
        assert ready["STATUS"].startswith("0/3 slots hashing")
        notify_listener.wait_for("WATCHDOG", "1")
        agent.send_signal(signum)
        _, stderr = agent.communicate(timeout=10)
    finally:
        agent.kill()
    assert agent.returncode == 0, stderr
    assert notify_listener.wait_for("STOPPING", "1")["STATUS"].startswith("stopping: SIG")
    events = [line["event"] for line in json_lines(stderr)]
    assert events.index("stopping") < events.index("hardware in safe state")
    assert events[-1] == "stopped"
    assert "Traceback" not in stderr


def test_log_lines_are_json_when_not_on_a_terminal(sim_config: Path, tmp_path: Path) -> None:
    agent = subprocess.Popen(
        [
            *AGENT,
            "--config",
            str(sim_config),
            "--state-dir",
            str(tmp_path / "s"),
            "--runtime-dir",
            str(tmp_path / "r"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = agent.stderr.readline() if agent.stderr else ""
        agent.send_signal(signal.SIGTERM)
        rest = agent.communicate(timeout=10)[1]
    finally:
        agent.kill()
    lines = json_lines(first + rest)
    assert lines[0]["event"] == "starting"
    assert {"timestamp", "level", "event"} <= set(lines[0])
    assert all(isinstance(line["timestamp"], str) for line in lines)


def test_live_console_shows_status_and_ctrl_c_exits_zero(sim_config: Path, tmp_path: Path) -> None:
    agent = start_agent(sim_config, tmp_path, "--live")
    try:
        panel = ""
        while "FAN" not in panel:
            line = agent.stdout.readline() if agent.stdout else ""
            assert line, "console ended early"
            panel += line
        agent.send_signal(signal.SIGINT)
        agent.communicate(timeout=10)
    finally:
        agent.kill()
    assert agent.returncode == 0
    assert "SLOT  STATE" in panel
    assert (tmp_path / "state" / "agent.log").read_text().count('"event": "stopped"') == 1


def test_unknown_flag_is_a_usage_error(sim_config: Path) -> None:
    done = subprocess.run([*AGENT, "--frobnicate"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "unrecognized arguments: --frobnicate" in done.stderr
    assert "Traceback" not in done.stderr


def test_unusable_state_dir_exits_73_with_one_line(sim_config: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = subprocess.run(
        [*AGENT, "--config", str(sim_config), "--state-dir", str(blocker / "state")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 73
    assert done.stderr.strip().splitlines() == [
        f"hashbay-agent: state_dir {blocker}/state: not usable (Not a directory); "
        "create it writable for this user or pass --state-dir"
    ]


def test_broken_config_exits_78_before_touching_anything(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[agent]\nname = "x"\nmystery = 1\n')
    state = tmp_path / "state"
    done = subprocess.run(
        [*AGENT, "--config", str(config), "--state-dir", str(state)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 78
    assert done.stderr.count("\n") == 1
    assert "agent.mystery: unknown key" in done.stderr
    assert not state.exists()


def test_real_board_config_without_the_hardware_exits_69_naming_what_is_missing(
    tmp_path: Path,
) -> None:
    config = Path(__file__).resolve().parent.parent / "systemd" / "hashbay.toml"
    done = subprocess.run(
        [
            *AGENT,
            "--config",
            str(config),
            "--state-dir",
            str(tmp_path / "s"),
            "--runtime-dir",
            str(tmp_path / "r"),
            "--log-format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 69
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("hashbay-agent: ")
    assert "unavailable" in last or "cannot be opened" in last
    assert "Traceback" not in done.stderr
