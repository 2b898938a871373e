"""Fan control and protection on the simulator's physics: settling, overshoot, quiet mode,
and what the loops cost per call.

The plant is tools/sim/plant.py — three 1.3 kW boards (physics.BoardThermal) cooled by
four simulated fans with their spin-up and spin-down — stepped by hand one second at a
time, the same harness the tests hold the controllers to. Times are simulated seconds.
"""

from __future__ import annotations

import time

from hashbay.agent.modules.protection import BoardGuard
from hashbay.agent.modules.protection_settings import ProtectionSettings
from hashbay.agent.thermal.fan_control import FanController
from hashbay.agent.thermal.noise import FanModel, NoiseModel
from hashbay.agent.thermal.thermal_settings import ThermalSettings
from hashbay.tools.bench import Figure
from hashbay.tools.sim.plant import ThermalPlant, zero_crossings

SETTINGS = ThermalSettings()
TARGET_C = SETTINGS.target_c
NOISE = NoiseModel([FanModel(6000.0, 69.0, 0.1)] * 4)
BAND_C = 0.5


def _loop() -> FanController:
    return FanController(SETTINGS, duty_min=0.2, duty_max=1.0, force_above_c=85.0, initial_duty=1.0)


def _trace(
    plant: ThermalPlant,
    loop: FanController,
    seconds: int,
    *,
    start_s: int = 0,
    cap_dba: float | None = None,
    power_w: float | None = None,
) -> list[float]:
    temps = []
    for t in range(start_s, start_s + seconds):
        cap = None if cap_dba is None else NOISE.duty_for_cap(cap_dba)
        command = loop.update(float(t), plant.hottest_c(), cap_duty=cap)
        plant.set_duty(command.duty)
        if power_w is not None:
            plant.power_w = [power_w * command.power_scale] * len(plant.power_w)
        plant.step(1.0)
        temps.append(plant.hottest_c())
    return temps


def _settle_s(temps: list[float], around_c: float) -> float:
    """Seconds until the trace enters ±BAND_C of `around_c` for good."""
    for i in range(len(temps)):
        if all(abs(t - around_c) <= BAND_C for t in temps[i:]):
            return float(i)
    return float("inf")


def cold_start() -> tuple[float, float, int]:
    plant = ThermalPlant(duty=1.0)
    try:
        temps = _trace(plant, _loop(), 1200)
    finally:
        plant.close()
    return _settle_s(temps, TARGET_C), max(temps) - TARGET_C, zero_crossings(temps, TARGET_C, 0.3)


def load_step(power_w: float) -> tuple[float, float]:
    plant = ThermalPlant(duty=1.0)
    try:
        loop = _loop()
        _trace(plant, loop, 900)
        plant.power_w = [power_w] * 3
        temps = _trace(plant, loop, 1200, start_s=900)
    finally:
        plant.close()
    return _settle_s(temps, TARGET_C), max(abs(t - TARGET_C) for t in temps)


def quiet_run(cap_dba: float) -> tuple[float, float, float]:
    plant = ThermalPlant(duty=1.0)
    try:
        loop = _loop()
        _trace(plant, loop, 900, power_w=1300.0)
        temps = _trace(plant, loop, 2400, start_s=900, cap_dba=cap_dba, power_w=1300.0)
        scale = loop.limiter.scale
        noise = plant.noise_dba()
    finally:
        plant.close()
    return max(temps), scale, noise


def cost_us(calls: int = 20000) -> tuple[float, float]:
    loop = _loop()
    started = time.perf_counter()
    for n in range(calls):
        loop.update(float(n), 75.0 + (n % 7) * 0.0625, cap_duty=0.7)
    loop_us = (time.perf_counter() - started) / calls * 1e6
    guard = BoardGuard(ProtectionSettings())
    temps = [(70.0 + (n % 5) * 0.0625, 74.0 + (n % 3) * 0.0625) for n in range(calls)]
    started = time.perf_counter()
    for n, reading in enumerate(temps):
        guard.assess(n * 0.02, reading, 1300.0)
    guard_us = (time.perf_counter() - started) / calls * 1e6
    return loop_us, guard_us


def run() -> list[Figure]:
    settle_s, overshoot_c, crossings = cold_start()
    figures = [
        Figure("fan_cold_start_settle_to_0.5C", settle_s, "s", "< 300 s"),
        Figure("fan_cold_start_overshoot", overshoot_c, "°C", "< 1.5 °C"),
        Figure("fan_cold_start_target_crossings", crossings, "", "0"),
    ]
    for power_w in (1450.0, 1150.0):
        settle_s, deviation_c = load_step(power_w)
        name = f"fan_step_to_{power_w:.0f}W"
        figures.append(Figure(f"{name}_settle_to_0.5C", settle_s, "s", "< 400 s"))
        figures.append(Figure(f"{name}_max_deviation", deviation_c, "°C", "< 2.5 °C"))
    peak_c, scale, noise = quiet_run(65.0)
    hold_c = TARGET_C + SETTINGS.power_margin_c
    figures += [
        Figure("quiet_65dBA_peak", peak_c, "°C", f"< {hold_c + 2:g} °C (warning at 80)"),
        Figure("quiet_65dBA_power_scale", scale, "", "0.8..0.98"),
        Figure("quiet_65dBA_noise", noise, "dB(A)", "<= 65"),
    ]
    loop_us, guard_us = cost_us()
    figures += [
        Figure("fan_loop_update_cost", loop_us, "µs", "< 100 µs"),
        Figure("protection_assess_cost", guard_us, "µs", "< 50 µs (20 ms path, 8 boards)"),
    ]
    return figures
