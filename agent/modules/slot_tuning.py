"""Autotuning one slot's module while it hashes: started by a command or on its own for a
board without a (fresh) profile, stopped the moment protection or the governor needs the
clocks back, and its result stored under the board's serial."""

from __future__ import annotations

import asyncio
import time

from hashbay.agent.core.events import EventKind
from hashbay.agent.core.status import SlotState
from hashbay.agent.modules.seated import SeatedModule, hashes_per_mhz
from hashbay.agent.modules.slot_core import SlotCore
from hashbay.agent.modules.slot_services import CommandRefused
from hashbay.agent.power.operating_point import OperatingPoint
from hashbay.agent.tuning.autotune import Autotuner, BoardProfile, TuneProgress
from hashbay.agent.tuning.tuning import ChainTuneTarget


class SlotTuner:
    def __init__(self, slot: SlotCore) -> None:
        self._slot = slot
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> str:
        """Tune this module now (it keeps hashing); the result is stored under its serial."""
        slot = self._slot
        if slot.state not in (SlotState.HASHING, SlotState.DEGRADED) or slot.chain is None:
            raise CommandRefused(
                f"slot {slot.index} is {slot.state}; only a hashing module is tuned"
            )
        if self._task is not None:
            return slot.status.tuning or "already tuning"
        slot.seated().tune_wanted = False
        self._task = asyncio.create_task(self._tune(), name=f"slot{slot.index}-tune")
        slot.set_status(tuning="tuning: starting")
        return "started"

    def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def abort(self, why: str) -> None:
        """Protection or the governor needs the clocks back: the tuner must not hold them."""
        if self._task is None:
            return
        self.stop()
        slot = self._slot
        chain = slot.chain
        if chain is not None:
            chain.set_ticket_difficulty(slot.settings.ticket_difficulty)
            slot.point = OperatingPoint(
                slot.point.board_v if slot.point else 0.0, tuple(chain.freq_mhz)
            )
            if slot.module is not None:
                slot.module.health = slot.svc.health(slot.module.identity)
        slot.set_status(tuning=f"tuning stopped: {why}")
        slot.log.warning("autotuning stopped", why=why)

    async def _tune(self) -> None:
        slot = self._slot
        tuning, module, chain = slot.svc.tuning, slot.seated(), slot.live_chain()
        identity = module.identity
        started = time.monotonic()
        target = ChainTuneTarget(
            slot.index,
            chain,
            slot.hw,
            slot.svc.envelope,
            slot.svc.call,
            hashes_per_mhz=hashes_per_mhz(identity),
            ramp_step_mhz=slot.settings.ramp_step_mhz,
            ramp_step_delay_s=slot.settings.ramp_step_delay_s,
            clock=slot.svc.clock,
            volts_now=slot.point.board_v if slot.point else identity.nominal_vout_mv / 1000,
            on_voltage=slot.expect_volts,
        )

        def progress(step: TuneProgress) -> None:
            slot.set_status(tuning=step.describe())

        cap_w = slot.svc.envelope.power_budget(slot.index, slot.svc.director.budget_w(slot.index))
        chain.set_ticket_difficulty(tuning.settings.ticket_difficulty)
        try:
            profile = await Autotuner(tuning.settings).run(
                target, power_cap_w=cap_w, progress=progress
            )
        except asyncio.CancelledError:
            raise  # powered down or stopped: the chain is gone, nothing to restore
        except Exception as exc:  # a failed tune must leave the board hashing
            slot.log.warning("autotuning failed", error=str(exc))
            slot.set_status(tuning=f"tuning failed: {exc}")
            profile = None
        self._task = None
        if slot.chain is not chain:
            return
        chain.set_ticket_difficulty(slot.settings.ticket_difficulty)
        module.health = slot.svc.health(identity)  # judge the tuned board afresh
        slot.expect_volts(target.voltage_now)
        slot.point = OperatingPoint(target.voltage_now, tuple(chain.freq_mhz))
        slot.nudge()
        if profile is not None:
            await self._tuned(module, profile, time.monotonic() - started)

    async def _tuned(self, module: SeatedModule, profile: BoardProfile, real_s: float) -> None:
        slot = self._slot
        tuning = slot.svc.tuning
        identity = module.identity
        saved = await asyncio.to_thread(
            tuning.store.save, identity.serial, profile, board_model=identity.model
        )
        module.planner.use_profile(profile.points)
        summary = profile.summary()
        slot.set_status(tuning=summary)
        best = profile.best()
        slot.event(
            EventKind.TUNED,
            f"slot {slot.index}: tuned in {profile.duration_s / 60:.0f} min: {summary}",
            duration_s=round(profile.duration_s),
            real_s=round(real_s),
            points=len(profile.points),
            j_per_th=round(best.j_per_th, 2) if best else None,
            saved=saved,
        )
