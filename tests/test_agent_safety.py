"""The agent in-process on simulated pins: signals, stalls and stuck polls end in the safe state."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

from hashbay.agent.daemon.app import run_agent
from hashbay.agent.daemon.config import Config, load_config
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.agent.daemon.supervisor import EXIT_SOFTWARE
from hashbay.agent.hardware.bus_backends import Buses
from hashbay.agent.hardware.rig import Rig, RigSnapshot

from .support import NotifyListener, write_config


class RecordingRig(Rig):
    """The real Rig, with a switch to make its poll hang and a log of safe-state calls."""

    def __init__(self, config: Config, buses: Buses) -> None:
        super().__init__(config, buses)
        self.hang_poll = threading.Event()
        self.release = threading.Event()
        self.safe_state_at: list[float] = []

    def poll(self) -> RigSnapshot:
        if self.hang_poll.is_set():
            self.release.wait(10)
        return super().poll()

    def safe_state(self) -> None:
        self.safe_state_at.append(time.monotonic())
        super().safe_state()

    def close(self) -> None:
        self.at_close = outputs(self)
        super().close()


Outputs = tuple[tuple[bool, ...], tuple[bool, ...], tuple[float, ...]]


def outputs(rig: Rig) -> Outputs:
    """Power enables, chain resets and fan duties as the pins stand now."""
    return (
        tuple(hw.pins.power_enabled for hw in rig.slots),
        tuple(hw.pins.in_reset for hw in rig.slots),
        tuple(fan.duty for fan in rig.fans),
    )


SAFE: Outputs = ((False,) * 3, (True,) * 3, (1.0,) * 4)


def sim_config_in(tmp_path: Path) -> Config:
    """The fast simulated-rig config with its directories under tmp_path."""
    config = load_config(write_config(tmp_path / "agent.toml"))
    config = config.with_dirs(str(tmp_path / "state"), str(tmp_path / "run"))
    for directory in (config.agent.state_dir, config.agent.runtime_dir):
        Path(directory).mkdir(parents=True, exist_ok=True)
    return config


def run_with(
    config: Config, notifier: SystemdNotifier
) -> tuple[asyncio.Task[int], list[RecordingRig]]:
    rigs: list[RecordingRig] = []

    def factory(config: Config, buses: Buses) -> Rig:
        rigs.append(RecordingRig(config, buses))
        return rigs[-1]

    task = asyncio.create_task(run_agent(config, notifier=notifier, rig_factory=factory))
    return task, rigs


async def until(predicate: object, limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def hashing(rig: Rig) -> None:
    """Drive the rig the way a running miner would: boards powered, fans slowed."""
    for hw in rig.slots:
        hw.pins.enable_power(True)
        hw.pins.hold_reset(False)
    for fan in rig.fans:
        fan.set_duty(0.4)


async def test_sigterm_turns_boards_off_and_fans_up_then_exits_zero(tmp_path: Path) -> None:
    config = sim_config_in(tmp_path)
    task, rigs = run_with(config, SystemdNotifier({}))
    await until(lambda: bool(rigs))
    await asyncio.sleep(0.3)
    rig = rigs[0]
    hashing(rig)
    assert outputs(rig) != SAFE
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, 5) == 0
    assert rig.safe_state_at, "safe state never applied"
    assert rig.at_close == SAFE


async def test_stuck_hardware_poll_stops_watchdog_pings_and_trips_safe_state(
    tmp_path: Path, notify_listener: NotifyListener
) -> None:
    config = sim_config_in(tmp_path)
    notifier = SystemdNotifier(
        {"NOTIFY_SOCKET": str(notify_listener.path), "WATCHDOG_USEC": "200000"}
    )
    task, rigs = run_with(config, notifier)
    await asyncio.to_thread(notify_listener.wait_for, "READY", "1")
    await asyncio.to_thread(notify_listener.wait_for, "WATCHDOG", "1")
    rig = rigs[0]
    hashing(rig)
    rig.hang_poll.set()
    hung_at = time.monotonic()
    await asyncio.sleep(config.agent.stall_timeout_s + 1.0)
    # Pings may go on until the stall timeout has passed (plus one ping period), never after.
    pings = notify_listener.arrival_times("WATCHDOG")
    assert pings and max(pings) < hung_at + config.agent.stall_timeout_s + 0.15
    assert rig.safe_state_at and rig.safe_state_at[0] - hung_at < config.agent.stall_timeout_s + 0.6
    rig.release.set()
    assert await asyncio.wait_for(task, 5) == EXIT_SOFTWARE
    assert rig.at_close == SAFE


async def test_stalled_event_loop_trips_safe_state_from_the_guard_thread(
    tmp_path: Path, notify_listener: NotifyListener
) -> None:
    config = sim_config_in(tmp_path)
    notifier = SystemdNotifier(
        {"NOTIFY_SOCKET": str(notify_listener.path), "WATCHDOG_USEC": "200000"}
    )
    task, rigs = run_with(config, notifier)
    await asyncio.to_thread(notify_listener.wait_for, "WATCHDOG", "1")
    rig = rigs[0]
    hashing(rig)
    blocked_at = time.monotonic()
    time.sleep(config.agent.stall_timeout_s + 1.0)  # the whole loop stops here, on purpose
    unblocked_at = time.monotonic()
    # While the loop was frozen, the guard thread alone made the hardware safe.
    assert rig.safe_state_at and blocked_at < rig.safe_state_at[0] < unblocked_at
    assert outputs(rig) == SAFE
    assert await asyncio.wait_for(task, 5) == EXIT_SOFTWARE
    # No ping vouched for the daemon once it had stalled, not even after the loop woke. (A
    # ping sent just before the freeze may be stamped late by a starved listener thread;
    # pings every 100 ms through a 6 s freeze could not hide in that margin.)
    assert max(notify_listener.arrival_times("WATCHDOG")) < blocked_at + 0.5
