"""What a slot controller needs from the rest of the agent, and the shapes it needs them in.

The controller sees the governor, the health model, the predictor store and the tuner
through these narrow protocols, so unit tests and benchmarks can stand in for any of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hashbay.agent.core.alarm_settings import AlarmSettings
from hashbay.agent.core.alarms import AlarmGate
from hashbay.agent.core.events import EventBus
from hashbay.agent.core.status import Health, ModuleSample, Prediction
from hashbay.agent.mining.work import WorkSource
from hashbay.agent.modules.protection_settings import ProtectionSettings
from hashbay.agent.modules.sweep import SensorSweep
from hashbay.agent.power.governor import Mode
from hashbay.agent.tuning.tune_settings import TuneSettings
from hashbay.agent.tuning.tune_store import Loaded, TuneStore
from hashbay.drivers.eeprom import BoardIdentity
from hashbay.drivers.envelope import BoardLimits, SafetyEnvelope


class CommandRefused(Exception):
    """A command that cannot apply to the slot as it is (the reply says why)."""


class HealthTracker(Protocol):
    def update(self, sample: ModuleSample, prediction: Prediction | None = None) -> Health: ...

    def set_board_v_target(self, board_v: float | None) -> None: ...


class TrendTracker(Protocol):
    newly_raised: bool  # the last update raised a warning not told about before

    def update(self, sample: ModuleSample) -> Prediction: ...

    def skip(self, sample: ModuleSample) -> None: ...


class TrendKeeper(Protocol):
    """Each module's predictor by serial, in memory and on disk (predict_store)."""

    def take(self, serial: str, chip_count: int, nominal_board_v: float | None) -> TrendTracker: ...

    def due(self, serial: str) -> object | None: ...

    def snapshot(self, serial: str) -> object | None: ...

    def release(self, serial: str) -> object | None: ...

    def save(self, serial: str, state: Any) -> bool: ...


@dataclass(frozen=True)
class Tuning:
    """Autotuning: how to search, and where results live per board serial."""

    settings: TuneSettings
    store: TuneStore

    def stored(self, identity: BoardIdentity, limits: BoardLimits) -> Loaded:
        return self.store.read(
            identity.serial,
            chip_count=identity.chip_count,
            limits=limits,
            board_model=identity.model,
        )


class Director(Protocol):
    """The power governor as a slot sees it: whether to run, and this board's budget."""

    def mode(self) -> Mode: ...

    def budget_w(self, slot: int) -> float | None: ...

    def refresh(self) -> None: ...


class RunFreely:
    """No governor: every board runs at its best (tests, and agents without one)."""

    def mode(self) -> Mode:
        return Mode.RUN

    def budget_w(self, slot: int) -> float | None:
        return None

    def refresh(self) -> None:
        pass


@dataclass(frozen=True)
class SlotSettings:
    ticket_difficulty: int
    ramp_step_mhz: float
    ramp_step_delay_s: float
    job_interval_s: float
    chip_poll_interval_s: float
    sample_interval_s: float
    fast_baud: bool
    power_good_timeout_s: float
    nonce_check_bits: int


class PowerBudget:
    """Watts promised to powered modules, so a new one only powers up if the PSU can carry it."""

    def __init__(self, max_w: float) -> None:
        self.max_w = max_w
        self._reserved: dict[int, float] = {}

    def reserve(self, slot: int, watts: float) -> bool:
        others = sum(w for s, w in self._reserved.items() if s != slot)
        if others + watts > self.max_w:
            return False
        self._reserved[slot] = watts
        return True

    def release(self, slot: int) -> None:
        self._reserved.pop(slot, None)

    @property
    def reserved_w(self) -> float:
        return sum(self._reserved.values())


@dataclass
class Services:
    """What a slot controller needs from the rest of the agent."""

    call: Callable[[Callable[[], Any]], Any]  # run blocking bus I/O on the hardware thread
    envelope: SafetyEnvelope
    events: EventBus
    alarms: AlarmGate  # debounces what flaps: temperature tiers, sensors, bus noise
    work: WorkSource
    budget: PowerBudget
    clock: Callable[[], float]
    fans_stalled: Callable[[], int]
    health: Callable[[BoardIdentity], HealthTracker]
    predictions: TrendKeeper
    on_change: Callable[[], None]
    protection: ProtectionSettings
    sweep: SensorSweep  # reads every guarded board's sensors each period
    tuning: Tuning
    director: Director = field(default_factory=RunFreely)
    alarm_settings: AlarmSettings = field(default_factory=AlarmSettings)  # bus noise
