"""A hashing module's loop: work to the chips, the plan followed, and every sample judged.

Each sample feeds the predictor and the health model; health decides whether the module
goes on hashing, is degraded, recovered or faulted. Tuning and the governor's sleep are
decided here too, between samples, and a nudge re-plans at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from hashbay.agent.core.events import EventKind
from hashbay.agent.core.fault_codes import Fault, for_health
from hashbay.agent.core.status import BusDevice, ChipSample, HealthLevel, ModuleSample, SlotState
from hashbay.agent.hardware.bus_health import BusNoise, describe
from hashbay.agent.modules.lifecycle import Trigger
from hashbay.agent.modules.slot_core import SlotCore
from hashbay.agent.modules.slot_power import SlotPower
from hashbay.agent.modules.slot_tuning import SlotTuner
from hashbay.agent.power.governor import BOARD_TO_INPUT, Mode
from hashbay.drivers.bm13xx.chain import Bm13xxChain
from hashbay.drivers.bm13xx.frames import NonceReply
from hashbay.drivers.bm13xx.registers import SMALL_CORES

BUDGET_HEADROOM = 1.05


class HashingLoop:
    def __init__(
        self,
        slot: SlotCore,
        power: SlotPower,
        tuner: SlotTuner,
        *,
        fault: Callable[[str, Fault], Awaitable[None]],
        sleep: Callable[[], Awaitable[None]],
    ) -> None:
        self._slot = slot
        self._power = power
        self._tuner = tuner
        self._fault = fault
        self._sleep = sleep
        self._job_id = 0
        self._bus_noise = BusNoise(slot.svc.alarm_settings)
        self._bus: tuple[BusDevice, ...] = ()

    async def run(self) -> None:
        """Until the module leaves hashing (or degraded): asleep, faulted, or its health
        level moved."""
        slot, settings, director = self._slot, self._slot.settings, self._slot.svc.director
        loop = asyncio.get_running_loop()
        next_job = loop.time() + settings.job_interval_s
        next_chip_poll = loop.time() + settings.chip_poll_interval_s
        missing: tuple[int, ...] = ()
        next_sample = loop.time() + settings.sample_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_sample - loop.time())):
                    await slot.nudged.wait()
            slot.nudged.clear()
            if director.mode() is Mode.SLEEP:
                await self._sleep()
                return
            if slot.seated().tune_wanted and not self._tuner.running:
                self._tuner.start()
            if self._tuner.running and slot.throttle < 1.0:
                self._tuner.abort(slot.status.throttle_reason or "throttled by protection")
            elif self._tuner.running and director.mode() is not Mode.RUN:
                self._tuner.abort(f"power mode is {director.mode()}")
            target = self._power.planned()
            if not self._tuner.running and not target.close_to(slot.point):
                await self._power.apply(target)
            budget = director.budget_w(slot.index)
            budget = None if budget is None else round(budget, 1)
            if budget != slot.status.budget_w:
                slot.set_status(budget_w=budget)
            now = loop.time()
            if slot.svc.work.fresh(slot.index):  # clean_jobs: the chips' work is stale
                self.send_job()
                next_job = now + settings.job_interval_s
            if now < next_sample:
                continue
            next_sample = now + settings.sample_interval_s
            if now >= next_job:
                self.send_job()
                next_job = now + settings.job_interval_s
            if now >= next_chip_poll:
                missing = tuple(await slot.live_chain().poll_chips())
                next_chip_poll = loop.time() + settings.chip_poll_interval_s
            if await self._assess(await self._sample(missing)):
                return

    def send_job(self) -> None:
        slot = self._slot
        self._job_id = (self._job_id + 1) % 16
        chain, work = slot.live_chain(), slot.svc.work
        job = work.next_job(slot.index, self._job_id)
        if chain.version_mask != work.version_mask:  # the bits the pool lets chips roll
            chain.set_version_mask(work.version_mask)
        chain.send_job(job)

    def nonce_found(self, chip: int, reply: NonceReply) -> None:
        chain = self._slot.chain
        if chain is not None:
            self._slot.svc.work.on_nonce(self._slot.index, chip, reply, chain.version_mask)

    async def _sample(self, missing: tuple[int, ...]) -> ModuleSample:
        slot = self._slot
        chain = slot.live_chain()
        rails = await slot.svc.call(slot.hw.read_rails)
        chips = tuple(
            ChipSample(c.nonces, c.hw_errors, c.timeouts, c.work, chain.freq_mhz[i])
            for i, c in enumerate(chain.counters.chips)
        )
        expected = sum(chain.freq_mhz) * 1e6 * _small_cores(chain)
        dcdc = rails.dcdc
        now, since = slot.svc.clock(), slot.hashing_since_s
        self._bus = self._bus_noise.update(slot.svc.clock(), slot.hw.bus_devices())
        window_s = slot.svc.alarm_settings.bus_window_s
        return ModuleSample(
            at_s=now,
            chips=chips,
            expected_hs=expected,
            temps_c=rails.temps_c,
            board_v=dcdc.vout_v if dcdc else None,
            board_a=dcdc.iout_a if dcdc else None,
            dcdc_temp_c=dcdc.temp_c if dcdc else None,
            rail_fault=rails.fault,
            fans_stalled=slot.svc.fans_stalled(),
            missing_chips=missing,
            hashing_for_s=None if since is None else max(0.0, now - since),
            bus_noise=tuple(describe(d, window_s) for d in self._bus if d.noisy),
        )

    async def _assess(self, sample: ModuleSample) -> bool:
        """Update prediction and health; True when the state changed."""
        slot = self._slot
        module = slot.seated()
        before = slot.status.bus
        # Status lists the devices that failed a transaction: a healthy bus says nothing.
        slot.set_status(bus=tuple(d for d in self._bus if d.failed or d.noisy))
        slot.alarms.bus(before, self._bus)
        power = sample.board_v * sample.board_a if sample.board_v and sample.board_a else None
        if self._tuner.running:
            # Tuning makes chips err on purpose: show the figures, judge nothing, and keep
            # the tuner's errors out of the predictor's evidence.
            module.predictor.skip(sample)
            health = module.health.update(sample, slot.status.prediction)
            if power is not None:
                slot.svc.budget.reserve(slot.index, power / BOARD_TO_INPUT * BUDGET_HEADROOM)
            slot.set_status(health=health, temps_c=sample.temps_c, board_v=sample.board_v)
            return False
        prediction = module.predictor.update(sample)
        health = module.health.update(sample, prediction)
        if power is not None and slot.point is not None:
            module.planner.learn(power, slot.point)
        if power is not None:
            # Promise the PSU what the module really draws (plus headroom), not its maximum,
            # so the next module can power up once this one has settled.
            slot.svc.budget.reserve(slot.index, power / BOARD_TO_INPUT * BUDGET_HEADROOM)
        slot.set_status(
            health=health,
            prediction=prediction,
            temps_c=sample.temps_c,
            board_v=sample.board_v,
            power_w=power,
        )
        if module.predictor.newly_raised:  # once per trend, across restarts and slot moves
            slot.event(
                EventKind.DEGRADING,
                f"module {slot.status.serial} likely to fail: {prediction.trend}",
                time_to_failure_s=prediction.time_to_failure_s,
                chip=prediction.chip,
            )
        reasons = "; ".join(r.text for r in health.reasons[:3]) or "healthy"
        if health.level is HealthLevel.FAULT:
            await self._fault(reasons, for_health(health.reasons, Fault.HASHRATE_LOW))
            return True
        if health.level is HealthLevel.DEGRADED and slot.state is SlotState.HASHING:
            code = for_health(health.reasons, Fault.HASHRATE_LOW).code
            slot.go(Trigger.DEGRADED, f"health {health.score:.0f}: {reasons}", fault_code=code)
            return True
        if health.level is HealthLevel.OK and slot.state is SlotState.DEGRADED:
            slot.go(Trigger.HEALTHY, f"health {health.score:.0f}: recovered")
            slot.alarms.healthy(health.score)
            return True
        await slot.keep_prediction(slot.svc.predictions.due)
        return False


def _small_cores(chain: Bm13xxChain) -> int:
    info = chain.info
    return SMALL_CORES.get(info.chip_id, 0) if info is not None else 0
