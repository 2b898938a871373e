"""Helpers shared by the tests: real sockets, real processes, configs on the simulated rig."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from hashbay.agent.daemon.config import Config, default_config_path
from hashbay.tools.sim.configs import in_process_config

AGENT = [sys.executable, "-m", "hashbay.agent.daemon.main"]


class Clock:
    """A clock the test moves by hand (`clock.now += 0.5`)."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class NotifyListener:
    """A real AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET.

    A reader thread drains it continuously, like systemd, and stamps each message with
    the monotonic time it arrived.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.received: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            message = dict(line.split("=", 1) for line in data.decode().splitlines())
            with self._lock:
                self.received.append((time.monotonic(), message))

    def messages(self, since: float = 0.0) -> list[dict[str, str]]:
        with self._lock:
            return [m for at, m in self.received if at >= since]

    def arrival_times(self, key: str) -> list[float]:
        with self._lock:
            return [at for at, m in self.received if key in m]

    def wait_for(self, key: str, value: str | None = None, timeout: float = 10.0) -> dict[str, str]:
        """Block until a message carries key (=value); returns that message."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages():
                if key in message and (value is None or message[key] == value):
                    return message
            time.sleep(0.02)
        raise AssertionError(f"no {key}={value} within {timeout}s; got {self.messages()}")

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=1)
        self.sock.close()


def write_config(path: Path, extra: str = "", agent: str = "") -> Path:
    """The default simulated-rig config with fast timings and optional extra keys."""
    text = default_config_path().read_text()
    fast = "poll_interval_s = 0.1\nstall_timeout_s = 2.0\nshutdown_timeout_s = 2.0\n" + agent
    text = text.replace("poll_interval_s = 1.0\n", fast)
    text = text.replace("port = 4028\n", "port = 0\n")  # any free port: tests run side by side
    path.write_text(text + "\n" + extra)
    return path


def start_agent(
    config: Path, tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    full_env = dict(os.environ) | {"PYTHONUNBUFFERED": "1"} | (env or {})
    return subprocess.Popen(
        [
            *AGENT,
            "--config",
            str(config),
            "--state-dir",
            str(tmp_path / "state"),
            "--runtime-dir",
            str(tmp_path / "run"),
            "--log-format",
            "json",
            *args,
        ],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def rig_config(
    tmp_path: Path,
    *,
    chips: int = 42,
    modules: tuple[int, ...] = (0, 1, 2),
    time_scale: float = 1.0,
) -> Config:
    """The simulated rig for an agent run in-process, with short boards (one chip per
    voltage domain, so the rail stays near 13 V at 42 chips) and fast timings."""
    config = in_process_config(tmp_path, chips=chips, modules=modules, time_scale=time_scale)
    return dataclasses.replace(
        config,
        agent=dataclasses.replace(config.agent, poll_interval_s=0.2),
        chain=dataclasses.replace(config.chain, sample_interval_s=0.2, chip_poll_interval_s=2),
    )


def with_setting(text: str, table: str, key: str, value: str) -> str:
    """Config text with `[table] key = value` (replacing the key if it is there)."""
    lines = text.splitlines()
    header = f"[{table}]"
    if header not in lines:
        return text + f"\n{header}\n{key} = {value}\n"
    start = lines.index(header) + 1
    end = next((n for n in range(start, len(lines)) if lines[n].startswith("[")), len(lines))
    for n in range(start, end):
        if lines[n].split("=")[0].strip() == key:
            lines[n] = f"{key} = {value}"
            break
    else:
        lines.insert(start, f"{key} = {value}")
    return "\n".join(lines) + "\n"


class AgentProcess:
    """hashbay-agent as a real process, its JSON log read continuously by a thread (so
    the pipe never fills) and kept for the test to look at."""

    def __init__(self, config: Path, state_dir: Path, runtime_dir: Path) -> None:
        self.runtime_dir = runtime_dir
        self.process = subprocess.Popen(
            [
                *AGENT,
                "--config",
                str(config),
                "--state-dir",
                str(state_dir),
                "--runtime-dir",
                str(runtime_dir),
                "--log-format",
                "json",
            ],
            env=dict(os.environ) | {"PYTHONUNBUFFERED": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def log(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log() if line.startswith("{")]

    def wait_for_log(self, event: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.records():
                if record.get("event") == event:
                    return record
            assert self.process.poll() is None, f"agent exited: {self.log()[-20:]}"
            time.sleep(0.05)
        raise AssertionError(f"no log line {event!r} within {timeout}s")

    @property
    def control_socket(self) -> Path:
        return self.runtime_dir / "control.sock"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)
        return self.process.returncode
