"""The autotuner on full 126-chip BM1368 boards against the physics oracle: efficiency,
simulated tuning time, and the CPU the tuner itself needs.

Each board is the simulator's silicon draw for its seed, hashing on the statistical twin
of the chain (`tools/sim/tune_target.py`: Poisson nonces, errors from the physics model,
metered power) at a fixed 65 °C board temperature and the default `[autotune]` settings.
The tuned point is scored with `physics.board_point` (good hashes per joule at the chips)
and compared with `physics.efficiency_oracle` on the same voltage grid, error budget,
clock limits and temperature: the best any tuner could do knowing every die's constants.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from hashbay.agent.tuning.autotune import Autotuner, BoardProfile, voltage_grid
from hashbay.agent.tuning.tune_settings import TuneSettings
from hashbay.tools.bench import Figure
from hashbay.tools.sim import physics
from hashbay.tools.sim.tune_target import PhysicsTarget

SEEDS = (1, 2, 3, 4)
CHIPS = 126
BOARD_TEMP_C = 65.0


def tune_board(seed: int, settings: TuneSettings) -> tuple[PhysicsTarget, BoardProfile, float]:
    """(target, profile, CPU seconds of the tuner alone) for one board."""
    target = PhysicsTarget.board(
        seed,
        chip_count=CHIPS,
        ticket_difficulty=settings.ticket_difficulty,
        board_temp_c=BOARD_TEMP_C,
    )
    started = time.process_time()
    profile = asyncio.run(Autotuner(settings).run(target))
    return target, profile, time.process_time() - started - target.cpu_s


def run() -> list[Figure]:
    settings = TuneSettings()
    ratios, hours, cpu_s, tuned_j, oracle_j, worst_error = [], [], [], [], [], []
    for seed in SEEDS:
        target, profile, cpu = tune_board(seed, settings)
        best = profile.best()
        if best is None:
            raise RuntimeError(f"seed {seed}: the tuner produced no point")
        low, high = target.freq_range_mhz
        oracle = physics.efficiency_oracle(
            target.spec,
            target.silicon,
            voltage_grid(settings, target.voltage_range_v),
            BOARD_TEMP_C,
            settings.max_error,
            domains=target.domains,
            freq_min_mhz=low,
            freq_max_mhz=high,
        )
        tuned = physics.board_point(
            target.spec,
            target.silicon,
            best.freqs_mhz,
            best.board_v,
            BOARD_TEMP_C,
            domains=target.domains,
        )
        ratios.append(tuned.hashes_per_j / oracle.hashes_per_j)
        hours.append(profile.duration_s / 3600)
        cpu_s.append(cpu)
        tuned_j.append(tuned.j_per_th)
        oracle_j.append(oracle.j_per_th)
        worst_error.append(max(tuned.error_rates))
    goal_error = f"<= {settings.max_error:g}"
    return [
        Figure("tuned_vs_oracle_efficiency_min", min(ratios), "", ">= 0.95"),
        Figure("tuned_vs_oracle_efficiency_mean", statistics.fmean(ratios), "", ">= 0.95"),
        Figure("tuned_j_per_th_mean", statistics.fmean(tuned_j), "J/TH"),
        Figure("oracle_j_per_th_mean", statistics.fmean(oracle_j), "J/TH"),
        Figure("tuned_worst_chip_error_share", max(worst_error), "", goal_error),
        Figure("tuning_time_simulated_mean", statistics.fmean(hours), "h"),
        Figure("tuning_time_simulated_max", max(hours), "h"),
        Figure("tuner_cpu_per_board_mean", statistics.fmean(cpu_s), "s"),
    ]
