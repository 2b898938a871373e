"""The shapes of what the agent knows about each module, shared by the health model, the
slot state machines and every publisher (MQTT, control socket, miner API, console).

Frozen dataclasses with units in their names; `to_json` gives what goes on the wire.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class SlotState(enum.StrEnum):
    EMPTY = "empty"
    INSERTED = "inserted"
    IDENTIFYING = "identifying"
    POWERING = "powering"
    ENUMERATING = "enumerating"
    RAMPING = "ramping"
    HASHING = "hashing"
    DEGRADED = "degraded"
    FAULT = "fault"
    SLEEPING = "sleeping"  # identified, powered down on purpose (curtailed, unprofitable)
    DRAINING = "draining"
    SAFE_TO_REMOVE = "safe_to_remove"


@dataclass(frozen=True)
class ChipSample:
    """Cumulative counters of one chip since its chain was enumerated."""

    nonces: int
    hw_errors: int
    timeouts: int
    work: float  # hashes represented by verified nonces
    freq_mhz: float


@dataclass(frozen=True)
class ModuleSample:
    """One poll of one hashing module, in the rig's clock (seconds)."""

    at_s: float
    chips: tuple[ChipSample, ...]
    expected_hs: float  # what the chips should do at their frequencies
    temps_c: tuple[float | None, ...]  # per sensor; None = not readable this poll
    board_v: float | None
    board_a: float | None
    dcdc_temp_c: float | None
    rail_fault: str | None  # a latched DC-DC / hot-swap fault in words, or None
    fans_stalled: int
    missing_chips: tuple[int, ...] = ()  # chips that did not answer the last poll
    hashing_for_s: float | None = None  # since the chain last started hashing; None: always
    bus_noise: tuple[str, ...] = ()  # the module's noisy bus devices, in words


class HealthLevel(enum.StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    FAULT = "fault"


@dataclass(frozen=True)
class Reason:
    """One thing that lowered the score, with the number behind it."""

    code: str  # stable identifier, e.g. "hashrate_low", "chip_errors", "chips_missing"
    text: str  # for people: "hashrate 71.0 TH/s is 12 % below expected 80.7 TH/s"
    penalty: float


@dataclass(frozen=True)
class Health:
    score: float  # 0..100
    level: HealthLevel
    reasons: tuple[Reason, ...]
    hashrate_hs: float
    expected_hs: float
    hw_error_rate: float  # share of reported nonces that did not verify, recent window
    chips_answering: int
    chips_total: int
    worst_chips: tuple[tuple[int, float], ...] = ()  # (chip, error rate), worst first


@dataclass(frozen=True)
class ErrorStep:
    """A chip whose error rate jumped once and stayed: a change, not aging."""

    chip: int
    rate_before: float
    rate_after: float


@dataclass(frozen=True)
class Prediction:
    degrading: bool
    time_to_failure_s: float | None
    trend: str  # in words: "error rate of chip 17 doubling every 2.1 h"
    chip: int | None = None
    confidence: float = 0.0
    steps: tuple[ErrorStep, ...] = ()  # chips whose error rate stepped up, worst first


@dataclass(frozen=True)
class BusDevice:
    """One I2C device of a slot: its failed transactions by kind since the agent started,
    and the share that failed over the judging window (`alarms.bus_window_s`)."""

    device: str  # "DC-DC", "hot-swap", "EEPROM", "sensor 0"
    address: int
    nacks: int
    pec_errors: int
    timeouts: int
    bus_errors: int
    error_share: float  # 0 until the window holds enough transactions
    noisy: bool

    @property
    def failed(self) -> int:
        return self.nacks + self.pec_errors + self.timeouts + self.bus_errors


@dataclass(frozen=True)
class SlotStatus:
    slot: int
    state: SlotState
    serial: str | None = None
    model: str | None = None
    detail: str = ""  # why it is in this state, in words
    health: Health | None = None
    prediction: Prediction | None = None
    temps_c: tuple[float | None, ...] = ()
    board_v: float | None = None
    power_w: float | None = None
    freq_mhz: float | None = None
    locate: str = "off"
    since: float = field(default=0.0)  # unix time of the last transition
    board_target_v: float | None = None  # the operating point being held, and why
    point: str = ""
    budget_w: float | None = None  # the governor's watt budget for this board, if any
    throttle: float = 1.0  # clock scale set by protection (1 = none)
    throttle_reason: str = ""
    restarts: int = 0  # automatic restarts after faults, in the current window
    tuning: str = ""  # autotuning progress, or the tuned profile in words
    bus: tuple[BusDevice, ...] = ()  # the slot's I2C devices (while its module hashes)
    fault_code: int | None = None  # agent/core/fault_codes.py: why it is faulted or degraded

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data
