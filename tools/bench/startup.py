"""Time from process start to READY=1 on the default (simulated) config."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hashbay.tools.bench import Figure

RUNS = 7


def one_start(workdir: Path) -> float:
    notify = workdir / "notify.sock"
    notify.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify))
        sock.settimeout(10)
        env = dict(os.environ) | {"NOTIFY_SOCKET": str(notify)}
        started = time.perf_counter()
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hashbay.agent.daemon.main",
                "--state-dir",
                str(workdir / "state"),
                "--runtime-dir",
                str(workdir / "run"),
                "--log-format",
                "json",
            ],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            while b"READY=1" not in sock.recv(4096):
                pass
            elapsed = time.perf_counter() - started
        finally:
            agent.terminate()
            agent.wait(10)
    return elapsed


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        times = [one_start(Path(tmp)) for _ in range(RUNS)]
    return [
        Figure("start_to_ready_median", statistics.median(times), "s", "< 1 s"),
        Figure("start_to_ready_max", max(times), "s", "< 1 s"),
    ]
