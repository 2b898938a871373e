"""One process drives the hardware at a time: the daemon and the self-test take the same
lock in the runtime directory, refuse each other by name, and a holder that dies —
however it dies — frees the lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hashbay.agent.daemon.instance_lock import HardwareBusy, InstanceLock
from tests.support import AGENT, AgentProcess, write_config


def test_a_second_holder_is_refused_by_the_name_and_pid_of_the_first(tmp_path: Path) -> None:
    with InstanceLock(tmp_path, "hashbay-agent"):
        with pytest.raises(HardwareBusy) as busy:
            InstanceLock(tmp_path, "hashbay-agent --self-test").acquire()
        assert str(busy.value).startswith(f"hashbay-agent (pid {os.getpid()}) holds {tmp_path}")
        assert "systemctl stop hashbay-agent" in str(busy.value)
    with InstanceLock(tmp_path, "hashbay-agent --self-test"):  # released: free again
        pass


def test_a_killed_holder_frees_the_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from hashbay.agent.daemon.instance_lock import InstanceLock\n"
            f"InstanceLock({str(tmp_path)!r}, 'holder').acquire()\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(HardwareBusy, match=rf"^holder \(pid {holder.pid}\)"):
        InstanceLock(tmp_path, "me").acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with InstanceLock(tmp_path, "me"):
        pass


def self_test_args(config: Path, runtime: Path) -> list[str]:
    return [*AGENT, "--self-test", "--config", str(config), "--runtime-dir", str(runtime)]


def test_the_self_test_refuses_while_the_daemon_runs_and_leaves_it_running(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path / "agent.toml")
    agent = AgentProcess(config, tmp_path / "state", tmp_path / "run")
    try:
        agent.wait_for_log("agent ready")
        done = subprocess.run(
            self_test_args(config, tmp_path / "run"), capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 75
        assert done.stderr.startswith(
            f"hashbay-agent: hashbay-agent (pid {agent.process.pid}) holds "
        )
        assert "stop it first" in done.stderr
        assert "self-test" not in done.stdout  # nothing was walked
        assert agent.process.poll() is None
    finally:
        assert agent.stop() == 0


def test_the_daemon_will_not_start_while_a_self_test_holds_the_hardware(tmp_path: Path) -> None:
    config = write_config(tmp_path / "agent.toml")
    runtime = tmp_path / "run"
    runtime.mkdir()
    with InstanceLock(runtime, "hashbay-agent --self-test"):
        args = ["--config", str(config), "--state-dir", str(tmp_path / "state")]
        done = subprocess.run(
            [*AGENT, *args, "--runtime-dir", str(runtime)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 75
    assert "hashbay-agent --self-test (pid" in done.stderr
    assert not (runtime / "control.sock").exists()
