"""The simulator's clock never outruns the simulator: a starved rig is a slower world.

On a loaded machine the simulator's thread may not run for a while. If simulated time
kept flowing with the wall clock meanwhile, the agent would see fans that pulsed not at
all and chips that answered nothing over that time — broken hardware that is not there.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest

from hashbay.agent.daemon.config import default_config_path, load_config
from hashbay.agent.hardware.rig import envelope_from
from hashbay.drivers.fan import Fan
from hashbay.tools.sim.configs import with_gpio_fans
from hashbay.tools.sim.rig import MAX_LEAD_S, MAX_TICK_S, SimClock, SimRig


@pytest.fixture
def running_rig() -> Iterator[SimRig]:
    config = with_gpio_fans(load_config(default_config_path()))  # tach pulses on pins
    config = dataclasses.replace(
        config, sim=dataclasses.replace(config.sim, control_socket=False, modules=())
    )
    rig = SimRig(config)
    rig.start()
    yield rig
    rig.stop()


def test_a_tick_credits_at_most_its_share_of_a_long_gap() -> None:
    clock = SimClock(scale=10.0)
    clock.run()
    start = clock.tick()
    time.sleep(3 * MAX_TICK_S)
    credited = clock.tick() - start
    assert credited <= MAX_TICK_S * 10.0 + 1e-9
    assert clock.lost_s >= 2 * MAX_TICK_S - 0.01


def test_readers_see_time_flow_between_ticks_but_never_backwards() -> None:
    clock = SimClock(scale=1.0)
    clock.run()
    clock.tick()
    seen = [clock.now()]
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        seen.append(clock.now())
        if len(seen) % 50 == 0:
            clock.tick()
    assert seen == sorted(seen)
    assert seen[-1] > seen[0]


def test_a_starved_simulator_stops_time_for_the_agent_too(running_rig: SimRig) -> None:
    time.sleep(0.2)
    before = running_rig.now()
    with running_rig.lock:  # the simulator's thread cannot tick meanwhile
        time.sleep(0.5)
        during = running_rig.now()
    assert during - before <= MAX_LEAD_S + 0.05  # not the half second the wall clock took


def test_a_fan_read_across_a_starved_spell_is_not_a_stall(running_rig: SimRig) -> None:
    fan = Fan(
        "fan0",
        *running_rig.config.fan[0].pins,
        running_rig.pin_factory,
        envelope_from(running_rig.config),
        clock=running_rig.now,
    )
    try:
        fan.set_duty(1.0)
        time.sleep(2.0)  # spin up
        fan.read()  # the window that saw it spin up
        time.sleep(1.0)
        assert fan.read().rpm > 4000
        readings = []
        for _ in range(3):
            with running_rig.lock:
                time.sleep(0.4)
            readings.append(fan.read())
            time.sleep(0.35)
            readings.append(fan.read())
        assert not any(r.stalled for r in readings), readings
        assert all(r.rpm > 4000 for r in readings), readings
    finally:
        fan.close()
