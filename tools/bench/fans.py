"""The agent's CPU with its fans on GPIO (a Python callback per tach edge) and on an EMC2305
fan controller (tach timed in the chip, one I2C read per fan per poll), on the simulated
rig at 3 x 126 chips polled once a second, MQTT and the miner API off.

Each backend runs the agent as its own process for STEADY_S once every board hashes. The
simulator runs inside that process, so the agent's CPU is the process's, less the
simulator's threads (`sim-*`), corrected for the work each side does on the other's
threads: the simulated I2C device models run on the agent's hardware thread when it calls
the bus (taken out), and the agent's gpiozero edge callbacks, its tach counting, run on
the simulator's thread when a simulated fan pulses its pin (put back: on a Pi they run
in the GPIO library's thread, inside the agent). Both are timed with the thread CPU clock
where they happen and read from the simulator's status.

The whole agent's figure moves by a few tenths of a percent from run to run, as much as
the fans' share of it, so the fan path alone is also timed in this process: the edge
callbacks per tach pulse (as the pins time them for the simulator's status) and a GPIO
fan's read, against a controller fan's read less the simulated part's own time, scaled
to four fans at the speed the rig's fans ran and one poll a second.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hashbay.agent.daemon.config import default_config_path
from hashbay.drivers.emc2305 import Emc2305
from hashbay.drivers.envelope import BoardLimits, FanLimits, SafetyEnvelope
from hashbay.drivers.fan import Fan, FanDevice
from hashbay.drivers.i2c import LockedI2C
from hashbay.tools.bench import Figure
from hashbay.tools.sim.control import request
from hashbay.tools.sim.emc2305 import SimEmc2305
from hashbay.tools.sim.i2c import SimI2CBus
from hashbay.tools.sim.pins import sim_pin_factory

STEADY_S = 60.0
SETTLE_S = 10.0
READY_TIMEOUT_S = 180.0
FANS = ((12, 16), (13, 20), (18, 21), (19, 26))  # the packaged rig's PWM and tach pins
PULSES = 20_000  # per fan, for the callbacks' cost
POLLS = 2_000  # reads of every fan, for the reads' cost
TICKS = os.sysconf("SC_CLK_TCK")


def config_text(backend: str) -> str:
    """The packaged simulated rig with MQTT and the miner API off; for `emc2305` its four
    fans are on channels 1-4 of the fan controller instead of on pins."""
    text = default_config_path().read_text()
    text = text.replace("[api]\n", "[api]\nenabled = false\n") + "\n[mqtt]\nenabled = false\n"
    if backend == "emc2305":
        text = text.replace("[hardware]\n", '[hardware]\nfan_backend = "emc2305"\n')
        channels = iter(range(1, 5))
        text = re.sub(
            r"pwm_pin = \d+\ntach_pin = \d+\n", lambda _: f"channel = {next(channels)}\n", text
        )
    return text


@dataclass(frozen=True)
class Sample:
    at: float
    process_s: float
    sim_threads_s: float
    models_on_agent_s: float
    callbacks_on_sim_s: float
    sim_time_s: float
    fans_rpm: tuple[float, ...]


def _threads_cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds of all the process's threads, and of the simulator's (`sim-*`) alone."""
    total = sim = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / TICKS
        total += seconds
        if comm.startswith("sim-"):
            sim += seconds
    return total, sim


def _status(socket: Path) -> dict[str, Any]:
    reply = request(socket, "status")
    if not reply.startswith("ok "):
        raise RuntimeError(f"simulator status refused: {reply}")
    status: dict[str, Any] = json.loads(reply[3:])
    return status


def _sample(pid: int, socket: Path) -> Sample:
    status = _status(socket)
    accounting = status["cpu"]
    total, sim = _threads_cpu_s(pid)
    return Sample(
        time.monotonic(),
        total,
        sim,
        accounting["device_models_on_host_threads_s"],
        accounting["host_callbacks_on_sim_thread_s"],
        status["sim_time_s"],
        tuple(status["fans_rpm"]),
    )


def _wait_hashing(socket: Path, agent: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            raise RuntimeError(f"the agent exited with {agent.returncode}")
        try:
            slots = _status(socket)["slots"]
        except (OSError, RuntimeError):
            slots = []
        if slots and all(s.get("hashrate_ths", 0) > 0 for s in slots):
            return
        time.sleep(1.0)
    raise TimeoutError("the simulated rig did not start hashing in time")


def measure(backend: str, workdir: Path) -> tuple[Sample, Sample]:
    """Samples at the start and the end of a steady window of the agent with `backend`."""
    config = workdir / f"{backend}.toml"
    config.write_text(config_text(backend))
    runtime = workdir / f"run-{backend}"
    socket = runtime / "sim.sock"
    with (workdir / f"{backend}.log").open("w") as log:
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hashbay.agent.daemon.main",
                "--config",
                str(config),
                "--state-dir",
                str(workdir / f"state-{backend}"),
                "--runtime-dir",
                str(runtime),
                "--log-format",
                "json",
            ],
            stderr=log,
        )
        try:
            _wait_hashing(socket, agent)
            time.sleep(SETTLE_S)
            start = _sample(agent.pid, socket)
            time.sleep(STEADY_S)
            end = _sample(agent.pid, socket)
        finally:
            agent.terminate()
            agent.wait(20)
    return start, end


def shares(start: Sample, end: Sample) -> dict[str, float]:
    """Percent of a core over the window: the agent's own, and the two corrections; how
    fast simulated time ran (below 1 the simulator was starved: fewer tach pulses); and
    the fans' mean speed (the GPIO backend's cost grows with it)."""
    elapsed = end.at - start.at
    process = end.process_s - start.process_s
    sim = end.sim_threads_s - start.sim_threads_s
    models = end.models_on_agent_s - start.models_on_agent_s
    callbacks = end.callbacks_on_sim_s - start.callbacks_on_sim_s
    return {
        "agent": (process - sim - models + callbacks) / elapsed * 100,
        "models": models / elapsed * 100,
        "callbacks": callbacks / elapsed * 100,
        "sim_speed": (end.sim_time_s - start.sim_time_s) / elapsed,
        "rpm": sum(start.fans_rpm + end.fans_rpm) / len(start.fans_rpm + end.fans_rpm),
    }


@dataclass
class Spinning:
    """A rotor at a fixed speed, for the simulated controller to time."""

    rpm: float


class Ticks:
    """A clock that moves a second per poll, so every GPIO read closes a full window."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _envelope() -> SafetyEnvelope:
    return SafetyEnvelope(FanLimits(0.2, 1.0), BoardLimits(11, 15.5, 50, 800, 1800), 5500)


def _reads_s(fans: list[FanDevice], ticks: Ticks) -> float:
    """Thread CPU seconds for one poll of every fan."""
    started = time.thread_time()
    for _ in range(POLLS):
        ticks.now += 1.0
        for fan in fans:
            fan.read()
    return (time.thread_time() - started) / POLLS


def gpio_fan_path() -> tuple[float, float]:
    """(CPU seconds of the edge callbacks per tach pulse, of one poll of four fans)."""
    factory, ticks = sim_pin_factory(), Ticks()
    fans: list[FanDevice] = [
        Fan(f"fan{i}", pwm, tach, factory, _envelope(), clock=ticks)
        for i, (pwm, tach) in enumerate(FANS)
    ]
    pins = [factory.pin(tach) for _, tach in FANS]
    for pin in pins:
        for _ in range(PULSES):
            pin.drive_low()
            pin.drive_high()
    per_pulse = sum(pin.callbacks_cpu_s for pin in pins) / (PULSES * len(FANS))
    poll = _reads_s(fans, ticks)
    for fan in fans:
        fan.close()
    return per_pulse, poll


def controller_fan_path(rpm: float) -> float:
    """CPU seconds of one poll of four controller fans, less the simulated part's time."""
    bus, ticks = SimI2CBus(), Ticks()
    part = SimEmc2305(0x2F, ticks)
    bus.attach(0x2F, part)
    for channel in range(1, len(FANS) + 1):
        part.connect(channel, Spinning(rpm))
    chip = Emc2305(LockedI2C(bus), 0x2F, _envelope())
    chip.configure(range(1, len(FANS) + 1))
    fans: list[FanDevice] = [chip.fan(c, f"fan{c - 1}") for c in range(1, len(FANS) + 1)]
    models = bus.cpu_on_host_threads_s
    poll = _reads_s(fans, ticks)
    return poll - (bus.cpu_on_host_threads_s - models) / POLLS


def fan_path_figures(rpm: float) -> list[Figure]:
    """The fan path alone at four fans turning at `rpm`, polled once a second."""
    per_pulse, gpio_poll = gpio_fan_path()
    pulses_per_s = len(FANS) * rpm / 60 * 2
    controller_poll = controller_fan_path(rpm)
    return [
        Figure("tach_callbacks_per_pulse", per_pulse * 1e6, "µs"),
        Figure("gpio_fans_read_per_poll", gpio_poll * 1e6, "µs"),
        Figure("emc2305_fans_read_per_poll", controller_poll * 1e6, "µs"),
        Figure("fan_path_cpu_gpio", (pulses_per_s * per_pulse + gpio_poll) * 100, "% of a core"),
        Figure("fan_path_cpu_emc2305", controller_poll * 100, "% of a core"),
    ]


def run() -> list[Figure]:
    figures: list[Figure] = []
    speeds: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("gpio", "emc2305"):
            share = shares(*measure(backend, Path(tmp)))
            speeds.append(share["rpm"])
            figures += [
                Figure(f"agent_cpu_{backend}_fans", share["agent"], "% of a core"),
                Figure(f"sim_device_models_on_agent_{backend}", share["models"], "% of a core"),
                Figure(f"agent_callbacks_on_sim_{backend}", share["callbacks"], "% of a core"),
                Figure(f"sim_speed_{backend}", share["sim_speed"], "simulated s per s", "1"),
                Figure(f"fan_speed_mean_{backend}", share["rpm"], "rpm"),
            ]
    return figures + fan_path_figures(sum(speeds) / len(speeds))
