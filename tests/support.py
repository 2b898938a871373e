"""Helpers shared by the tests: real sockets, real processes, configs on the simulated rig."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from hashbay.agent.config import Config, default_config_path
from hashbay.tools.sim.configs import in_process_config

AGENT = [sys.executable, "-m", "hashbay.agent.main"]


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
