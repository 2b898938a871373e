"""The power governor: how much each board may draw, and whether the miner runs at all.

Everything that wants less power meets here and the smallest ask wins: the operator's
power target (held at the PSU input by an integral controller), quiet mode's limiter
(fans capped, so less heat), profitability (the point that earns most for each board,
or nothing when nothing earns), curtailment (by command or the tariff schedule) and
the pool (no work, no point burning power). The slot controllers turn a board's watt
budget into clocks and a voltage, ramping; the envelope checks every value they write.

Pure logic: `step` takes measurements and returns a decision, so it is tested without
hardware and the service around it (power_service.py) stays small.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hashbay.agent.core.schedule import TimeWindow, parse_priced_window, parse_window
from hashbay.agent.power.controls import Controls
from hashbay.agent.power.power_settings import EconomicsSettings, PowerSettings
from hashbay.drivers.envelope import SafetyEnvelope

BOARD_TO_INPUT = 0.9  # board rail watts per PSU input watt: DC-DC and PSU losses together


class Mode(enum.StrEnum):
    RUN = "run"
    MIN = "min"  # every board at its lowest clock: idle but ready
    SLEEP = "sleep"  # boards powered down


@dataclass(frozen=True)
class CurvePoint:
    """One way to run a board: watts at the board and the good hashrate it gives."""

    power_w: float
    hashrate_hs: float


@dataclass(frozen=True)
class Inputs:
    """What the governor sees at one step."""

    now_s: float
    minute_of_day: int  # local time, for the tariff and the schedule
    input_w: float | None  # measured at the PSU; None when unreadable
    curves: Mapping[int, Sequence[CurvePoint]]  # per hashing board, by power
    controls: Controls
    quiet_scale: float = 1.0  # from the thermal service: < 1 when capped fans run hot
    work_available: bool = True


@dataclass(frozen=True)
class Decision:
    mode: Mode
    budgets_w: Mapping[int, float | None]  # per board; None = no limit
    reason: str  # what limits the miner now, in words with the numbers
    numbers: Mapping[str, Any] = field(default_factory=dict)
    limits: tuple[str, ...] = ()  # stable codes of what limits it: "target", "quiet", ...

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "reason": self.reason,
            "limits": list(self.limits),
            "budgets_w": {str(k): _round(v) for k, v in self.budgets_w.items()},
            **self.numbers,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class Governor:
    def __init__(
        self,
        power: PowerSettings,
        economics: EconomicsSettings,
        envelope: SafetyEnvelope | None = None,
    ) -> None:
        self.power = power
        self.economics = economics
        self._envelope = envelope  # clamps the power target (None: unclamped, unit tests)
        self._tariff = [parse_priced_window(text) for text in economics.tariff]
        self._curtail_windows: list[TimeWindow] = [
            parse_window(text) for text in economics.curtail_schedule
        ]
        self._total_w: float | None = None  # integrator state of the power target
        self._last_s: float | None = None
        self.last: Decision | None = None

    # -- the inputs that can stop the miner ----------------------------------------------

    def price_per_kwh(self, minute_of_day: int, controls: Controls) -> float:
        if controls.electricity_per_kwh is not None:
            return controls.electricity_per_kwh
        for window, price in self._tariff:
            if window.contains(minute_of_day):
                return price
        return self.economics.electricity_per_kwh

    def _hashprice(self, controls: Controls) -> float:
        if controls.hashprice_per_th_day is not None:
            return controls.hashprice_per_th_day
        return self.economics.hashprice_per_th_day

    def target_w(self, controls: Controls) -> float | None:
        target = (
            controls.power_target_w if controls.power_target_w is not None else self.power.target_w
        )
        if target and self._envelope is not None:
            target = self._envelope.power_target(target)
        return target or None

    # -- one step ------------------------------------------------------------------------

    def step(self, inputs: Inputs) -> Decision:
        dt = 0.0 if self._last_s is None else max(0.0, inputs.now_s - self._last_s)
        self._last_s = inputs.now_s
        decision = self._decide(inputs, dt)
        self.last = decision
        return decision

    def _decide(self, inputs: Inputs, dt: float) -> Decision:
        controls = inputs.controls
        price = self.price_per_kwh(inputs.minute_of_day, controls)
        numbers: dict[str, Any] = {"price_per_kwh": price}
        idle = self._curtailed(inputs)
        if idle is not None:
            self._reset()
            return Decision(idle[0], {}, idle[2], numbers, (idle[1],))

        budgets: dict[int, float | None] = dict.fromkeys(inputs.curves)
        reasons: list[str] = []
        limits: list[str] = []
        profit_on = controls.profit if controls.profit is not None else self.economics.profit
        if profit_on and not self._hashprice(controls):
            reasons.append("profit mode idle: no hashprice known")
            limits.append("profit_unpriced")
        elif profit_on:
            hashprice = self._hashprice(controls)
            chosen, profit_day = self._most_profitable(inputs.curves, price, hashprice)
            numbers |= {"hashprice_per_th_day": hashprice, "profit_per_day": round(profit_day, 2)}
            if inputs.curves and not chosen:
                self._reset()
                why = (
                    f"unprofitable: at {price:g}/kWh and hashprice {hashprice:g}/TH/day the "
                    "best point loses money"
                )
                return Decision(Mode.SLEEP, {}, why, numbers, ("unprofitable",))
            for slot, watts in chosen.items():
                budgets[slot] = watts
            if chosen:
                reasons.append(f"profit {profit_day:.2f}/day at {price:g}/kWh")
                limits.append("profit")

        target = self.target_w(controls)
        if target is not None:
            total = self._hold_target(target, inputs, dt)
            numbers |= {"target_w": target, "input_w": _round(inputs.input_w)}
            shares = _split(total, inputs.curves)
            for slot, share in shares.items():
                budgets[slot] = _min_opt(budgets[slot], share)
            reasons.append(f"power target {target:.0f} W (measured {_fmt_w(inputs.input_w)})")
            limits.append("target")
        else:
            self._reset()

        if inputs.quiet_scale < 1.0:
            for slot, curve in inputs.curves.items():
                full = curve[-1].power_w if curve else 0.0
                budgets[slot] = _min_opt(budgets[slot], full * inputs.quiet_scale)
            reasons.append(
                f"quiet mode: power at {inputs.quiet_scale:.0%} to stay under the noise cap"
            )
            numbers["quiet_scale"] = round(inputs.quiet_scale, 3)
            limits.append("quiet")
        reason = "; ".join(reasons) or "unlimited: boards at their best efficiency"
        return Decision(Mode.RUN, budgets, reason, numbers, tuple(limits))

    def _curtailed(self, inputs: Inputs) -> tuple[Mode, str, str] | None:
        """(mode, code, reason) of curtailment by command, schedule, or want of work."""
        curtail = inputs.controls.curtail
        if curtail is not None:
            return Mode(curtail), "command", f"curtailed by command ({curtail})"
        if any(w.contains(inputs.minute_of_day) for w in self._curtail_windows):
            mode = Mode(self.economics.curtail_mode)
            return mode, "schedule", "curtailed by the configured schedule"
        if not inputs.work_available:
            return Mode.MIN, "no_pool", "no pool reachable: idling at minimum power"
        return None

    def _reset(self) -> None:
        self._total_w = None

    def _hold_target(self, target_w: float, inputs: Inputs, dt: float) -> float:
        """Total board budget that brings the PSU input to the target (integral action)."""
        lowest = sum(c[0].power_w for c in inputs.curves.values() if c)
        highest = sum(c[-1].power_w for c in inputs.curves.values() if c)
        if self._total_w is None:
            # Feed-forward start: what the boards would draw for this input power.
            self._total_w = min(highest, max(lowest, target_w * BOARD_TO_INPUT))
        elif inputs.input_w is not None and dt > 0:
            error_w = (target_w - inputs.input_w) * BOARD_TO_INPUT
            change = error_w * min(1.0, self.power.gain * dt)
            limit = self.power.ramp_w_per_s * dt
            self._total_w += max(-limit, min(limit, change))
        # Anti-windup: never integrate beyond what the boards can do.
        self._total_w = min(max(self._total_w, lowest), max(highest, lowest))
        return self._total_w

    def _most_profitable(
        self, curves: Mapping[int, Sequence[CurvePoint]], price_kwh: float, hashprice: float
    ) -> tuple[dict[int, float], float]:
        """Per board (profit adds up), the point earning most; boards that lose are left out."""
        chosen: dict[int, float] = {}
        total = 0.0
        for slot, curve in curves.items():
            best: tuple[float, float] | None = None
            for point in curve:
                earned = point.hashrate_hs / 1e12 * hashprice
                cost = point.power_w / BOARD_TO_INPUT / 1000 * 24 * price_kwh
                profit = earned - cost
                if best is None or profit > best[0]:
                    best = (profit, point.power_w)
            if best is not None and best[0] > 0:
                chosen[slot] = best[1]
                total += best[0]
        return chosen, total


def _split(total_w: float, curves: Mapping[int, Sequence[CurvePoint]]) -> dict[int, float]:
    """Share a total among boards in proportion to what each can draw at most."""
    capacity = {slot: (c[-1].power_w if c else 0.0) for slot, c in curves.items()}
    whole = sum(capacity.values())
    if whole <= 0:
        return dict.fromkeys(curves, 0.0)
    return {slot: total_w * cap / whole for slot, cap in capacity.items()}


def _min_opt(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)


def _fmt_w(watts: float | None) -> str:
    return "unreadable" if watts is None or math.isnan(watts) else f"{watts:.0f} W"
