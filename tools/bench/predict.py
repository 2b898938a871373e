"""Predictive maintenance in simulated time: warning lead time, false warnings and CPU cost,
on stock and tuned boards and through what operation does to them.

The boards are statistical twins of the emulated chains (`predict_board`); the predictor
and the health model are fed the way the slot controller feeds them (`predict_scenarios`).
Each scenario gives the lead time from the first `degrading` warning to the module's
fault (median and worst; a missed warning counts 0) for a chip aging at 0.1 per hour, and
the false warnings per board-day: warnings on sound boards living through the same
conditions, on a chip other than the aging one, or raised a second time for one trend.
The tests run the same scenarios on fewer boards.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

from hashbay.agent.modules.health import HealthModel
from hashbay.agent.modules.health_settings import HealthSettings
from hashbay.agent.modules.predict import Predictor
from hashbay.agent.modules.predict_settings import PredictSettings
from hashbay.tools.bench import Figure
from hashbay.tools.bench.predict_board import (
    DAY_S,
    HOUR_S,
    BoardConditions,
    StatisticalBoard,
)
from hashbay.tools.bench.predict_scenarios import (
    Outcome,
    curtailing,
    diurnal,
    interrupted,
    restarting,
    retuning,
    run_board,
    steady,
    stepping,
    throttling,
    until_fault,
    warming,
    with_store,
)

__all__ = ["HOUR_S", "BoardConditions", "StatisticalBoard", "healthy_run", "lead_time"]

AGING_PER_H = 0.1
LEAD_LIMIT_S = 24 * HOUR_S
LEAD_GOALS_H = {0.05: 2.0, 0.1: 1.0, 0.2: 0.25}
"""Median warning lead wanted per aging rate (per simulated hour) on a stock board: the
chip goes from sound to failed in about 0.5 / rate hours, its errors countable for the
last third."""

LEAD_SEEDS = tuple(range(1, 9))
SCENARIO_SEEDS = tuple(range(1, 7))
HEALTHY_SEEDS = (11, 12, 13, 14, 15, 16)
HEALTHY_DAYS = 7.0
RETUNE_DAYS = 4.0
MODULES = 3
SCENARIO_LEAD_GOALS_H = {"retune": 0.5}
"""Median lead wanted in each scenario (1 h unless named). A re-tune in the middle of
aging sets the chip back at its edge and restarts the evidence; what is left is the
chip's second, faster run to failure."""
STEP_NEIGHBOUR = 125
"""On the step scenario's aging boards this chip's rate also jumps 0.1 % → 3 % two hours in."""


def aging_chip(seed: int) -> int:
    return seed * 17 % 126


def lead_time(per_hour: float, seed: int, chip: int, *, dt_s: float = 30.0) -> Outcome:
    """A stock board with one chip aging at `per_hour` from the start, until it faults."""
    return run_board(
        seed, schedule=until_fault(1.5 / per_hour * HOUR_S, dt_s), aging={chip: per_hour}
    )


def healthy_run(seed: int, days: float, *, dt_s: float = 300.0) -> Outcome:
    """A sound board at its stock point for `days`: every warning is a false alarm."""
    return run_board(seed, schedule=steady(days, dt_s))


# -- the scenarios -------------------------------------------------------------------------

Aging = Callable[[int], Outcome]
Healthy = Callable[[int], Outcome]


def _scenarios() -> dict[str, tuple[Aging, Sequence[Healthy]]]:
    """name: (one aging board by seed, sound boards by seed in the same conditions)."""

    def aging(**kwargs: object) -> Aging:
        def run(seed: int) -> Outcome:
            return run_board(seed, aging={aging_chip(seed): AGING_PER_H}, **kwargs)  # type: ignore[arg-type]

        return run

    def healthy(**kwargs: object) -> Healthy:
        def run(seed: int) -> Outcome:
            return run_board(seed, **kwargs)  # type: ignore[arg-type]

        return run

    def interrupted_by(how: str) -> Aging:
        def run(seed: int) -> Outcome:
            return with_store(
                lambda directory: run_board(
                    seed,
                    schedule=interrupted(LEAD_LIMIT_S, how, directory),
                    aging={aging_chip(seed): AGING_PER_H},
                    book=True,
                    store_dir=directory,
                )
            )

        return run

    def restarted(how: str) -> Healthy:
        def run(seed: int) -> Outcome:
            return with_store(
                lambda directory: run_board(
                    seed,
                    schedule=restarting(6 * HOUR_S, 3.0, how, directory),
                    book=True,
                    store_dir=directory,
                )
            )

        return run

    def stepped(*, tuned: bool) -> Healthy:
        def run(seed: int) -> Outcome:
            chip = aging_chip(seed)
            schedule = stepping(chip, 0.001, 0.03, 12 * HOUR_S, 3.0)
            return run_board(seed, schedule=schedule, tuned=tuned)

        return run

    return {
        "tuned": (
            aging(schedule=until_fault(LEAD_LIMIT_S), tuned=True),
            [healthy(schedule=diurnal(HEALTHY_DAYS), tuned=True)],
        ),
        "retune": (
            aging(
                schedule=retuning(12 * HOUR_S, 2.0, 30.0), tuned=True, aging_starts_s=11 * HOUR_S
            ),
            [healthy(schedule=retuning(12 * HOUR_S, RETUNE_DAYS), tuned=True)],
        ),
        "throttle": (
            aging(schedule=throttling(LEAD_LIMIT_S / DAY_S, dt_s=30.0)),
            [
                healthy(schedule=throttling(HEALTHY_DAYS)),
                healthy(schedule=throttling(HEALTHY_DAYS / 2), tuned=True),
            ],
        ),
        "curtail": (
            aging(schedule=curtailing(LEAD_LIMIT_S / DAY_S)),
            [healthy(schedule=curtailing(HEALTHY_DAYS, dt_s=60.0))],
        ),
        "restart": (interrupted_by("restart"), [restarted("restart")]),
        "slot_move": (interrupted_by("move"), [restarted("move")]),
        "warming": (
            aging(schedule=warming(LEAD_LIMIT_S, 1.5)),
            [healthy(schedule=warming(2 * DAY_S, 1.5, 60.0, up_to_c=12.0), tuned=True)],
        ),
        "step": (
            aging(schedule=stepping(STEP_NEIGHBOUR, 0.001, 0.03, 2 * HOUR_S, 1.0)),
            [stepped(tuned=False), stepped(tuned=True)],
        ),
    }


def scenario_figures(name: str, aging: Aging, healthy: Sequence[Healthy]) -> list[Figure]:
    runs = [aging(seed) for seed in SCENARIO_SEEDS]
    sound = [run(seed) for run in healthy for seed in HEALTHY_SEEDS]
    goal_h = SCENARIO_LEAD_GOALS_H.get(name, 1.0)
    leads = [r.lead_s / HOUR_S if r.lead_s is not None else 0.0 for r in runs]
    false = sum(r.false_warnings for r in runs) + sum(r.warnings for r in sound)
    board_days = sum(r.board_days for r in (*runs, *sound))
    figures = [
        Figure(f"{name}_lead_time_median", statistics.median(leads), "h", f"> {goal_h:g} h"),
        Figure(f"{name}_lead_time_min", min(leads), "h", "> 0"),
        Figure(f"{name}_false_warnings_per_board_day", false / board_days, "", "0"),
        Figure(f"{name}_board_days", board_days, "board-days"),
    ]
    if name in ("restart", "slot_move"):
        gap = max(r.unwarned_s for r in runs) / HOUR_S
        figures.append(Figure(f"{name}_warning_gap_max", gap, "h", "0"))
    if name == "curtail":
        degraded = sum(r.degraded for r in sound) / sum(r.board_days for r in sound)
        figures.append(Figure("curtail_degraded_per_board_day", degraded, "", "0"))
    if name == "step":
        reported = sum(aging_chip(seed) in r.stepped for r, seed in _with_seeds(sound))
        figures.append(Figure("step_reported_share", reported / len(sound), "", "1"))
    return figures


def _with_seeds(runs: list[Outcome]) -> list[tuple[Outcome, int]]:
    seeds = list(HEALTHY_SEEDS) * (len(runs) // len(HEALTHY_SEEDS))
    return list(zip(runs, seeds, strict=True))


# -- cost ----------------------------------------------------------------------------------


def cost_at(
    board: StatisticalBoard, *, warm_h: float = 25.0, measure_h: float = 2.0
) -> tuple[float, float, float]:
    """(mean µs of health + predictor per 1 Hz sample, longest predictor update ms, mean
    screened chip-windows per bucket boundary) once every window is full of evidence."""
    chips = board.conditions.chip_count
    predictor = Predictor(PredictSettings(), chips, nominal_board_v=board.board_v)
    model = HealthModel(HealthSettings(), chips, board_v_target=board.board_v)
    for _ in range(round(warm_h * 60)):
        predictor.update(board.step(60.0))
    samples = [board.step(1.0) for _ in range(round(measure_h * HOUR_S))]
    screened = predictor.work.screened
    costs, longest = [], 0.0
    clock = time.perf_counter
    for sample in samples:
        started = clock()
        model.update(sample)
        mid = clock()
        predictor.update(sample)
        ended = clock()
        costs.append(ended - started)
        longest = max(longest, ended - mid)
    boundaries = measure_h * HOUR_S / PredictSettings().bucket_s
    return (
        statistics.fmean(costs) * 1e6,
        longest * 1e3,
        (predictor.work.screened - screened) / boundaries,
    )


def tuned_board(seed: int) -> StatisticalBoard:
    board = StatisticalBoard(seed)
    board.tune()
    board.sleep(1.0)
    return board


def run() -> list[Figure]:
    figures = []
    for per_hour, goal_h in LEAD_GOALS_H.items():
        runs = [lead_time(per_hour, seed, aging_chip(seed)) for seed in LEAD_SEEDS]
        leads = [r.lead_s / HOUR_S if r.lead_s is not None else 0.0 for r in runs]
        name = f"lead_time_{per_hour:g}_per_h"
        figures.append(Figure(f"{name}_median", statistics.median(leads), "h", f"> {goal_h:g} h"))
        figures.append(Figure(f"{name}_min", min(leads), "h", "> 0"))
    healthy = [healthy_run(seed, HEALTHY_DAYS) for seed in HEALTHY_SEEDS]
    board_days = sum(r.board_days for r in healthy)
    alarms = sum(r.warnings + r.degraded for r in healthy)
    figures.append(Figure("healthy_board_days", board_days, "board-days"))
    figures.append(Figure("false_alarms_per_board_day", alarms / board_days, "", "0"))
    for name, (aging, sound) in _scenarios().items():
        figures.extend(scenario_figures(name, aging, sound))
    mean_us, longest_ms, screened = cost_at(tuned_board(3))
    figures.append(Figure("health_predict_cost_per_sample_tuned", mean_us, "µs"))
    figures.append(Figure("predict_busiest_boundary_tuned", longest_ms, "ms", "< 50 ms"))
    figures.append(Figure("predict_chips_screened_per_boundary_tuned", screened, ""))
    overclocked = StatisticalBoard(3, conditions=BoardConditions(freq_mhz=520.0, board_temp_c=70.0))
    _, worst_ms, _ = cost_at(overclocked)
    figures.append(Figure("predict_busiest_boundary_overclocked", worst_ms, "ms", "< 50 ms"))
    figures.append(
        Figure(
            "health_predict_core_share_3x126_1hz",
            MODULES * mean_us / 1e6 * 100,
            "% of a core",
            "< 1 %",
        )
    )
    return figures
