"""The thermal service: on a hand-stepped plant (fans, boards, quiet schedule, controls,
crashes), and for real inside the agent on the simulated rig with a real mosquitto."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import pytest

from hashbay.agent.core.status import SlotState, SlotStatus
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.config import Config
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.agent.hardware.fans import READ_ATTEMPTS
from hashbay.agent.thermal.noise import FanModel, NoiseModel
from hashbay.agent.thermal.quiet import QuietSettings
from hashbay.agent.thermal.thermal import DUTY_RESOLUTION, Heat, ThermalService, heat_of
from hashbay.agent.thermal.thermal_settings import ThermalSettings
from hashbay.drivers.errors import HardwareError
from hashbay.drivers.fan import FanReading
from hashbay.tools.broker import HOST, Broker, mosquitto_available
from hashbay.tools.sim.plant import ThermalPlant
from hashbay.tools.sim.rig import SimRig

from .support import rig_config

T = TypeVar("T")
NOISE = NoiseModel([FanModel(6000.0, 69.0, 0.1)] * 4)


class PlantFan:
    """One of the plant's PWM lines, as the service drives a fan; counts writes. `lost`
    writes fail first, as on a noisy bus."""

    def __init__(self, plant: ThermalPlant, index: int) -> None:
        self.plant, self.index = plant, index
        self.writes: list[float] = []
        self.lost = 0

    def set_duty(self, duty: float) -> float:
        if self.lost:
            self.lost -= 1
            raise HardwareError(f"fan {self.index}: Input/output error (bus error)")
        self.plant.lines[self.index].value = duty
        self.writes.append(duty)
        return duty


@dataclass
class Bench:
    plant: ThermalPlant
    fans: list[PlantFan]
    service: ThermalService
    local: list[datetime.datetime]
    heat: list[Callable[[], Heat]]

    async def run(self, seconds: int) -> None:
        """Step the service and the plant; the boards draw what the governor would allow."""
        for _ in range(seconds):
            await self.service.step()
            self.plant.power_w = [1300.0 * self.service.power_scale()] * 3
            self.plant.step(1.0)


async def inline(fn: Callable[[], T]) -> T:
    return fn()


def make_bench(
    *, thermal: ThermalSettings | None = None, quiet: QuietSettings | None = None
) -> Bench:
    plant = ThermalPlant(power_w=1300.0, duty=1.0)
    fans = [PlantFan(plant, i) for i in range(4)]
    local = [datetime.datetime(2026, 3, 2, 12, 0)]
    heat: list[Callable[[], Heat]] = [lambda: Heat(plant.hottest_c(), 3)]

    def readings() -> list[FanReading]:
        return [
            FanReading(line.value, fan.rpm, fan.stalled)
            for line, fan in zip(plant.lines, plant.fans, strict=True)
        ]

    service = ThermalService(
        thermal or ThermalSettings(),
        quiet or QuietSettings(),
        NOISE,
        fans=fans,
        call=inline,
        heat=lambda: heat[0](),  # noqa: PLW0108 - a test swaps heat[0] later
        fan_readings=readings,
        clock=lambda: plant.now_s,
        duty_min=0.2,
        duty_max=1.0,
        safe_duty=1.0,
        force_above_c=85.0,
        local_now=lambda: local[0],
    )
    return Bench(plant, fans, service, local, heat)


@pytest.fixture
def bench() -> Iterator[Bench]:
    made = make_bench()
    yield made
    made.plant.close()


async def test_the_service_holds_the_target_and_writes_the_fans_only_when_needed(
    bench: Bench,
) -> None:
    await bench.run(900)
    status = bench.service.status
    assert status.code == "holding_target"
    assert status.hottest_c == pytest.approx(75.0, abs=0.5)
    assert status.duty is not None and 0.2 < status.duty < 1.0
    assert status.noise_dba == pytest.approx(bench.plant.noise_dba(), abs=0.1)
    assert bench.service.noise_dba() == status.noise_dba
    writes = bench.fans[0].writes
    assert len(writes) < 300  # not once a second
    steps = [abs(b - a) for a, b in itertools.pairwise(writes)]
    assert min(steps) >= DUTY_RESOLUTION
    assert all(fan.writes == writes for fan in bench.fans)  # one common duty
    data = json.loads(json.dumps(bench.service.status_json()))
    assert data["reason"]["code"] == "holding_target"
    assert data["reason"]["text"].startswith("holding the hottest board at 75 °C")
    assert data["power"] == {"scale": 1.0, "code": "full", "text": "full power"}
    assert data["target_c"] == 75.0 and data["quiet"] is False and data["noise_cap_dba"] is None


async def test_quiet_follows_the_schedule_in_local_time() -> None:
    bench = make_bench(quiet=QuietSettings(mode="schedule", max_dba=62.0))
    try:
        await bench.run(600)
        assert not bench.service.status.quiet
        bench.local[0] = datetime.datetime(2026, 3, 2, 23, 30)
        await bench.run(120)
        status = bench.service.status
        assert status.quiet and status.noise_cap_dba == 62.0
        assert status.duty is not None and status.duty <= NOISE.duty_for_cap(62.0) + 1e-9
        assert status.noise_dba is not None and status.noise_dba <= 62.05
        assert status.code == "quiet_capped"
        bench.local[0] = datetime.datetime(2026, 3, 3, 7, 0)
        await bench.run(5)
        assert not bench.service.status.quiet
        assert bench.service.status.code == "holding_target"
    finally:
        bench.plant.close()


async def test_quiet_under_load_asks_the_governor_for_less_power() -> None:
    bench = make_bench(quiet=QuietSettings(mode="on", max_dba=60.0))
    try:
        await bench.run(300)
        assert bench.service.power_scale() < 1.0
        assert bench.service.status_json()["power"]["code"] == "quiet_limited"
    finally:
        bench.plant.close()


@dataclass(frozen=True)
class Controls:
    quiet: str | None = None
    fan_override: float | None = None


async def test_operator_controls_override_the_configured_mode_and_the_loop(bench: Bench) -> None:
    await bench.run(10)
    bench.service.follow_controls(Controls(quiet="on", fan_override=0.5))
    await bench.run(1)
    status = bench.service.status
    assert (status.duty, status.code, status.override_duty) == (0.5, "override", 0.5)
    assert status.quiet and status.quiet_mode == "on"
    bench.service.follow_controls(Controls())
    await bench.run(1)
    assert bench.service.status.code != "override"
    assert bench.service.status.quiet_mode == "off"
    with pytest.raises(ValueError, match="from 0 to 1"):
        bench.service.set_fan_override(1.5)
    with pytest.raises(ValueError, match="one of off, on, schedule"):
        bench.service.set_quiet_mode("loud")


async def test_a_stalled_fan_sends_the_others_to_full_speed_at_once(bench: Bench) -> None:
    await bench.run(600)
    assert bench.service.status.duty is not None and bench.service.status.duty < 1.0
    bench.plant.fans[2].stall()
    await bench.run(1)
    status = bench.service.status
    assert (status.code, status.duty, status.fans_stalled) == ("fan_stalled", 1.0, 1)
    assert all(fan.writes[-1] == 1.0 for fan in bench.fans)


async def test_disabled_control_leaves_the_fans_alone_but_still_estimates_noise() -> None:
    bench = make_bench(thermal=ThermalSettings(enabled=False))
    try:
        await bench.run(30)
        assert all(not fan.writes for fan in bench.fans)
        assert bench.service.status.code == "disabled"
        assert bench.service.noise_dba() == pytest.approx(69.0 + 6.02, abs=0.1)
    finally:
        bench.plant.close()


async def test_a_crashing_loop_leaves_the_fans_at_the_safe_duty(bench: Bench) -> None:
    await bench.run(600)
    assert bench.fans[0].writes[-1] < 1.0

    def broken() -> Heat:
        raise RuntimeError("slot statuses unavailable")

    bench.heat[0] = broken
    with pytest.raises(RuntimeError, match="unavailable"):
        await asyncio.wait_for(bench.service.run(), 5)
    assert all(fan.writes[-1] == 1.0 for fan in bench.fans)


async def test_a_lost_fan_write_is_retried_not_a_crash_and_not_taken_as_written(
    bench: Bench,
) -> None:
    await bench.run(600)
    before = bench.fans[1].writes[-1]
    bench.fans[1].lost = 2  # two transactions lost: asked again at once, lands
    bench.service.set_fan_override(1.0)
    await bench.service.step()
    assert bench.fans[1].writes[-1] == 1.0
    bench.service.set_fan_override(0.5)
    bench.fans[1].lost = 2 * READ_ATTEMPTS  # two whole steps lost on this fan
    for _ in range(2):
        await bench.service.step()
        assert bench.fans[1].writes[-1] == 1.0
        assert bench.service.status.duty == 1.0  # still what the fans were last given
    await bench.service.step()
    assert [fan.writes[-1] for fan in bench.fans] == [0.5] * 4
    assert bench.service.status.duty == 0.5
    assert before < 1.0


def test_heat_counts_hashing_boards_and_treats_a_blind_one_as_unknown() -> None:
    def slot(index: int, state: SlotState, *temps: float | None) -> SlotStatus:
        return SlotStatus(index, state, temps_c=temps)

    hashing = SlotState.HASHING
    assert heat_of([slot(0, hashing, 60.0, 64.5), slot(1, SlotState.DEGRADED, 70.0)]) == Heat(
        70.0, 2
    )
    assert heat_of([slot(0, hashing, 60.0, None)]) == Heat(60.0, 1)
    assert heat_of([slot(0, hashing, 60.0), slot(1, hashing, None, None)]) == Heat(None, 2)
    assert heat_of([slot(0, hashing), slot(1, SlotState.FAULT, 99.0)]) == Heat(None, 0)
    assert heat_of([slot(0, hashing, float("nan"))]) == Heat(None, 1)


# -- the real agent on the simulated rig ------------------------------------------------

PREFIX = "th"
MINER = "sim-rig-01"
needs_broker = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed")


def agent_config(tmp_path: Path, broker: Broker) -> Config:
    """The packaged rig with short boards, fast polls, and fans that slow down quickly."""
    config = rig_config(tmp_path)
    return dataclasses.replace(
        config,
        # Half-second polls: enough tach pulses per reading that a busy machine cannot
        # make a turning fan look stalled.
        agent=dataclasses.replace(config.agent, poll_interval_s=0.5),
        thermal=dataclasses.replace(config.thermal, interval_s=0.1, duty_down_per_s=0.2),
        mqtt=dataclasses.replace(
            config.mqtt,
            enabled=True,
            host=broker.host,
            port=broker.port,
            topic_prefix=PREFIX,
            discovery=False,
            state_interval_s=1.0,
        ),
    )


async def until(condition: Callable[[], Any], what: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def miner_states(broker: Broker) -> AsyncIterator[list[dict[str, Any]]]:
    """Every miner state the agent publishes, decoded."""
    seen: list[dict[str, Any]] = []
    async with aiomqtt.Client(HOST, broker.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(f"{PREFIX}/{MINER}/state", qos=1)

        async def read() -> None:
            with suppress(aiomqtt.MqttError):
                async for message in client.messages:
                    if isinstance(message.payload, bytes) and message.payload:
                        seen.append(json.loads(message.payload))

        task = asyncio.create_task(read())
        yield seen
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


@needs_broker
async def test_in_the_agent_fans_come_down_and_a_stall_sends_the_others_to_max(
    tmp_path: Path, broker: Broker, miner_states: list[dict[str, Any]]
) -> None:
    agent = Agent(agent_config(tmp_path, broker), notifier=SystemdNotifier({}))
    task = asyncio.create_task(agent.run())
    rig: SimRig = agent.rig.buses.sim
    try:
        await until(
            lambda: all(c.state is SlotState.HASHING for c in agent.controllers), "all hashing"
        )
        await until(
            lambda: (
                agent.thermal.status.code == "holding_target"
                and all(f.duty < 0.5 for f in rig.fans)
            ),
            "fans below half speed under control",
        )
        hottest = agent.thermal.status.hottest_c
        assert hottest is not None and hottest < agent.config.thermal.target_c
        noise = agent.state.noise_dba()
        assert noise is not None and noise < 69.0 + 6.0
        published = await until(
            lambda: [
                s
                for s in miner_states
                if s.get("thermal", {}).get("reason", {}).get("code") == "holding_target"
                and s.get("fan_noise_dba") is not None
            ],
            "thermal status on MQTT",
        )
        assert published[-1]["thermal"]["target_c"] == 75.0

        rig.fan_stall(1)
        await until(
            lambda: (
                all(f.duty == 1.0 for i, f in enumerate(rig.fans) if i != 1)
                and agent.thermal.status.code == "fan_stalled"
            ),
            "the other fans at full speed",
            timeout_s=10,
        )
        stalled = await until(
            lambda: [
                s
                for s in miner_states
                if s.get("thermal", {}).get("reason", {}).get("code") == "fan_stalled"
                and s["fans"][1]["stalled"]
            ],
            "the stall on MQTT",
        )
        assert stalled[-1]["thermal"]["fans_stalled"] >= 1
        assert stalled[-1]["thermal"]["duty"] == 1.0
    finally:
        agent.supervisor.request_stop("test over")
        assert await asyncio.wait_for(task, 15) == 0
