"""What an operator meets in the first weeks, in simulated time: the predictor and the
health model fed the way the slot controller feeds them, on boards that step, get
re-tuned, throttled, curtailed, restarted and moved.

Every scenario is a function of a seed, so the bench (`tools/run bench predict`) and the
tests replay the same boards; the bench runs more of them.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hashbay.agent.core.status import HealthLevel, ModuleSample, Prediction
from hashbay.agent.modules.health import HealthModel
from hashbay.agent.modules.health_settings import HealthSettings
from hashbay.agent.modules.predict import Predictor
from hashbay.agent.modules.predict_settings import PredictSettings
from hashbay.agent.modules.predict_store import PredictorBook, PredictStore
from hashbay.tools.bench.predict_board import (
    DAY_S,
    HOUR_S,
    BoardConditions,
    StatisticalBoard,
)

SERIAL = "HB0016001"


@dataclass
class Outcome:
    """What an operator saw of one board: warnings (true and false), faults, steps."""

    hashing_s: float = 0.0
    warnings: int = 0  # `degrading` events raised
    false_warnings: int = 0  # of those: on a chip that is not aging, or told twice
    degraded: int = 0  # times the level left OK
    warned_s: float | None = None  # first warning naming the aging chip
    fault_s: float | None = None
    predicted_ttf_s: float | None = None
    warned_chip: int | None = None
    stepped: set[int] = field(default_factory=set)  # chips reported as stepped
    worst_score: float = 100.0
    reasons: set[str] = field(default_factory=set)
    unwarned_s: float = 0.0  # hashing after the first true warning with no warning shown

    @property
    def board_days(self) -> float:
        return self.hashing_s / DAY_S

    @property
    def lead_s(self) -> float | None:
        if self.warned_s is None or self.fault_s is None:
            return None
        return max(0.0, self.fault_s - self.warned_s)


class Watch:
    """A slot controller's view of one hashing module (`SlotController._assess`): every
    poll goes to the predictor, then to the health model with the prediction; a newly
    raised warning is a `degrading` event; while tuning the predictor skips the poll."""

    def __init__(
        self,
        board: StatisticalBoard,
        *,
        aging: frozenset[int] = frozenset(),
        book: PredictorBook | None = None,
        predict: PredictSettings | None = None,
        health: HealthSettings | None = None,
        aging_starts_s: float = 0.0,
    ) -> None:
        self.board = board
        self.aging = aging
        self._aging_rates = dict(board.degradation_per_s)
        self._aging_starts_s = aging_starts_s
        if aging_starts_s > board.now_s:
            board.degradation_per_s.clear()  # sound until then
        self.predict_settings = predict or PredictSettings()
        self.health_settings = health or HealthSettings()
        self.book = book
        self.outcome = Outcome()
        self.prediction: Prediction | None = None
        self.level = HealthLevel.OK
        self._attach()

    def _attach(self) -> None:
        """The module is identified (in a slot, after a restart): its models are made."""
        chips = self.board.conditions.chip_count
        nominal_v = self.board.conditions.chip_v * self.board.conditions.domains
        if self.book is not None:
            self.predictor = self.book.take(SERIAL, chips, nominal_v)
        else:
            self.predictor = Predictor(self.predict_settings, chips, nominal_board_v=nominal_v)
        self.health = HealthModel(self.health_settings, chips, board_v_target=self.board.board_v)
        self.level = HealthLevel.OK

    @property
    def faulted(self) -> bool:
        return self.outcome.fault_s is not None

    def poll(self, sample: ModuleSample, polled_s: float) -> None:
        out = self.outcome
        last = self.board.now_s
        prediction = self.predictor.update(sample)
        self.prediction = prediction
        if out.warned_s is not None and not prediction.degrading:
            out.unwarned_s += polled_s
        if self.predictor.newly_raised:
            out.warnings += 1
            first_true = prediction.chip in self.aging and out.warned_s is None
            if first_true:
                out.warned_s, out.warned_chip = sample.at_s, prediction.chip
                out.predicted_ttf_s = prediction.time_to_failure_s
            else:
                out.false_warnings += 1
        out.stepped.update(step.chip for step in prediction.steps)
        health = self.health.update(sample, prediction)
        out.degraded += self.level is HealthLevel.OK and health.level is not HealthLevel.OK
        self.level = health.level
        out.worst_score = min(out.worst_score, health.score)
        out.reasons.update(r.code for r in health.reasons)
        if health.level is HealthLevel.FAULT:
            out.fault_s = last

    def hash(self, seconds: float, dt_s: float) -> None:
        """Hash for `seconds` (polled every `dt_s`), or until the module faults."""
        end_s = self.board.now_s + seconds
        while self.board.now_s < end_s - 1e-9 and not self.faulted:
            if not self.board.degradation_per_s and self.board.now_s >= self._aging_starts_s:
                self.board.degradation_per_s.update(self._aging_rates)
            step_s = min(dt_s, end_s - self.board.now_s)
            self.outcome.hashing_s += step_s
            self.poll(self.board.step(step_s), step_s)

    def tune(self) -> None:
        """Autotune now: the tuner's polls are skipped, the health model starts afresh."""
        started_s = self.board.now_s
        _, samples = self.board.tune()
        for sample in samples:
            self.predictor.skip(sample)
            self.health.update(sample)  # figures only: nothing is judged while tuning
        self.outcome.hashing_s += self.board.now_s - started_s
        chips = self.board.conditions.chip_count
        self.health = HealthModel(self.health_settings, chips, board_v_target=self.board.board_v)
        self.level = HealthLevel.OK

    def sleep(self, seconds: float) -> None:
        """Powered down (curtailed): the same models wake with the module."""
        self.board.sleep(seconds)

    def restart_agent(self, store_dir: Path, down_s: float = 120.0) -> None:
        """The agent stops (its state saved) and starts again: new models, same serial."""
        assert self.book is not None
        self.book.put_back(SERIAL)
        self.board.sleep(down_s)
        self.book = PredictorBook(self.predict_settings, PredictStore(store_dir))
        self._attach()

    def move_slot(self, down_s: float = 60.0) -> None:
        """Pulled and seated in another slot of the same miner."""
        assert self.book is not None
        self.book.put_back(SERIAL)
        self.board.sleep(down_s)
        self._attach()


Schedule = Callable[[Watch], None]


def run_board(
    seed: int,
    *,
    schedule: Schedule,
    aging: Mapping[int, float] | None = None,
    conditions: BoardConditions | None = None,
    tuned: bool = False,
    book: bool = False,
    store_dir: Path | None = None,
    aging_starts_s: float = 0.0,
) -> Outcome:
    """One board under `schedule` (which drives it through `Watch`), aging as given
    (from `aging_starts_s` on)."""
    board = StatisticalBoard(seed, degrading=dict(aging or {}), conditions=conditions)
    if tuned:
        paused = dict(board.degradation_per_s)
        board.degradation_per_s.clear()  # tuned on arrival, before anything ages
        board.tune()
        board.degradation_per_s.update(paused)
        board.sleep(1.0)
    settings = PredictSettings()
    registry = None
    if book:
        registry = PredictorBook(settings, PredictStore(store_dir) if store_dir else None)
    watch = Watch(
        board,
        aging=frozenset(aging or {}),
        book=registry,
        predict=settings,
        aging_starts_s=board.now_s + aging_starts_s,
    )
    schedule(watch)
    return watch.outcome


# -- schedules ---------------------------------------------------------------------------


def steady(days: float, dt_s: float = 60.0) -> Schedule:
    def run(watch: Watch) -> None:
        watch.hash(days * DAY_S, dt_s)

    return run


def until_fault(limit_s: float, dt_s: float = 30.0) -> Schedule:
    return steady(limit_s / DAY_S, dt_s)


def diurnal(days: float, swing_c: float = 3.0, dt_s: float = 60.0) -> Schedule:
    """A day's warm afternoon and cool night: the board temperature follows a sine."""

    def run(watch: Watch) -> None:
        base_c = watch.board.board_temp_c
        end_s = watch.board.now_s + days * DAY_S
        while watch.board.now_s < end_s and not watch.faulted:
            phase = 2 * math.pi * watch.board.now_s / DAY_S
            watch.board.set_board_temp(base_c + swing_c * math.sin(phase))
            watch.hash(600.0, dt_s)

    return run


def stepping(chip: int, before: float, after: float, at_s: float, days: float) -> Schedule:
    """One chip's error rate jumps from `before` to `after` at `at_s` and stays there."""

    def run(watch: Watch) -> None:
        board = watch.board
        board.fixed_error_p[chip] = before
        board.refresh_error_p()
        watch.hash(at_s, 60.0)
        board.fixed_error_p[chip] = after
        board.refresh_error_p()
        watch.hash(days * DAY_S - at_s, 60.0)

    return run


def retuning(every_s: float, days: float, dt_s: float = 60.0) -> Schedule:
    """Re-tuned every `every_s` of hashing, the tuning runs counted by the chain."""

    def run(watch: Watch) -> None:
        end_s = watch.board.now_s + days * DAY_S
        while watch.board.now_s < end_s and not watch.faulted:
            watch.hash(min(every_s, end_s - watch.board.now_s), dt_s)
            if watch.board.now_s < end_s and not watch.faulted:
                watch.tune()

    return run


def throttling(
    days: float, scale: float = 0.85, period_s: float = HOUR_S, dt_s: float = 60.0
) -> Schedule:
    """Every hour the board runs hot and protection scales its clocks for half of it."""

    def run(watch: Watch) -> None:
        board = watch.board
        board.cooled_by_air()
        full = list(board.freqs_mhz)
        end_s = board.now_s + days * DAY_S
        while board.now_s < end_s and not watch.faulted:
            board.set_point(board.board_v, full)
            watch.hash(period_s / 2, dt_s)
            board.set_point(board.board_v, [f * scale for f in full])
            watch.hash(period_s / 2, dt_s)

    return run


def curtailing(
    days: float, every_s: float = 2 * HOUR_S, asleep_s: float = 900.0, dt_s: float = 30.0
) -> Schedule:
    """Demand response: asleep for 15 minutes every two hours of hashing."""

    def run(watch: Watch) -> None:
        end_s = watch.board.now_s + days * DAY_S
        while watch.board.now_s < end_s and not watch.faulted:
            watch.hash(every_s, dt_s)
            watch.sleep(asleep_s)

    return run


def warming(
    limit_s: float, per_h_c: float, dt_s: float = 30.0, *, up_to_c: float = 40.0
) -> Schedule:
    """The board warms steadily (summer, dust on the fins), by at most `up_to_c`."""

    def run(watch: Watch) -> None:
        base_c = watch.board.board_temp_c
        start_s = watch.board.now_s
        while watch.board.now_s - start_s < limit_s and not watch.faulted:
            elapsed_h = (watch.board.now_s - start_s) / HOUR_S
            watch.board.set_board_temp(base_c + min(up_to_c, per_h_c * elapsed_h))
            watch.hash(300.0, dt_s)

    return run


def restarting(every_s: float, days: float, how: str, store_dir: Path) -> Schedule:
    """The agent restarts (or the module moves to another slot) every `every_s`."""

    def run(watch: Watch) -> None:
        end_s = watch.board.now_s + days * DAY_S
        while watch.board.now_s < end_s and not watch.faulted:
            watch.hash(min(every_s, end_s - watch.board.now_s), 60.0)
            if how == "restart":
                watch.restart_agent(store_dir)
            else:
                watch.move_slot()

    return run


def interrupted(limit_s: float, how: str, store_dir: Path, dt_s: float = 30.0) -> Schedule:
    """Hashing until the first warning, then (10 minutes later) the agent restarts or the
    module moves to another slot; then on until it faults."""

    def run(watch: Watch) -> None:
        start_s = watch.board.now_s
        while watch.outcome.warned_s is None and not watch.faulted:
            if watch.board.now_s - start_s > limit_s:
                return
            watch.hash(dt_s, dt_s)
        watch.hash(600.0, dt_s)
        if watch.faulted:
            return
        if how == "restart":
            watch.restart_agent(store_dir)
        else:
            watch.move_slot()
        watch.hash(limit_s, dt_s)

    return run


def with_store(run: Callable[[Path], Outcome]) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="hashbay-predict-") as directory:
        return run(Path(directory))
