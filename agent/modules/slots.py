"""One controller per slot: takes a module from seated to hashing, watches its health,
and takes it down again — on a fault, on a prepared swap, or when it is pulled by surprise.

Each state has a handler coroutine that does the state's work and ends by firing one
trigger (the table is in lifecycle.py). Three things interrupt whatever a handler is
doing: the module disappearing, a prepared swap and a cancelled one. Blocking bus I/O
runs on the rig's hardware thread; the chain's UART is driven from the event loop.

The controller keeps the lifecycle; its parts do the rest on the same `SlotCore`: power
sequencing (`slot_power`), the hashing loop (`slot_hashing`), tuning (`slot_tuning`) and
the protection fast path (`slot_protection`). What belongs to one module lives in its
`SeatedModule`, made when it is identified and dropped when it is pulled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog

from hashbay.agent.core.events import Event, EventKind
from hashbay.agent.core.fault_codes import Fault
from hashbay.agent.core.status import SlotState
from hashbay.agent.hardware.slot_hw import SlotHardware
from hashbay.agent.modules.lifecycle import Trigger, allowed
from hashbay.agent.modules.slot_bringup import BringUp
from hashbay.agent.modules.slot_core import SlotCore, log
from hashbay.agent.modules.slot_hashing import HashingLoop
from hashbay.agent.modules.slot_power import SlotPower
from hashbay.agent.modules.slot_protection import ProtectionLink
from hashbay.agent.modules.slot_services import CommandRefused, Services, SlotSettings
from hashbay.agent.modules.slot_tuning import SlotTuner
from hashbay.agent.power.governor import CurvePoint, Mode
from hashbay.agent.power.operating_point import PointPlanner
from hashbay.drivers.bm13xx.chain import SerialLink
from hashbay.drivers.eeprom import BoardIdentity
from hashbay.drivers.errors import HardwareError, HashbayError, ProtocolError

PRESENCE_RECHECK_S = 0.5
GOVERNED = (
    SlotState.POWERING,
    SlotState.ENUMERATING,
    SlotState.RAMPING,
    SlotState.HASHING,
    SlotState.DEGRADED,
    SlotState.SLEEPING,
)


class SlotController(SlotCore):
    def __init__(
        self,
        hw: SlotHardware,
        open_uart: Callable[[], SerialLink],
        settings: SlotSettings,
        services: Services,
    ) -> None:
        super().__init__(hw, settings, services)
        self._present = False
        self._present_changed = asyncio.Event()
        self._seated = asyncio.Event()
        self._reset_requested = asyncio.Event()
        self.power = SlotPower(self)
        self.tuner = SlotTuner(self)
        self.protection = ProtectionLink(self)
        self.hashing = HashingLoop(
            self, self.power, self.tuner, fault=self._fault, sleep=self._sleep
        )
        self.bring_up = BringUp(
            self,
            self.power,
            self.protection,
            self.hashing,
            open_uart=open_uart,
            fault=self._fault,
        )

    # -- outside world -----------------------------------------------------------------

    @property
    def identity(self) -> BoardIdentity | None:
        return self.module.identity if self.module is not None else None

    @property
    def planner(self) -> PointPlanner | None:
        return self.module.planner if self.module is not None else None

    def presence_edge(self) -> None:
        """Called (in the loop) when the presence line moved; re-checked after debounce."""
        self._present_changed.set()

    def alert_tripped(self) -> None:
        """Called (in the loop) after the module's over-temperature line cut its power in
        the pin callback: the state machine follows the hardware."""
        self.protection.alert_tripped()

    async def prepare_swap(self) -> SlotState:
        if self.state is SlotState.EMPTY:
            raise CommandRefused(f"slot {self.index} is empty")
        if self.state in (SlotState.DRAINING, SlotState.SAFE_TO_REMOVE):
            return self.state
        return await self.request(Trigger.PREPARE)

    async def cancel_swap(self) -> SlotState:
        if self.state not in (SlotState.DRAINING, SlotState.SAFE_TO_REMOVE):
            raise CommandRefused(f"slot {self.index} has no swap prepared (it is {self.state})")
        return await self.request(Trigger.CANCEL)

    async def reset(self) -> SlotState:
        """A technician clears a fault: restart count forgotten, module brought up again."""
        if self.state is not SlotState.FAULT:
            raise CommandRefused(
                f"slot {self.index} is {self.state}; only a faulted module can be reset"
            )
        policy = self.module.restarts if self.module is not None else None
        if policy is None or not self.fault_retry:
            self.fault_retry = True
            return await self.request(Trigger.RETRY)
        policy.reset()  # the count starts again; the board still restarts only once cool
        self.set_status(
            detail=f"reset by a technician; restarts once below {policy.settings.cool_c:g} °C"
        )
        self._reset_requested.set()
        return self.state

    def curve(self) -> list[CurvePoint] | None:
        """What this board can do, for the governor: while it comes up, hashes or sleeps
        (a sleeping board still counts, or the governor would wake it to find out)."""
        if self.module is None or self.state not in GOVERNED:
            return None
        return self.module.planner.curve()

    def locate(self, mode: str) -> None:
        self.hw.pins.locate(mode)
        self.set_status(locate=mode)

    def start_tuning(self) -> str:
        """Tune this module now (it keeps hashing); the result is stored under its serial."""
        return self.tuner.start()

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        # Every line logged from this slot's task (and the tasks, reader callbacks and
        # hardware-thread calls it starts), drivers' included, carries the slot; the
        # module's serial from when it is identified until it is pulled.
        structlog.contextvars.bind_contextvars(slot=self.index)
        watcher = asyncio.create_task(self._watch_presence(), name=f"slot{self.index}-presence")
        try:
            while True:
                try:
                    await self._run_state()
                except Exception as exc:  # a handler, an interrupt or a transition failed
                    await self._failed(exc)  # if even this fails, the supervisor restarts us
        finally:
            watcher.cancel()
            await self._shut_down()

    async def _run_state(self) -> None:
        if self.module is not None:
            structlog.contextvars.bind_contextvars(serial=self.module.serial)
        else:
            structlog.contextvars.unbind_contextvars("serial")
        handler = asyncio.create_task(self._handler(self.state)())
        interrupted = asyncio.create_task(self.interrupt.wait())
        try:
            done, _ = await asyncio.wait(
                {handler, interrupted}, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:  # the agent stops: no handler outlives its slot
            handler.cancel()
            interrupted.cancel()
            raise
        if handler in done:
            interrupted.cancel()
            exc = handler.exception()
            if exc is not None:
                raise exc
            return
        handler.cancel()
        with contextlib.suppress(asyncio.CancelledError, HashbayError):
            await handler
        await self._take_interrupts()

    async def _failed(self, exc: BaseException) -> None:
        """Whatever went wrong in this slot's work ends with the module off and a `fault`
        event; a failure while already faulted waits for a technician (no crash loop)."""
        self.hw.safe()  # first, and without the bus: the bus may be what failed
        if isinstance(exc, HashbayError):
            why, cause = f"{self.state}: {exc}", Fault.SLOT_HARDWARE_ERROR
        else:
            self.log.error("slot handler failed", state=str(self.state), exc_info=exc)
            why, cause = f"internal error while {self.state}: {exc!r}", Fault.INTERNAL_ERROR
        if not allowed(self.state, Trigger.FAULT):  # nothing is powered in this state
            self.alarms.internal(why, cause)
            await asyncio.sleep(PRESENCE_RECHECK_S)
            return
        await self._fault(why, cause, retry=self.state is not SlotState.FAULT)

    async def _take_interrupts(self) -> None:
        self.interrupt.clear()
        pending, self.interrupts = self.interrupts, []
        if not self._present and self.state is not SlotState.EMPTY:
            await self._pulled()
        for trigger, future in pending:
            if trigger is Trigger.PULLED or future.done():
                continue
            if trigger is Trigger.FAULT and (
                self.state is SlotState.FAULT or not allowed(self.state, trigger)
            ):
                future.set_result(self.state)  # a cut that raced a pull or a fault: done
                continue
            if not allowed(self.state, trigger):
                future.set_exception(
                    CommandRefused(f"slot {self.index} cannot {trigger} while {self.state}")
                )
                continue
            if trigger is Trigger.FAULT:
                await self._fault(self.fault_reason, self.fault_cause, retry=self.fault_retry)
            elif trigger is Trigger.RETRY:
                self.hw.pins.locate("off")
                self.go(trigger, "reset by a technician: bringing the module up", locate="off")
                self.set_status(restarts=0)
            elif trigger is Trigger.CANCEL:
                await self._power_down()
                self.hw.pins.locate("off")
                self.go(trigger, "swap cancelled; bringing the module back up", locate="off")
                self.event(EventKind.SWAP_CANCELLED, "swap cancelled, module coming back up")
            else:
                self.go(trigger, "swap prepared: stopping work and powering down")
            future.set_result(self.state)

    def _handler(self, state: SlotState) -> Callable[[], Any]:
        return {
            SlotState.EMPTY: self._in_empty,
            SlotState.INSERTED: self._in_inserted,
            SlotState.IDENTIFYING: self.bring_up.identifying,
            SlotState.POWERING: self.bring_up.powering,
            SlotState.ENUMERATING: self.bring_up.enumerating,
            SlotState.RAMPING: self.bring_up.ramping,
            SlotState.HASHING: self.hashing.run,
            SlotState.DEGRADED: self.hashing.run,
            SlotState.FAULT: self._in_fault,
            SlotState.SLEEPING: self._in_sleeping,
            SlotState.DRAINING: self._in_draining,
            SlotState.SAFE_TO_REMOVE: self._in_safe_to_remove,
        }[state]

    async def _watch_presence(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PRESENCE_RECHECK_S):
                    await self._present_changed.wait()
            self._present_changed.clear()
            while (wait_s := self.hw.pins.settle_remaining_s()) > 0:  # noqa: ASYNC110 - a contact, not an event
                await asyncio.sleep(wait_s + 0.001)
            present = self.hw.pins.present()
            if present == self._present:
                continue
            self._present = present
            if present:
                self._seated.set()
            elif self.state is not SlotState.EMPTY:
                self.interrupt.set()

    # -- states ------------------------------------------------------------------------

    async def _in_empty(self) -> None:
        self._seated.clear()
        if not self._present:
            await self._seated.wait()
        self.go(Trigger.SEATED, "module seated")
        self.event(EventKind.INSERTED, f"module inserted in slot {self.index}")

    async def _in_inserted(self) -> None:
        """Every way up (a new or re-seated module, a restart, a technician's reset) starts
        here, so latched power faults are cleared here, before anything is powered."""
        try:
            await self.svc.call(self.hw.clear_latched_faults)
        except (HardwareError, ProtocolError) as exc:  # it may be what failed; powering tells
            self.log.warning("latched faults not cleared", error=str(exc))
        self.go(Trigger.IDENTIFY, "reading the module's identity EEPROM")

    async def _sleep(self) -> None:
        await self._power_down()
        self.go(Trigger.SLEEP, "asleep: powered down by the governor")

    async def _in_sleeping(self) -> None:
        while self.svc.director.mode() is Mode.SLEEP:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PRESENCE_RECHECK_S):
                    await self.nudged.wait()
            self.nudged.clear()
        self.go(Trigger.WAKE, "waking: powering up again")

    async def _in_fault(self) -> None:
        """Off. Comes back by itself once cooled, within the restart limit; else waits."""
        policy = self.module.restarts if self.module is not None else None
        if not self.fault_retry or policy is None:
            await asyncio.Event().wait()  # until pulled, a swap is prepared, or a reset
            return
        while True:
            temps = await self.svc.call(self.hw.read_temps)
            now = self.svc.clock()
            # A technician's reset restarts the board once cool, whatever the limit says.
            if (self._reset_requested.is_set() or policy.may_restart(now)) and policy.cooled(temps):
                break
            if policy.exhausted:
                why = f"{self.fault_reason}; {policy.reason}"
                self.set_status(detail=why)
                self.event(EventKind.NEEDS_SERVICE, f"slot {self.index}: {why}")
                self._reset_requested.clear()
                await self._reset_requested.wait()  # a technician's reset_slot
                continue
            await asyncio.sleep(1.0)
        self._reset_requested.clear()
        policy.record_restart(now)
        count, limit = policy.restarts, policy.settings.max_restarts
        self.event(
            EventKind.RESTARTING,
            f"slot {self.index}: restarting after '{self.fault_reason}' "
            f"(restart {count} of {limit})",
            restart=count,
            temps_c=list(temps),
        )
        self.hw.pins.locate("off")
        self.go(Trigger.RETRY, f"restarting by itself (restart {count} of {limit})", locate="off")
        self.set_status(restarts=count)

    async def _in_draining(self) -> None:
        chain = self.chain
        if chain is not None and chain.info is not None:
            with contextlib.suppress(HashbayError, TimeoutError):
                async with asyncio.timeout(5):
                    floor = self.svc.envelope.board(self.index).freq_min_mhz
                    await chain.ramp_frequency(floor, step_mhz=50, step_delay_s=0.02)
        await self._power_down()
        if not await self.power.until(self.hw.output_off, self.settings.power_good_timeout_s):
            await self._fault(
                "output still live after power-down: do NOT remove the module",
                Fault.OUTPUT_STILL_LIVE,
                retry=False,
            )
            return
        self.hw.pins.locate("blink")
        self.go(Trigger.DRAINED, "power is off: safe to remove", locate="blink")
        self.event(EventKind.SAFE_TO_REMOVE, f"slot {self.index}: safe to remove the module")

    async def _in_safe_to_remove(self) -> None:
        await asyncio.Event().wait()  # until pulled or the swap is cancelled

    # -- down --------------------------------------------------------------------------

    async def _fault(self, why: str, cause: Fault, *, retry: bool = True) -> None:
        self.fault_reason, self.fault_cause, self.fault_retry = why, cause, retry
        policy = self.module.restarts if self.module is not None else None
        if policy is not None:
            policy.tripped(self.svc.clock(), why)
        await self._power_down()
        self.hw.pins.locate("on")
        self.go(Trigger.FAULT, why, locate="on", fault_code=cause.code)
        message = f"module in slot {self.index} faulted: {why}"
        self.event(EventKind.FAULT, message, reason=why, code=cause.code)

    async def _power_down(self) -> None:
        self.hw.safe()
        self.protection.stop()
        self.tuner.stop()
        self.throttle = 1.0
        self.hashing_since_s = None
        await self.close_chain()
        await self.power.off()
        await self.keep_prediction(self.svc.predictions.snapshot)

    async def _pulled(self) -> None:
        before = self.state
        prepared = before is SlotState.SAFE_TO_REMOVE
        await self._power_down()
        self.svc.envelope.forget_board(self.index)
        self.hw.pins.locate("off")
        why = (
            "module removed"
            if prepared
            else f"module pulled without a prepared swap while {before}"
        )
        serial = self.status.serial
        self.go(
            Trigger.PULLED,
            why,
            serial=None,
            model=None,
            health=None,
            prediction=None,
            temps_c=(),
            board_v=None,
            power_w=None,
            freq_mhz=None,
            locate="off",
        )
        self.svc.events.publish(
            Event(
                EventKind.REMOVED,
                self.index,
                why,
                serial=serial,
                details={"prepared": prepared, "previous_state": str(before)},
            )
        )
        module, self.module = self.module, None
        if module is not None:  # saved on power-down; it may go elsewhere
            self.svc.predictions.release(module.serial)
        self.log = log.bind(slot=self.index)

    async def _shut_down(self) -> None:
        """Agent stopping: the supervisor already applied the safe state; tidy up and keep
        the module's predictor state (a short blocking write: the agent is stopping)."""
        self.hw.safe()
        self.protection.stop()
        self.tuner.stop()
        module = self.module
        if module is not None:
            state = self.svc.predictions.release(module.serial)
            if state is not None:
                self.svc.predictions.save(module.serial, state)
        with contextlib.suppress(Exception):
            await self.close_chain()
