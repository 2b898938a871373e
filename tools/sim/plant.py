"""A miner's airflow and heat without its chips: the plant fan control is tested on.

Boards are the simulator's lumped heat capacities (physics.BoardThermal) heated by a
power the caller sets, cooled by the mean airflow of real simulated fans (SimFan, driven
through gpiozero PWM lines on a mock pin factory, with their spin-up and spin-down).
The hottest sensor reads the board plus the outlet sensor's offset, quantised like a
12-bit TMP75. Stepped by hand, so an hour of closed-loop control takes a fraction of a
second and replays exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from gpiozero import PWMOutputDevice

from hashbay.tools.sim import physics
from hashbay.tools.sim.fans import SimFan
from hashbay.tools.sim.pins import sim_pin_factory

HOTTEST_SENSOR_OFFSET_C = 4.0  # the outlet-side sensor (tools/sim/module.py)
TMP75_LSB_C = 0.0625
SUBSTEP_S = 0.25


class ThermalPlant:
    def __init__(
        self,
        *,
        boards: int = 3,
        power_w: float = 1300.0,
        ambient_c: float = 25.0,
        fans: int = 4,
        duty: float = 1.0,
        start_c: float | None = None,
    ) -> None:
        factory = sim_pin_factory()
        self.ambient_c = ambient_c
        self.power_w = [power_w] * boards
        self.lines = [
            PWMOutputDevice(2 * i + 2, frequency=25_000, initial_value=duty, pin_factory=factory)
            for i in range(fans)
        ]
        self.fans = [SimFan(factory, 2 * i + 2, 2 * i + 3, rpm=6000.0 * duty) for i in range(fans)]
        start = ambient_c if start_c is None else start_c
        self.boards = [physics.BoardThermal(start) for _ in range(boards)]
        self.now_s = 0.0

    def set_duty(self, duty: float) -> None:
        for line, fan in zip(self.lines, self.fans, strict=True):
            if not fan.stalled:
                line.value = duty

    @property
    def airflow(self) -> float:
        return sum(f.airflow for f in self.fans) / len(self.fans)

    def step(self, dt_s: float) -> None:
        """Advance `dt_s` seconds in substeps short against the fans' spin-up time."""
        steps = max(1, math.ceil(dt_s / SUBSTEP_S - 1e-9))
        for _ in range(steps):
            sub = dt_s / steps
            for fan in self.fans:
                fan.step(sub)
            airflow = self.airflow
            for board, watts in zip(self.boards, self.power_w, strict=True):
                board.step(sub, watts, airflow, self.ambient_c)
            self.now_s += sub

    def temps_c(self) -> list[float]:
        """Each board's hottest sensor, as the agent reads it."""
        return [
            round((b.temp_c + HOTTEST_SENSOR_OFFSET_C) / TMP75_LSB_C) * TMP75_LSB_C
            for b in self.boards
        ]

    def hottest_c(self) -> float:
        return max(self.temps_c())

    def rpms(self) -> list[float]:
        return [f.rpm for f in self.fans]

    def stalled(self) -> list[bool]:
        return [f.stalled for f in self.fans]

    def noise_dba(self) -> float:
        """The level the simulator itself assigns to the fans now."""
        return physics.combine_dba(f.noise_dba for f in self.fans)

    def steady_c(self, duty: float, power_w: float | None = None) -> float:
        """Where the hottest sensor settles with every fan at `duty`."""
        watts = max(self.power_w) if power_w is None else power_w
        return (
            physics.BoardThermal.steady_state_c(watts, duty, self.ambient_c)
            + HOTTEST_SENSOR_OFFSET_C
        )

    def close(self) -> None:
        for line in self.lines:
            line.close()


def zero_crossings(values: Sequence[float], around: float, band: float = 0.0) -> int:
    """How often a trace crosses `around` by more than `band` (oscillation count)."""
    side = 0
    crossings = 0
    for value in values:
        now = 1 if value > around + band else -1 if value < around - band else 0
        if now and side and now != side:
            crossings += 1
        if now:
            side = now
    return crossings
