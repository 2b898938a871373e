"""Power sequencing of one slot: the PSU's promise before the rail comes up, the point the
governor and protection allow, moving between points in a safe order, and power-off."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from hashbay.agent.modules.slot_core import SlotCore
from hashbay.agent.power.governor import Mode
from hashbay.agent.power.operating_point import OperatingPoint
from hashbay.drivers.errors import HardwareError, ProtocolError

BUDGET_WAIT_S = 2.0


class SlotPower:
    def __init__(self, slot: SlotCore) -> None:
        self._slot = slot

    async def reserve(self, watts: float) -> None:
        """Wait until the PSU can promise this module `watts` next to the others."""
        slot, budget = self._slot, self._slot.svc.budget
        while not budget.reserve(slot.index, watts):
            detail = (
                f"waiting for PSU budget: {watts} W needed, "
                f"{budget.reserved_w:.0f} of {budget.max_w:.0f} W promised"
            )
            if slot.status.detail != detail:
                slot.set_status(detail=detail)
            await asyncio.sleep(BUDGET_WAIT_S)

    def planned(self) -> OperatingPoint:
        """The point the governor and protection allow this board right now."""
        slot = self._slot
        planner = slot.seated().planner
        director = slot.svc.director
        mode = director.mode()
        budget = director.budget_w(slot.index) if mode is Mode.RUN else None
        capped = slot.svc.envelope.power_budget(slot.index, budget)
        return planner.point_for(mode, capped, slot.throttle)

    async def apply(self, target: OperatingPoint) -> None:
        """Move to `target`, ramping: voltage up before clocks, clocks down before voltage.

        Speeding up needs the PSU's promise first: a board whose estimated draw at the new
        point does not fit next to the others' holds its current point."""
        slot = self._slot
        chain, current = slot.live_chain(), slot.point
        planner = slot.seated().planner
        # In the units powering up promised (the module's declared maximum, at most).
        needed_w = min(planner.power_w(target), planner.limits.power_max_w)
        if not slot.svc.budget.reserve(slot.index, needed_w) and current is not None:
            slot.set_status(
                point=f"held: {needed_w:.0f} W would exceed the PSU's {slot.svc.budget.max_w:.0f} W"
            )
            return
        raise_v = current is None or target.board_v > current.board_v
        if raise_v and (current is None or current.board_v != target.board_v):
            await slot.svc.call(lambda: slot.hw.set_rail_v(target.board_v))
            slot.expect_volts(target.board_v)
        await chain.ramp_chips(
            target.freqs_mhz,
            step_mhz=slot.settings.ramp_step_mhz,
            step_delay_s=slot.settings.ramp_step_delay_s,
        )
        if not raise_v and current is not None and current.board_v != target.board_v:
            await slot.svc.call(lambda: slot.hw.set_rail_v(target.board_v))
            slot.expect_volts(target.board_v)
        slot.point = target
        slot.set_status(
            freq_mhz=round(target.mean_freq_mhz, 1),
            board_target_v=target.board_v,
            point=target.why,
            throttle=slot.throttle,
        )

    async def off(self) -> None:
        """Rail and enables off, the PSU's promise given back, the point forgotten."""
        slot = self._slot
        problems = await slot.svc.call(slot.hw.power_off)
        for problem in problems:
            slot.log.warning("power-off step failed", problem=problem)
        slot.svc.budget.release(slot.index)
        slot.point = None
        slot.set_status(
            freq_mhz=None,
            power_w=None,
            board_target_v=None,
            point="",
            budget_w=None,
            throttle=1.0,
            throttle_reason="",
        )

    async def until(self, check: Callable[[], bool], timeout_s: float) -> bool:
        """Whether `check` (run on the hardware thread) came true within `timeout_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            try:
                if await self._slot.svc.call(check):
                    return True
            except (HardwareError, ProtocolError):  # a failed read: ask again
                pass
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)
