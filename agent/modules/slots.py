"""One controller per slot: takes a module from seated to hashing, watches its health,
and takes it down again — on a fault, on a prepared swap, or when it is pulled by surprise.

Each state has a handler coroutine that does the state's work and ends by firing one
trigger (the table is in lifecycle.py). Three things interrupt whatever a handler is
doing: the module disappearing, a prepared swap and a cancelled one. Blocking bus I/O
runs on the rig's hardware thread; the chain's UART is driven from the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import structlog

from hashbay.agent.core.alarm_settings import AlarmSettings
from hashbay.agent.core.alarms import AlarmGate
from hashbay.agent.core.events import Event, EventBus, EventKind
from hashbay.agent.core.status import (
    BusDevice,
    ChipSample,
    Health,
    HealthLevel,
    ModuleSample,
    Prediction,
    SlotState,
    SlotStatus,
)
from hashbay.agent.hardware.bus_health import BusNoise, describe
from hashbay.agent.hardware.power_sequence import PowerUpFailed, power_up
from hashbay.agent.hardware.slot_hw import SlotHardware
from hashbay.agent.mining.work import WorkSource
from hashbay.agent.modules.lifecycle import Trigger, allowed, next_state
from hashbay.agent.modules.protection import BoardGuard, RestartPolicy, Tier, Verdict
from hashbay.agent.modules.protection_settings import ProtectionSettings
from hashbay.agent.modules.slot_alarms import SlotAlarms
from hashbay.agent.modules.sweep import SensorSweep
from hashbay.agent.power.governor import BOARD_TO_INPUT, CurvePoint, Mode
from hashbay.agent.power.operating_point import OperatingPoint, PointPlanner
from hashbay.agent.tuning.autotune import Autotuner, BoardProfile, TuneProgress
from hashbay.agent.tuning.tune_settings import TuneSettings
from hashbay.agent.tuning.tune_store import Loaded, TuneStore
from hashbay.agent.tuning.tuning import ChainTuneTarget
from hashbay.drivers.bm13xx.chain import Bm13xxChain, SerialLink
from hashbay.drivers.bm13xx.frames import NonceReply
from hashbay.drivers.bm13xx.registers import SMALL_CORES
from hashbay.drivers.eeprom import BoardIdentity, IdentityError
from hashbay.drivers.envelope import BoardLimits, SafetyEnvelope
from hashbay.drivers.errors import HardwareError, HashbayError, ProtocolError, SafetyViolation

log = structlog.get_logger("hashbay.slots")

IDENTIFY_ATTEMPTS = 3
ENUMERATE_ATTEMPTS = 2
PRESENCE_RECHECK_S = 0.5
BUDGET_HEADROOM = 1.05
GOVERNED = (
    SlotState.POWERING,
    SlotState.ENUMERATING,
    SlotState.RAMPING,
    SlotState.HASHING,
    SlotState.DEGRADED,
    SlotState.SLEEPING,
)


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
    director: Director = field(default_factory=RunFreely)
    protection: ProtectionSettings | None = None  # None: no guard (unit tests)
    sweep: SensorSweep | None = None  # reads every guarded board's sensors each period
    alarm_settings: AlarmSettings = field(default_factory=AlarmSettings)  # bus noise
    tuning: Tuning | None = None  # None: no autotuning (unit tests)


class SlotController:
    def __init__(
        self,
        hw: SlotHardware,
        open_uart: Callable[[], SerialLink],
        settings: SlotSettings,
        services: Services,
    ) -> None:
        self.hw = hw
        self.index = hw.index
        self._open_uart = open_uart  # the slot's chain UART, from the buses
        self._settings = settings
        self._svc = services
        self.state = SlotState.EMPTY
        self.status = SlotStatus(self.index, SlotState.EMPTY, detail="no module", since=time.time())
        self.identity: BoardIdentity | None = None
        self.chain: Bm13xxChain | None = None
        self._chain_stack = contextlib.AsyncExitStack()
        self._health: HealthTracker | None = None
        self._predictor: TrendTracker | None = None
        self._predictor_serial: str | None = None
        self._hashing_since_s: float | None = None
        self._present = False
        self._present_changed = asyncio.Event()
        self._seated = asyncio.Event()
        self._interrupt = asyncio.Event()
        self._interrupts: list[tuple[Trigger, asyncio.Future[SlotState]]] = []
        self._job_id = 0
        self.planner: PointPlanner | None = None
        self.point: OperatingPoint | None = None
        self.throttle = 1.0
        self._nudged = asyncio.Event()
        self._guarded = False
        self._tuning_task: asyncio.Task[None] | None = None
        self._tune_wanted = False
        self._reset_requested = asyncio.Event()
        self._tier = Tier.OK
        self._unreadable: tuple[int, ...] = ()  # sensors protection reports unreadable
        self._protection: BoardGuard | None = None
        self._restart_policy: RestartPolicy | None = None
        self._fault_reason = ""
        self._fault_retry = True
        self._bus_noise = BusNoise(services.alarm_settings)
        self._bus: tuple[BusDevice, ...] = ()
        self._alarms = SlotAlarms(
            self.index,
            services.alarms,
            hw.pins,
            lambda: self.status.serial,
            services.alarm_settings.bus_window_s,
        )
        self._log = log.bind(slot=self.index)
        self.transitions: list[tuple[SlotState, SlotState, str]] = []

    # -- outside world -----------------------------------------------------------------

    def presence_edge(self) -> None:
        """Called (in the loop) when the presence line moved; re-checked after debounce."""
        self._present_changed.set()

    def alert_tripped(self) -> None:
        """Called (in the loop) after the module's over-temperature line cut its power in
        the pin callback: the state machine follows the hardware."""
        if self._guarded:
            limit = self._svc.protection.cutoff_c if self._svc.protection else None
            at = f" ({limit:g} °C)" if limit is not None else ""
            self._cut(f"over temperature: the board's sensors tripped their hardware limit{at}")

    async def prepare_swap(self) -> SlotState:
        if self.state is SlotState.EMPTY:
            raise CommandRefused(f"slot {self.index} is empty")
        if self.state in (SlotState.DRAINING, SlotState.SAFE_TO_REMOVE):
            return self.state
        return await self._request(Trigger.PREPARE)

    async def cancel_swap(self) -> SlotState:
        if self.state not in (SlotState.DRAINING, SlotState.SAFE_TO_REMOVE):
            raise CommandRefused(f"slot {self.index} has no swap prepared (it is {self.state})")
        return await self._request(Trigger.CANCEL)

    async def reset(self) -> SlotState:
        """A technician clears a fault: restart count forgotten, module brought up again."""
        if self.state is not SlotState.FAULT:
            raise CommandRefused(
                f"slot {self.index} is {self.state}; only a faulted module can be reset"
            )
        policy = self._restart_policy
        if policy is None or not self._fault_retry:
            self._fault_retry = True
            return await self._request(Trigger.RETRY)
        policy.reset()  # the count starts again; the board still restarts only once cool
        self._set_status(
            detail=f"reset by a technician; restarts once below {policy.settings.cool_c:g} °C"
        )
        self._reset_requested.set()
        return self.state

    def nudge(self) -> None:
        """The governor changed its mind: re-plan now instead of at the next sample."""
        self._nudged.set()

    def curve(self) -> list[CurvePoint] | None:
        """What this board can do, for the governor: while it comes up, hashes or sleeps
        (a sleeping board still counts, or the governor would wake it to find out)."""
        if self.planner is None or self.state not in GOVERNED:
            return None
        return self.planner.curve()

    def locate(self, mode: str) -> None:
        self.hw.pins.locate(mode)
        self._set_status(locate=mode)

    async def _request(self, trigger: Trigger) -> SlotState:
        future: asyncio.Future[SlotState] = asyncio.get_running_loop().create_future()
        self._interrupts.append((trigger, future))
        self._interrupt.set()
        return await future

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
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
        handler = asyncio.create_task(self._handler(self.state)())
        interrupted = asyncio.create_task(self._interrupt.wait())
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
            why = f"{self.state}: {exc}"
        else:
            self._log.error("slot handler failed", state=str(self.state), exc_info=exc)
            why = f"internal error while {self.state}: {exc!r}"
        if not allowed(self.state, Trigger.FAULT):  # nothing is powered in this state
            self._alarms.internal(why)
            await asyncio.sleep(PRESENCE_RECHECK_S)
            return
        await self._fault(why, retry=self.state is not SlotState.FAULT)

    async def _take_interrupts(self) -> None:
        self._interrupt.clear()
        pending, self._interrupts = self._interrupts, []
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
                await self._fault(self._fault_reason, retry=self._fault_retry)
            elif trigger is Trigger.RETRY:
                self.hw.pins.locate("off")
                self._go(trigger, "reset by a technician: bringing the module up", locate="off")
                self._set_status(restarts=0)
            elif trigger is Trigger.CANCEL:
                await self._power_down()
                self.hw.pins.locate("off")
                self._go(trigger, "swap cancelled; bringing the module back up", locate="off")
                self._event(EventKind.SWAP_CANCELLED, "swap cancelled, module coming back up")
            else:
                self._go(trigger, "swap prepared: stopping work and powering down")
            future.set_result(self.state)

    def _handler(self, state: SlotState) -> Callable[[], Any]:
        return {
            SlotState.EMPTY: self._in_empty,
            SlotState.INSERTED: self._in_inserted,
            SlotState.IDENTIFYING: self._in_identifying,
            SlotState.POWERING: self._in_powering,
            SlotState.ENUMERATING: self._in_enumerating,
            SlotState.RAMPING: self._in_ramping,
            SlotState.HASHING: self._in_hashing,
            SlotState.DEGRADED: self._in_hashing,
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
                self._interrupt.set()

    # -- transitions -------------------------------------------------------------------

    def _go(self, trigger: Trigger, why: str, **status: Any) -> None:
        before = self.state
        after = next_state(before, trigger)
        self.state = after
        self.transitions.append((before, after, why))
        self._set_status(state=after, detail=why, since=time.time(), **status)
        self._log.info(
            "slot state", serial=self.status.serial, state=str(after), was=str(before), why=why
        )

    def _set_status(self, **changes: Any) -> None:
        self.status = replace(self.status, **changes)
        self._svc.on_change()

    def _event(self, kind: EventKind, message: str, **details: Any) -> None:
        self._svc.events.publish(
            Event(kind, self.index, message, serial=self.status.serial, details=details)
        )

    # -- states ------------------------------------------------------------------------

    async def _in_empty(self) -> None:
        self._seated.clear()
        if not self._present:
            await self._seated.wait()
        self._go(Trigger.SEATED, "module seated")
        self._event(EventKind.INSERTED, f"module inserted in slot {self.index}")

    async def _in_inserted(self) -> None:
        """Every way up (a new or re-seated module, a restart, a technician's reset) starts
        here, so latched power faults are cleared here, before anything is powered."""
        try:
            await self._svc.call(self.hw.clear_latched_faults)
        except (HardwareError, ProtocolError) as exc:  # it may be what failed; powering tells
            self._log.warning("latched faults not cleared", error=str(exc))
        self._go(Trigger.IDENTIFY, "reading the module's identity EEPROM")

    async def _in_identifying(self) -> None:
        identity: BoardIdentity | None = None
        for attempt in range(IDENTIFY_ATTEMPTS):
            try:
                identity = await self._svc.call(self.hw.read_identity)
                break
            except IdentityError as exc:
                await self._untrusted(str(exc))
                return
            except HardwareError as exc:
                if attempt == IDENTIFY_ATTEMPTS - 1:
                    await self._untrusted(f"identity EEPROM unreadable: {exc}")
                    return
                await asyncio.sleep(0.2)
        assert identity is not None
        try:
            self._svc.envelope.admit_board(self.index, identity.limits)
        except SafetyViolation as exc:
            await self._untrusted(str(exc))
            return
        if not await self._arm_alerts():
            return
        self.identity = identity
        self._log = log.bind(slot=self.index, serial=identity.serial)
        limits = self._svc.envelope.board(self.index)
        tuning = self._svc.tuning
        loaded = tuning.stored(identity, limits) if tuning is not None else Loaded(None)
        if loaded.problem:
            self._event(
                EventKind.STATE_DROPPED,
                f"slot {self.index}: stored tuning profile left out, running untuned: "
                f"{loaded.problem}",
                file="tune profile",
                reason=loaded.problem,
            )
        stored = loaded.stored
        self.planner = PointPlanner(
            limits,
            chip_count=identity.chip_count,
            nominal_v=identity.nominal_vout_mv / 1000,
            nominal_freq_mhz=identity.nominal_freq_mhz,
            hashes_per_mhz=SMALL_CORES.get(identity.chip_model, 0) * 1e6,
            profile=stored.profile.points if stored is not None else (),
        )
        self._tune_wanted = (
            tuning is not None
            and tuning.settings.auto_tune
            and (stored is None or stored.stale(tuning.settings.max_age_days))
        )
        if stored is not None:
            self._set_status(tuning=f"tuned {stored.tuned_at:%Y-%m-%d}: {stored.profile.summary()}")
        self._health = self._svc.health(identity)
        if self._predictor_serial is not None:  # identified again in this slot
            self._svc.predictions.release(self._predictor_serial)
        self._predictor = self._svc.predictions.take(
            identity.serial, identity.chip_count, identity.nominal_vout_mv / 1000
        )
        self._predictor_serial = identity.serial
        self._log = log.bind(slot=self.index, serial=identity.serial)
        self._go(
            Trigger.IDENTIFIED,
            f"{identity.model} {identity.serial}: {identity.chip_count} chips",
            serial=identity.serial,
            model=identity.model,
        )

    async def _arm_alerts(self) -> bool:
        """Program the sensors' hardware over-temperature cut (where the alert line is
        wired) before the module is ever powered; False after faulting it if they would
        not take it: a board that cannot cut itself is not powered."""
        settings = self._svc.protection
        if settings is None or not self.hw.pins.has_alert:
            return True
        over_c, release_c = settings.cutoff_c, settings.cutoff_c - settings.hysteresis_c
        try:
            armed = await self._svc.call(
                lambda: self.hw.arm_alerts(over_c, release_c, settings.alert_fault_queue)
            )
        except ProtocolError as exc:  # a part that does not keep its limits: service
            await self._fault(f"over-temperature cut not armed: {exc}", retry=False)
            return False
        except HardwareError as exc:
            await self._fault(f"over-temperature cut not armed: {exc}")
            return False
        self._log.info(
            "over-temperature cut armed",
            over_c=armed.over_c,
            release_c=armed.release_c,
            fault_queue=armed.fault_queue,
        )
        return True

    async def _untrusted(self, why: str) -> None:
        self._fault_retry = False  # only a technician's reset (or a new module) retries
        self._svc.envelope.forget_board(self.index)
        self.hw.pins.locate("on")
        self._go(Trigger.UNTRUSTED, f"not powered: {why}", locate="on")
        self._event(EventKind.FAULT, f"module in slot {self.index} not powered: {why}")

    async def _in_powering(self) -> None:
        identity = self._identity()
        self._svc.director.refresh()  # decide with this board counted, before powering it
        if self._svc.director.mode() is Mode.SLEEP:
            self._go(Trigger.SLEEP, "asleep: curtailed before powering up")
            return
        while not self._svc.budget.reserve(self.index, identity.power_max_w):
            detail = (
                f"waiting for PSU budget: {identity.power_max_w} W needed, "
                f"{self._svc.budget.reserved_w:.0f} of {self._svc.budget.max_w:.0f} W promised"
            )
            if self.status.detail != detail:
                self._set_status(detail=detail)
            await asyncio.sleep(2.0)
        if self.hw.pins.alert_asserted:
            await self._fault("over-temperature alert asserted: too hot to power up")
            return
        self._start_guard()
        volts = self._planned().board_v
        try:
            await power_up(
                self.hw, volts, call=self._svc.call, timeout_s=self._settings.power_good_timeout_s
            )
        except PowerUpFailed as exc:
            await self._fault(str(exc))
            return
        self._go(Trigger.POWER_GOOD, f"rail up at {volts:.2f} V", board_v=volts)

    async def _until(self, check: Callable[[], bool], timeout_s: float) -> bool:
        deadline = self._loop_time() + timeout_s
        while True:
            try:
                if await self._svc.call(check):
                    return True
            except (HardwareError, ProtocolError):  # a failed read: ask again
                pass
            if self._loop_time() >= deadline:
                return False
            await asyncio.sleep(0.02)

    @staticmethod
    def _loop_time() -> float:
        return asyncio.get_running_loop().time()

    async def _in_enumerating(self) -> None:
        identity = self._identity()
        settings = self._settings
        last_error = ""
        for _ in range(ENUMERATE_ATTEMPTS):
            await self._close_chain()
            self.hw.pins.hold_reset(True)
            await asyncio.sleep(0.02)
            self.hw.pins.hold_reset(False)
            await asyncio.sleep(0.15)
            chain = Bm13xxChain(
                self._open_uart(),
                slot=self.index,
                envelope=self._svc.envelope,
                check_zero_bits=settings.nonce_check_bits,
                clock=self._svc.clock,
                on_nonce=self._nonce_found,
            )
            self._chain_stack.callback(chain.port.close)
            await self._chain_stack.enter_async_context(chain.attached())
            self.chain = chain
            try:
                info = await chain.enumerate(expected_chips=identity.chip_count)
            except HashbayError as exc:
                last_error = str(exc)
                self._log.warning("enumeration failed", error=last_error)
                continue
            chain.set_version_mask()
            chain.set_ticket_difficulty(settings.ticket_difficulty)
            if settings.fast_baud:
                await chain.set_fast_baud()
            self._go(Trigger.ENUMERATED, f"{info.chip_count} {info.model} chips answered")
            return
        await self._fault(f"chain enumeration failed: {last_error}")

    async def _in_ramping(self) -> None:
        target = self._planned()
        self._set_status(detail=f"ramping to {target.mean_freq_mhz:.0f} MHz ({target.why})")
        self.point = OperatingPoint(
            self.status.board_v or target.board_v, tuple(self._chain().freq_mhz)
        )
        await self._apply(target)
        self._send_job()
        self._hashing_since_s = self._svc.clock()
        self._go(Trigger.RAMPED, f"hashing at {target.mean_freq_mhz:.0f} MHz ({target.why})")

    def _expect_volts(self, volts: float) -> None:
        if self._health is not None:
            self._health.set_board_v_target(volts)

    # -- autotuning ----------------------------------------------------------------------

    def start_tuning(self) -> str:
        """Tune this module now (it keeps hashing); the result is stored under its serial."""
        if self._svc.tuning is None:
            raise CommandRefused("autotuning is not configured on this agent")
        if self.state not in (SlotState.HASHING, SlotState.DEGRADED) or self.chain is None:
            raise CommandRefused(
                f"slot {self.index} is {self.state}; only a hashing module is tuned"
            )
        if self._tuning_task is not None:
            return self.status.tuning or "already tuning"
        self._tune_wanted = False
        self._tuning_task = asyncio.create_task(self._tune(), name=f"slot{self.index}-tune")
        self._set_status(tuning="tuning: starting")
        return "started"

    def _stop_tuning(self) -> None:
        task, self._tuning_task = self._tuning_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _tune(self) -> None:
        tuning, identity, chain = self._svc.tuning, self._identity(), self._chain()
        assert tuning is not None
        started = time.monotonic()
        target = ChainTuneTarget(
            self.index,
            chain,
            self.hw,
            self._svc.envelope,
            self._svc.call,
            hashes_per_mhz=SMALL_CORES.get(identity.chip_model, 0) * 1e6,
            ramp_step_mhz=self._settings.ramp_step_mhz,
            ramp_step_delay_s=self._settings.ramp_step_delay_s,
            clock=self._svc.clock,
            volts_now=self.point.board_v if self.point else identity.nominal_vout_mv / 1000,
            on_voltage=self._expect_volts,
        )

        def progress(step: TuneProgress) -> None:
            self._set_status(tuning=step.describe())

        cap_w = self._svc.envelope.power_budget(self.index, self._svc.director.budget_w(self.index))
        chain.set_ticket_difficulty(tuning.settings.ticket_difficulty)
        try:
            profile = await Autotuner(tuning.settings).run(
                target, power_cap_w=cap_w, progress=progress
            )
        except asyncio.CancelledError:
            raise  # powered down or stopped: the chain is gone, nothing to restore
        except Exception as exc:  # a failed tune must leave the board hashing
            self._log.warning("autotuning failed", error=str(exc))
            self._set_status(tuning=f"tuning failed: {exc}")
            profile = None
        self._tuning_task = None
        if self.chain is not chain:
            return
        chain.set_ticket_difficulty(self._settings.ticket_difficulty)
        self._health = self._svc.health(identity)  # judge the tuned board afresh
        self._expect_volts(target.voltage_now)
        self.point = OperatingPoint(target.voltage_now, tuple(chain.freq_mhz))
        self.nudge()
        if profile is not None:
            await self._tuned(identity, profile, time.monotonic() - started)

    def _abort_tuning(self, why: str) -> None:
        """Protection or the governor needs the clocks back: the tuner must not hold them."""
        if self._tuning_task is None:
            return
        self._stop_tuning()
        chain = self.chain
        if chain is not None:
            chain.set_ticket_difficulty(self._settings.ticket_difficulty)
            self.point = OperatingPoint(
                self.point.board_v if self.point else 0.0, tuple(chain.freq_mhz)
            )
            if self.identity is not None:
                self._health = self._svc.health(self.identity)
        self._set_status(tuning=f"tuning stopped: {why}")
        self._log.warning("autotuning stopped", why=why)

    async def _tuned(self, identity: BoardIdentity, profile: BoardProfile, real_s: float) -> None:
        tuning = self._svc.tuning
        assert tuning is not None and self.planner is not None
        saved = await asyncio.to_thread(
            tuning.store.save, identity.serial, profile, board_model=identity.model
        )
        self.planner.use_profile(profile.points)
        summary = profile.summary()
        self._set_status(tuning=summary)
        best = profile.best()
        self._event(
            EventKind.TUNED,
            f"slot {self.index}: tuned in {profile.duration_s / 60:.0f} min: {summary}",
            duration_s=round(profile.duration_s),
            real_s=round(real_s),
            points=len(profile.points),
            j_per_th=round(best.j_per_th, 2) if best else None,
            saved=saved,
        )

    def _planned(self) -> OperatingPoint:
        """The point the governor and protection allow this board right now."""
        planner = self.planner
        if planner is None:
            raise RuntimeError("no planner in a state that needs one")
        director = self._svc.director
        mode = director.mode()
        budget = director.budget_w(self.index) if mode is Mode.RUN else None
        capped = self._svc.envelope.power_budget(self.index, budget)
        return planner.point_for(mode, capped, self.throttle)

    async def _apply(self, target: OperatingPoint) -> None:
        """Move to `target`, ramping: voltage up before clocks, clocks down before voltage.

        Speeding up needs the PSU's promise first: a board whose estimated draw at the new
        point does not fit next to the others' holds its current point."""
        chain, current = self._chain(), self.point
        if self.planner is not None:
            # In the units powering up promised (the module's declared maximum, at most).
            needed_w = min(self.planner.power_w(target), self.planner.limits.power_max_w)
            if not self._svc.budget.reserve(self.index, needed_w) and current is not None:
                self._set_status(
                    point=f"held: {needed_w:.0f} W would exceed the PSU's "
                    f"{self._svc.budget.max_w:.0f} W"
                )
                return
        raise_v = current is None or target.board_v > current.board_v
        if raise_v and (current is None or current.board_v != target.board_v):
            await self._svc.call(lambda: self.hw.set_rail_v(target.board_v))
            self._expect_volts(target.board_v)
        await chain.ramp_chips(
            target.freqs_mhz,
            step_mhz=self._settings.ramp_step_mhz,
            step_delay_s=self._settings.ramp_step_delay_s,
        )
        if not raise_v and current is not None and current.board_v != target.board_v:
            await self._svc.call(lambda: self.hw.set_rail_v(target.board_v))
            self._expect_volts(target.board_v)
        self.point = target
        self._set_status(
            freq_mhz=round(target.mean_freq_mhz, 1),
            board_target_v=target.board_v,
            point=target.why,
            throttle=self.throttle,
        )

    def _send_job(self) -> None:
        self._job_id = (self._job_id + 1) % 16
        chain, work = self._chain(), self._svc.work
        job = work.next_job(self.index, self._job_id)
        if chain.version_mask != work.version_mask:  # the bits the pool lets chips roll
            chain.set_version_mask(work.version_mask)
        chain.send_job(job)

    def _nonce_found(self, chip: int, reply: NonceReply) -> None:
        if self.chain is not None:
            self._svc.work.on_nonce(self.index, chip, reply, self.chain.version_mask)

    async def _in_hashing(self) -> None:
        settings = self._settings
        loop = asyncio.get_running_loop()
        next_job = loop.time() + settings.job_interval_s
        next_chip_poll = loop.time() + settings.chip_poll_interval_s
        missing: tuple[int, ...] = ()
        next_sample = loop.time() + settings.sample_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_sample - loop.time())):
                    await self._nudged.wait()
            self._nudged.clear()
            if self._svc.director.mode() is Mode.SLEEP:
                await self._sleep()
                return
            if self._tune_wanted and self._tuning_task is None:
                self.start_tuning()
            if self._tuning_task is not None and self.throttle < 1.0:
                self._abort_tuning(self.status.throttle_reason or "throttled by protection")
            elif self._tuning_task is not None and self._svc.director.mode() is not Mode.RUN:
                self._abort_tuning(f"power mode is {self._svc.director.mode()}")
            target = self._planned()
            if self._tuning_task is None and not target.close_to(self.point):
                await self._apply(target)
            budget = self._svc.director.budget_w(self.index)
            budget = None if budget is None else round(budget, 1)
            if budget != self.status.budget_w:
                self._set_status(budget_w=budget)
            now = loop.time()
            if self._svc.work.fresh(self.index):  # clean_jobs: the chips' work is stale
                self._send_job()
                next_job = now + settings.job_interval_s
            if now < next_sample:
                continue
            next_sample = now + settings.sample_interval_s
            if now >= next_job:
                self._send_job()
                next_job = now + settings.job_interval_s
            if now >= next_chip_poll:
                missing = tuple(await self._chain().poll_chips())
                next_chip_poll = loop.time() + settings.chip_poll_interval_s
            if await self._assess(await self._sample(missing)):
                return

    async def _sample(self, missing: tuple[int, ...]) -> ModuleSample:
        chain = self._chain()
        rails = await self._svc.call(self.hw.read_rails)
        chips = tuple(
            ChipSample(c.nonces, c.hw_errors, c.timeouts, c.work, chain.freq_mhz[i])
            for i, c in enumerate(chain.counters.chips)
        )
        expected = sum(chain.freq_mhz) * 1e6 * _small_cores(chain)
        dcdc = rails.dcdc
        now, since = self._svc.clock(), self._hashing_since_s
        self._bus = self._bus_noise.update(self._svc.clock(), self.hw.bus_devices())
        window_s = self._svc.alarm_settings.bus_window_s
        return ModuleSample(
            at_s=now,
            chips=chips,
            expected_hs=expected,
            temps_c=rails.temps_c,
            board_v=dcdc.vout_v if dcdc else None,
            board_a=dcdc.iout_a if dcdc else None,
            dcdc_temp_c=dcdc.temp_c if dcdc else None,
            rail_fault=rails.fault,
            fans_stalled=self._svc.fans_stalled(),
            missing_chips=missing,
            hashing_for_s=None if since is None else max(0.0, now - since),
            bus_noise=tuple(describe(d, window_s) for d in self._bus if d.noisy),
        )

    async def _assess(self, sample: ModuleSample) -> bool:
        """Update prediction and health; True when the state changed."""
        assert self._health is not None and self._predictor is not None
        before = self.status.bus
        # Status lists the devices that failed a transaction: a healthy bus says nothing.
        self._set_status(bus=tuple(d for d in self._bus if d.failed or d.noisy))
        self._alarms.bus(before, self._bus)
        power = sample.board_v * sample.board_a if sample.board_v and sample.board_a else None
        if self._tuning_task is not None:
            # Tuning makes chips err on purpose: show the figures, judge nothing, and keep
            # the tuner's errors out of the predictor's evidence.
            self._predictor.skip(sample)
            health = self._health.update(sample, self.status.prediction)
            if power is not None:
                self._svc.budget.reserve(self.index, power / BOARD_TO_INPUT * BUDGET_HEADROOM)
            self._set_status(health=health, temps_c=sample.temps_c, board_v=sample.board_v)
            return False
        prediction = self._predictor.update(sample)
        health = self._health.update(sample, prediction)
        if power is not None and self.planner is not None and self.point is not None:
            self.planner.learn(power, self.point)
        if power is not None:
            # Promise the PSU what the module really draws (plus headroom), not its maximum,
            # so the next module can power up once this one has settled.
            self._svc.budget.reserve(self.index, power / BOARD_TO_INPUT * BUDGET_HEADROOM)
        self._set_status(
            health=health,
            prediction=prediction,
            temps_c=sample.temps_c,
            board_v=sample.board_v,
            power_w=power,
        )
        if self._predictor.newly_raised:  # once per trend, across restarts and slot moves
            self._event(
                EventKind.DEGRADING,
                f"module {self.status.serial} likely to fail: {prediction.trend}",
                time_to_failure_s=prediction.time_to_failure_s,
                chip=prediction.chip,
            )
        reasons = "; ".join(r.text for r in health.reasons[:3]) or "healthy"
        if health.level is HealthLevel.FAULT:
            await self._fault(reasons)
            return True
        if health.level is HealthLevel.DEGRADED and self.state is SlotState.HASHING:
            self._go(Trigger.DEGRADED, f"health {health.score:.0f}: {reasons}")
            return True
        if health.level is HealthLevel.OK and self.state is SlotState.DEGRADED:
            self._go(Trigger.HEALTHY, f"health {health.score:.0f}: recovered")
            self._alarms.healthy(health.score)
            return True
        await self._keep_prediction(self._svc.predictions.due)
        return False

    async def _sleep(self) -> None:
        await self._power_down()
        self._go(Trigger.SLEEP, "asleep: powered down by the governor")

    async def _in_sleeping(self) -> None:
        while self._svc.director.mode() is Mode.SLEEP:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PRESENCE_RECHECK_S):
                    await self._nudged.wait()
            self._nudged.clear()
        self._go(Trigger.WAKE, "waking: powering up again")

    async def _in_fault(self) -> None:
        """Off. Comes back by itself once cooled, within the restart limit; else waits."""
        policy = self._restart_policy
        if not self._fault_retry or policy is None or self.identity is None:
            await asyncio.Event().wait()  # until pulled, a swap is prepared, or a reset
            return
        while True:
            temps = await self._svc.call(self.hw.read_temps)
            now = self._svc.clock()
            # A technician's reset restarts the board once cool, whatever the limit says.
            if (self._reset_requested.is_set() or policy.may_restart(now)) and policy.cooled(temps):
                break
            if policy.exhausted:
                why = f"{self._fault_reason}; {policy.reason}"
                self._set_status(detail=why)
                self._event(EventKind.NEEDS_SERVICE, f"slot {self.index}: {why}")
                self._reset_requested.clear()
                await self._reset_requested.wait()  # a technician's reset_slot
                continue
            await asyncio.sleep(1.0)
        self._reset_requested.clear()
        policy.record_restart(now)
        count, limit = policy.restarts, policy.settings.max_restarts
        self._event(
            EventKind.RESTARTING,
            f"slot {self.index}: restarting after '{self._fault_reason}' "
            f"(restart {count} of {limit})",
            restart=count,
            temps_c=list(temps),
        )
        self.hw.pins.locate("off")
        self._go(Trigger.RETRY, f"restarting by itself (restart {count} of {limit})", locate="off")
        self._set_status(restarts=count)

    async def _in_draining(self) -> None:
        if self.chain is not None and self.chain.info is not None:
            with contextlib.suppress(HashbayError, TimeoutError):
                async with asyncio.timeout(5):
                    floor = self._svc.envelope.board(self.index).freq_min_mhz
                    await self.chain.ramp_frequency(floor, step_mhz=50, step_delay_s=0.02)
        await self._power_down()
        if not await self._until(self.hw.output_off, self._settings.power_good_timeout_s):
            await self._fault(
                "output still live after power-down: do NOT remove the module", retry=False
            )
            return
        self.hw.pins.locate("blink")
        self._go(Trigger.DRAINED, "power is off: safe to remove", locate="blink")
        self._event(EventKind.SAFE_TO_REMOVE, f"slot {self.index}: safe to remove the module")

    async def _in_safe_to_remove(self) -> None:
        await asyncio.Event().wait()  # until pulled or the swap is cancelled

    # -- protection: the fast path -------------------------------------------------------

    def _start_guard(self) -> None:
        settings, sweep = self._svc.protection, self._svc.sweep
        if settings is None or sweep is None or self._guarded:
            return
        if self._protection is None or self._restart_policy is None:
            self._protection = BoardGuard(settings)
            self._restart_policy = RestartPolicy(settings)
        self._protection.reset()
        self._tier = Tier.OK
        self._unreadable = ()
        self._guarded = True
        sweep.watch(self.index, self.hw, self._on_reading, backed=self.hw.pins.has_alert)

    def _stop_guard(self) -> None:
        self._guarded = False
        if self._svc.sweep is not None:
            self._svc.sweep.unwatch(self.index)

    def _on_reading(self, temps: tuple[float | None, ...], rail_fault: str | None) -> None:
        """One sweep's readings of this board (in the loop): judged, and acted on, now.

        If judging itself fails the board cannot be watched, so that is a cut too."""
        if not self._guarded or self._protection is None:
            return
        try:
            verdict = self._protection.assess(
                self._svc.clock(), temps, self.status.power_w, self._svc.fans_stalled(), rail_fault
            )
            if verdict.tier.cuts_power:
                self._cut(verdict.reason)
                return
            if verdict.changed:
                self._throttled(verdict)
            if verdict.unreadable != self._unreadable:
                before, self._unreadable = self._unreadable, verdict.unreadable
                self._alarms.sensors(
                    before, verdict.unreadable, self._protection.settings.sensor_lost_s
                )
        except Exception as exc:  # unwatched means unpowered
            self._log.exception("protection failed")
            self._cut(f"protection failed: {exc!r}")

    def _cut(self, why: str) -> None:
        """The hard cut first (GPIO, no bus), then the state machine tidies up."""
        self.hw.safe()
        self._stop_guard()
        self._log.warning("protection cut", why=why)
        self._fault_reason, self._fault_retry = why, True
        future: asyncio.Future[SlotState] = asyncio.get_running_loop().create_future()
        self._interrupts.append((Trigger.FAULT, future))
        self._interrupt.set()

    def _throttled(self, verdict: Verdict) -> None:
        previous, self._tier = self._tier, verdict.tier
        self.throttle = verdict.freq_scale
        self.nudge()
        if verdict.tier is Tier.OK and previous is Tier.OK:
            return  # a fresh guard's first word: nothing happened
        reason = "" if verdict.tier is Tier.OK else verdict.reason
        self._set_status(throttle=verdict.freq_scale, throttle_reason=reason)
        self._alarms.temperature(verdict)

    async def _fault(self, why: str, *, retry: bool = True) -> None:
        self._fault_reason, self._fault_retry = why, retry
        if self._restart_policy is not None:
            self._restart_policy.tripped(self._svc.clock(), why)
        await self._power_down()
        self.hw.pins.locate("on")
        self._go(Trigger.FAULT, why, locate="on")
        self._event(EventKind.FAULT, f"module in slot {self.index} faulted: {why}", reason=why)

    async def _power_down(self) -> None:
        self.hw.safe()
        self._stop_guard()
        self._stop_tuning()
        self.throttle = 1.0
        self._hashing_since_s = None
        await self._close_chain()
        problems = await self._svc.call(self.hw.power_off)
        for problem in problems:
            self._log.warning("power-off step failed", problem=problem)
        self._svc.budget.release(self.index)
        self.point = None
        self._tier = Tier.OK  # an unpowered board is not throttled: no reason may outlive it
        self._set_status(
            freq_mhz=None,
            power_w=None,
            board_target_v=None,
            point="",
            budget_w=None,
            throttle=1.0,
            throttle_reason="",
        )
        await self._keep_prediction(self._svc.predictions.snapshot)

    async def _keep_prediction(self, state_of: Callable[[str], object | None]) -> None:
        """Write the module's predictor state under its serial, off the event loop."""
        serial = self._predictor_serial
        state = state_of(serial) if serial is not None else None
        if serial is not None and state is not None:
            await asyncio.to_thread(self._svc.predictions.save, serial, state)

    async def _pulled(self) -> None:
        before = self.state
        prepared = before is SlotState.SAFE_TO_REMOVE
        await self._power_down()
        self._svc.envelope.forget_board(self.index)
        self.hw.pins.locate("off")
        why = (
            "module removed"
            if prepared
            else f"module pulled without a prepared swap while {before}"
        )
        serial = self.status.serial
        self._go(
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
        self._svc.events.publish(
            Event(
                EventKind.REMOVED,
                self.index,
                why,
                serial=serial,
                details={"prepared": prepared, "previous_state": str(before)},
            )
        )
        self.identity = None
        self.planner = None
        if self._predictor_serial is not None:  # saved on power-down; it may go elsewhere
            self._svc.predictions.release(self._predictor_serial)
        self._predictor = self._predictor_serial = None
        self._protection = self._restart_policy = None
        self._log = log.bind(slot=self.index)

    async def _close_chain(self) -> None:
        self.chain = None
        await self._chain_stack.aclose()
        self._chain_stack = contextlib.AsyncExitStack()

    async def _shut_down(self) -> None:
        """Agent stopping: the supervisor already applied the safe state; tidy up and keep
        the module's predictor state (a short blocking write: the agent is stopping)."""
        self.hw.safe()
        self._stop_guard()
        self._stop_tuning()
        serial, self._predictor_serial = self._predictor_serial, None
        if serial is not None:
            state = self._svc.predictions.release(serial)
            if state is not None:
                self._svc.predictions.save(serial, state)
        with contextlib.suppress(Exception):
            await self._close_chain()

    # -- helpers -----------------------------------------------------------------------

    def _identity(self) -> BoardIdentity:
        if self.identity is None:
            raise RuntimeError("no identity in a state that needs one")
        return self.identity

    def _chain(self) -> Bm13xxChain:
        if self.chain is None:
            raise RuntimeError("no chain in a state that needs one")
        return self.chain


def _small_cores(chain: Bm13xxChain) -> int:
    info = chain.info
    return SMALL_CORES.get(info.chip_id, 0) if info is not None else 0
