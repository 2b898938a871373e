"""The canonical fault codes: one stable number for every fault and warning the agent raises.

Fleet tools sort, count and alert on numbers, not on sentences that change between
releases. Every cause the agent can raise (a slot fault, a protection tier, a health reason,
an alarm event) maps to one entry here, with its severity, what it means and what the
technician should do. A number, once published, is never reused for something else.

Ranges: 1xx temperature, 2xx sensors and buses, 3xx power, 4xx chips and hashing, 5xx fans,
6xx the module and its slot, 7xx pools, 8xx the agent itself.

Events carry the code in `details["code"]`, slot status in `fault_code`, the miner API in
its `faults` reply (what the pyasic backend turns into errors), and the README's table is
generated from `CATALOG` (`tools/run docs`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class Severity(enum.StrEnum):
    INFO = "info"  # something the operator may want to know; nothing is wrong
    WARNING = "warning"  # the miner works, at a cost; look when convenient
    ERROR = "error"  # a module (or the miner) does not hash; look soon
    CRITICAL = "critical"  # safety: hardware was cut, or must not be touched


@dataclass(frozen=True)
class FaultCode:
    code: int
    name: str
    severity: Severity
    meaning: str
    action: str

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "severity": self.severity.value,
            "meaning": self.meaning,
            "action": self.action,
        }


def _code(code: int, name: str, severity: Severity, meaning: str, action: str) -> FaultCode:
    return FaultCode(code, name, severity, meaning, action)


class Fault(enum.Enum):
    """Every code by name; `Fault.X.value` is its catalog entry."""

    TEMP_WARN = _code(
        101,
        "temp_warn",
        Severity.WARNING,
        "A board crossed the protection warning temperature.",
        "Check the intake temperature, the airflow path and the fans' speed.",
    )
    THROTTLED = _code(
        102,
        "throttled",
        Severity.WARNING,
        "Protection lowered a board's clock: too hot, or a fan stalled.",
        "Cool the intake or replace the stalled fan; the clock steps back up by itself.",
    )
    OVER_TEMP_CUT = _code(
        103,
        "over_temp_cut",
        Severity.CRITICAL,
        "A board reached the cutoff temperature; its power was cut.",
        "Find why it overheated (airflow, fans, intake) before it restarts.",
    )
    TOO_HOT_TO_POWER = _code(
        104,
        "too_hot_to_power",
        Severity.ERROR,
        "The board's over-temperature alert line was asserted before power-up.",
        "Let the module cool; if it is cool, check its sensor and the alert wiring.",
    )
    OT_CUT_NOT_ARMED = _code(
        105,
        "ot_cut_not_armed",
        Severity.ERROR,
        "The board's sensors would not take the hardware over-temperature limits.",
        "Reseat the module; if it persists replace it: it cannot protect itself.",
    )
    TEMP_HIGH = _code(
        106,
        "temp_high",
        Severity.WARNING,
        "Health: a board runs above the health warning temperature.",
        "Check airflow and intake temperature.",
    )
    OVERHEAT = _code(
        107,
        "overheat",
        Severity.ERROR,
        "Health: a board is above the health fault temperature.",
        "Check fans and airflow; the module restarts once cool.",
    )
    DCDC_HOT = _code(
        108,
        "dcdc_hot",
        Severity.WARNING,
        "The board's DC-DC converter runs hot.",
        "Check the converter's airflow and heatsink; lower the board's power.",
    )
    SENSOR_UNREADABLE = _code(
        201,
        "sensor_unreadable",
        Severity.WARNING,
        "A temperature sensor stopped answering; the board is cut if it lasts.",
        "Reseat the module; check its sensor and I2C wiring.",
    )
    SENSOR_FAULT_CUT = _code(
        202,
        "sensor_fault_cut",
        Severity.CRITICAL,
        "A board's temperature could no longer be trusted (sensor lost, stuck or absent); "
        "its power was cut.",
        "Replace the module or its sensor; do not run it blind.",
    )
    SENSOR_STUCK = _code(
        203,
        "sensor_stuck",
        Severity.WARNING,
        "Health: a temperature sensor reads the same value while the power moves.",
        "Check the sensor; a stuck sensor hides overheating.",
    )
    TEMPS_UNKNOWN = _code(
        204,
        "temps_unknown",
        Severity.ERROR,
        "Health: no usable temperature sensor on the board.",
        "Check the sensors and the module's I2C connector.",
    )
    BUS_NOISE = _code(
        205,
        "bus_noise",
        Severity.WARNING,
        "A slot's I2C device fails a steady share of its transactions.",
        "Reseat the module, check the connector and cable; replace if it persists.",
    )
    POWER_UP_FAILED = _code(
        301,
        "power_up_failed",
        Severity.ERROR,
        "A step of the power-up did not happen in time (hot-swap, DC-DC or rail).",
        "Reseat the module; check the PSU and the slot's power connector.",
    )
    RAIL_FAULT = _code(
        302,
        "rail_fault",
        Severity.CRITICAL,
        "The DC-DC converter or hot-swap controller latched a fault; the board was cut.",
        "Inspect the module's power stage; replace it if the fault returns.",
    )
    RAIL_VOLTAGE = _code(
        303,
        "rail_voltage",
        Severity.WARNING,
        "The board's rail is off its voltage target.",
        "Check the DC-DC converter and the PSU's output.",
    )
    RAIL_UNREADABLE = _code(
        304,
        "rail_unreadable",
        Severity.WARNING,
        "The board's rail voltage cannot be read.",
        "Check the DC-DC converter's bus connection.",
    )
    OUTPUT_STILL_LIVE = _code(
        305,
        "output_still_live",
        Severity.CRITICAL,
        "The board's output is still live after power-down.",
        "Do NOT remove the module; cut the miner's mains and call service.",
    )
    PSU_PROBLEM = _code(
        306,
        "psu_problem",
        Severity.ERROR,
        "The power supply reports a problem (fault bits, or it does not answer).",
        "Check the PSU's input, fans and status; replace it if it persists.",
    )
    CHAIN_ENUMERATION_FAILED = _code(
        401,
        "chain_enumeration_failed",
        Severity.ERROR,
        "The board's ASIC chain did not answer as expected after power-up.",
        "Reseat the module; if it persists, send it for repair (chain or UART).",
    )
    HASHRATE_LOW = _code(
        402,
        "hashrate_low",
        Severity.WARNING,
        "The module hashes clearly below what its chips should do.",
        "Look at its chips' errors; consider autotuning or repair.",
    )
    HW_ERRORS = _code(
        403,
        "hw_errors",
        Severity.WARNING,
        "A high share of the module's nonces fails verification.",
        "Check its temperature and voltage; retune or send for repair.",
    )
    CHIP_ERRORS = _code(
        404,
        "chip_errors",
        Severity.WARNING,
        "Some chips err on a high share of their nonces.",
        "Retune the module; repair if the chips keep erring.",
    )
    CHIP_ERROR_STEP = _code(
        405,
        "chip_error_step",
        Severity.WARNING,
        "A chip's error rate stepped up and stayed (a change, not aging).",
        "Reseat the module; look for a damaged chip or joint.",
    )
    CHIP_TIMEOUTS = _code(
        406,
        "chip_timeouts",
        Severity.WARNING,
        "Chips miss polls but still hash.",
        "Check the chain's UART signal and the board's temperature.",
    )
    CHIP_FAILED = _code(
        407,
        "chip_failed",
        Severity.ERROR,
        "A chip errs past the fault threshold.",
        "Send the module for repair.",
    )
    CHIPS_MISSING = _code(
        408,
        "chips_missing",
        Severity.WARNING,
        "Some chips of the chain do not answer.",
        "Reseat the module; repair if chips stay missing.",
    )
    CHIPS_LOST = _code(
        409,
        "chips_lost",
        Severity.ERROR,
        "Too many chips of the chain stopped answering.",
        "Send the module for repair.",
    )
    PREDICTED_FAILURE = _code(
        410,
        "predicted_failure",
        Severity.WARNING,
        "The module's error trend predicts a failure.",
        "Plan a swap before the estimated time to failure.",
    )
    FAN_STALLED = _code(
        501,
        "fan_stalled",
        Severity.ERROR,
        "A fan stalled or its speed cannot be read; the others run at full speed.",
        "Replace the fan.",
    )
    MODULE_UNTRUSTED = _code(
        601,
        "module_untrusted",
        Severity.ERROR,
        "The module's identity or limits cannot be trusted (EEPROM); it is not powered.",
        "Check the module's EEPROM contents or replace the module.",
    )
    NEEDS_SERVICE = _code(
        602,
        "needs_service",
        Severity.CRITICAL,
        "A module faulted too often; it stays off until a person acts.",
        "Inspect the module, then `hashbay reset-slot N` or swap it.",
    )
    SLOT_HARDWARE_ERROR = _code(
        603,
        "slot_hardware_error",
        Severity.ERROR,
        "A bus or device error stopped the slot's work; the module was powered off.",
        "Reseat the module; check the slot's connector and buses.",
    )
    INTERNAL_ERROR = _code(
        604,
        "internal_error",
        Severity.ERROR,
        "The agent failed handling a slot; the module was powered off.",
        "Report the log lines around it; reset the slot to retry.",
    )
    POOL_FAILED = _code(
        701,
        "pool_failed",
        Severity.WARNING,
        "A pool was lost or judged useless; the miner failed over.",
        "Check the pool's URL, credentials and the network.",
    )
    STATE_DROPPED = _code(
        801,
        "state_dropped",
        Severity.WARNING,
        "A damaged stored file or entry was left out at start.",
        "Nothing to fix on the miner; the state rebuilds. Check the storage if it repeats.",
    )
    CURTAILED = _code(
        802,
        "curtailed",
        Severity.INFO,
        "The miner sleeps or runs at minimum power on purpose (curtailment, price).",
        "None: it resumes when the cause ends.",
    )

    @property
    def code(self) -> int:
        return self.value.code

    @property
    def severity(self) -> Severity:
        return self.value.severity


CATALOG: tuple[FaultCode, ...] = tuple(sorted((f.value for f in Fault), key=lambda c: c.code))
BY_CODE: Mapping[int, FaultCode] = {c.code: c for c in CATALOG}

# The health model's reason codes (agent/modules/health.py `Reason.code`).
HEALTH_REASONS: Mapping[str, Fault] = {
    "fans_stalled": Fault.FAN_STALLED,
    "hashrate_low": Fault.HASHRATE_LOW,
    "hw_errors": Fault.HW_ERRORS,
    "chip_failed": Fault.CHIP_FAILED,
    "chip_errors": Fault.CHIP_ERRORS,
    "chips_lost": Fault.CHIPS_LOST,
    "chips_missing": Fault.CHIPS_MISSING,
    "chip_timeouts": Fault.CHIP_TIMEOUTS,
    "degrading": Fault.PREDICTED_FAILURE,
    "chip_error_step": Fault.CHIP_ERROR_STEP,
    "sensor_unreadable": Fault.SENSOR_UNREADABLE,
    "sensor_stuck": Fault.SENSOR_STUCK,
    "overheat": Fault.OVERHEAT,
    "temp_high": Fault.TEMP_HIGH,
    "dcdc_hot": Fault.DCDC_HOT,
    "temps_unknown": Fault.TEMPS_UNKNOWN,
    "rail_fault": Fault.RAIL_FAULT,
    "rail_unreadable": Fault.RAIL_UNREADABLE,
    "rail_voltage": Fault.RAIL_VOLTAGE,
    "bus_noise": Fault.BUS_NOISE,
}

# Protection tiers (agent/modules/protection.py `Tier`) that raise something; "ok" raises nothing.
TIERS: Mapping[str, Fault] = {
    "warn": Fault.TEMP_WARN,
    "throttle": Fault.THROTTLED,
    "cut": Fault.OVER_TEMP_CUT,
    "sensor_fault": Fault.SENSOR_FAULT_CUT,
    "power_fault": Fault.RAIL_FAULT,
}

# Event kinds (agent/core/events.py `EventKind` values) whose cause is always the same. A `fault`
# event names its own cause; the others here only tell what happened.
EVENT_KINDS: Mapping[str, Fault] = {
    "degrading": Fault.PREDICTED_FAILURE,
    "overheat": Fault.TEMP_WARN,
    "throttled": Fault.THROTTLED,
    "needs_service": Fault.NEEDS_SERVICE,
    "curtailed": Fault.CURTAILED,
    "state_dropped": Fault.STATE_DROPPED,
    "sensor_unreadable": Fault.SENSOR_UNREADABLE,
    "bus_noise": Fault.BUS_NOISE,
    "pool_failed": Fault.POOL_FAILED,
}
CAUSE_NAMED_BY_RAISER = frozenset({"fault"})
INFORMATIONAL_KINDS = frozenset(
    {
        "inserted",
        "removed",
        "safe_to_remove",
        "recovered",
        "swap_cancelled",
        "restarting",
        "resumed",
        "decision",
        "tuned",
    }
)


def for_health_reason(reason_code: str) -> Fault:
    """The code of a health reason; an unknown reason is a bug (a test lists them all)."""
    return HEALTH_REASONS[reason_code]


def for_tier(tier: str) -> Fault | None:
    return TIERS.get(tier)


def lookup(code: int) -> FaultCode | None:
    return BY_CODE.get(code)


def with_code(kind: str, details: Mapping[str, Any]) -> Mapping[str, Any]:
    """An event's details with the code its kind implies, unless the raiser named one."""
    fault = EVENT_KINDS.get(kind)
    if fault is None or "code" in details:
        return details
    return {**details, "code": fault.code}


class _Reason(Protocol):
    @property
    def code(self) -> str: ...
    @property
    def penalty(self) -> float: ...


def for_health(reasons: Sequence[_Reason], default: Fault) -> Fault:
    """The code of the reason that cost the most score (what a technician fixes first)."""
    if not reasons:
        return default
    return for_health_reason(max(reasons, key=lambda r: r.penalty).code)
