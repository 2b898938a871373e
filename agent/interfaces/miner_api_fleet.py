"""The miner API's fleet replies and controls, beyond what cgminer itself defines.

`faults` lists what is wrong right now with canonical codes (agent/core/fault_codes.py): the
pyasic backend turns them into `errors`. The changing commands follow LuxOS's names where
LuxOS has one (`curtail`, `ledset`), since fleet tools already speak them, and are
translated into the agent's own commands, so they pass the same validation and handlers as
the control socket and MQTT. Pure: a request is mapped to commands; the server runs them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hashbay.agent.core.fault_codes import Fault
from hashbay.agent.interfaces.miner_api_replies import ApiReply, MinerView, Severity


class FleetCode:
    """Status codes of hashbay's own replies (cgminer leaves 300 and up unused)."""

    FAULTS = 310
    CURTAIL = 311
    LED = 312
    POWER_LIMIT = 313
    BAD_PARAMETER = 319


def faults(view: MinerView) -> ApiReply:
    items = tuple({"FAULT": n, **fault} for n, fault in enumerate(active_faults(view), start=0))
    return ApiReply(Severity.SUCCESS, FleetCode.FAULTS, f"{len(items)} Fault(s)", "FAULTS", items)


def active_faults(view: MinerView) -> list[dict[str, Any]]:
    """What is wrong now, most severe first: slots, fans, the PSU, pools, curtailment."""
    found: list[dict[str, Any]] = []

    def add(fault: Fault, message: str, slot: int | None = None, serial: str = "") -> None:
        entry = fault.value
        found.append(
            {
                "Code": entry.code,
                "Name": entry.name,
                "Severity": entry.severity.value,
                "Slot": -1 if slot is None else slot,
                "Serial": serial,
                "Message": message,
                "Action": entry.action,
            }
        )

    by_code = {f.code: f for f in Fault}
    for status in view.slots:
        fault = by_code.get(status.fault_code) if status.fault_code is not None else None
        if fault is not None:
            add(fault, status.detail, status.slot, status.serial or "")
    for n, fan in enumerate(view.fans):
        if fan.stalled:
            add(Fault.FAN_STALLED, f"fan {n} stalled or unreadable")
    for problem in view.psu_problems:
        add(Fault.PSU_PROBLEM, problem)
    if view.pools and not any(p.alive for p in view.pools):
        add(Fault.POOL_FAILED, "no configured pool is alive")
    if view.mode != "run":
        add(Fault.CURTAILED, f"power mode {view.mode}")
    rank = {"critical": 0, "error": 1, "warning": 2, "info": 3}
    found.sort(key=lambda f: (rank[f["Severity"]], f["Slot"], f["Code"]))
    return found


READS: Mapping[str, Callable[[MinerView, str | None], ApiReply]] = {
    "faults": lambda v, p: faults(v),
}


class ParameterError(ValueError):
    """The command's parameter is not one it takes; the message says what it takes."""


@dataclass(frozen=True)
class Control:
    """A changing command: its parameter becomes agent commands, then a success reply."""

    code: int
    build: Callable[[str, MinerView], list[dict[str, Any]]]
    message: str


def _curtail(parameter: str, view: MinerView) -> list[dict[str, Any]]:
    action = parameter.strip().lower()
    if action in ("sleep", "min"):
        return [{"command": "curtail", "mode": action}]
    if action == "wakeup":
        return [{"command": "resume"}]
    raise ParameterError("curtail takes sleep, min or wakeup")


def _ledset(parameter: str, view: MinerView) -> list[dict[str, Any]]:
    """Every occupied slot's locate LED: the miner's fault light, as a technician sees it."""
    mode = parameter.strip().lower().split(",")[-1]  # LuxOS sends "red,blink"
    if mode not in ("on", "off", "blink"):
        raise ParameterError("ledset takes on, off or blink (or red,blink as LuxOS)")
    slots = [s.slot for s in view.slots if s.serial is not None or s.locate != "off"]
    return [{"command": "locate", "slot": slot, "mode": mode} for slot in slots]


def _powerset(parameter: str, view: MinerView) -> list[dict[str, Any]]:
    try:
        watts = float(parameter.strip())
    except ValueError:
        raise ParameterError("powerset takes a power target in watts (0 clears it)") from None
    if watts == 0:
        return [{"command": "power_target_clear"}]
    return [{"command": "power_target", "watts": watts}]  # validated by the command spec


CHANGES: Mapping[str, Control] = {
    "curtail": Control(FleetCode.CURTAIL, _curtail, "Curtail {parameter} accepted"),
    "ledset": Control(FleetCode.LED, _ledset, "Locate LEDs set {parameter}"),
    "powerset": Control(FleetCode.POWER_LIMIT, _powerset, "Power limit set to {parameter}"),
}
