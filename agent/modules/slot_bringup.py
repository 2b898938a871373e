"""Bringing a seated module up, step by step: its identity read and trusted, its tuning
profile and trackers made (`SeatedModule`), the PSU's promise, the rail, the chain
enumerated, the clocks ramped to the planned point. Each step ends in one trigger, or in
a fault: nothing is powered that was not identified and admitted first."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from hashbay.agent.core.events import EventKind
from hashbay.agent.core.fault_codes import Fault
from hashbay.agent.hardware.power_sequence import PowerUpFailed, power_up
from hashbay.agent.modules.lifecycle import Trigger
from hashbay.agent.modules.seated import SeatedModule, planner_for
from hashbay.agent.modules.slot_core import SlotCore, log
from hashbay.agent.modules.slot_hashing import HashingLoop
from hashbay.agent.modules.slot_power import SlotPower
from hashbay.agent.modules.slot_protection import ProtectionLink
from hashbay.agent.power.governor import Mode
from hashbay.agent.power.operating_point import OperatingPoint
from hashbay.drivers.bm13xx.chain import Bm13xxChain, SerialLink
from hashbay.drivers.eeprom import BoardIdentity, IdentityError
from hashbay.drivers.errors import HardwareError, HashbayError, SafetyViolation

IDENTIFY_ATTEMPTS = 3
ENUMERATE_ATTEMPTS = 2


class BringUp:
    def __init__(
        self,
        slot: SlotCore,
        power: SlotPower,
        protection: ProtectionLink,
        hashing: HashingLoop,
        *,
        open_uart: Callable[[], SerialLink],
        fault: Callable[..., Awaitable[None]],
    ) -> None:
        self._slot = slot
        self._power = power
        self._protection = protection
        self._hashing = hashing
        self._open_uart = open_uart  # the slot's chain UART, from the buses
        self._fault = fault

    async def identifying(self) -> None:
        identity: BoardIdentity | None = None
        for attempt in range(IDENTIFY_ATTEMPTS):
            try:
                identity = await self._slot.svc.call(self._slot.hw.read_identity)
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
            self._slot.svc.envelope.admit_board(self._slot.index, identity.limits)
        except SafetyViolation as exc:
            await self._untrusted(str(exc))
            return
        armed = await self._protection.arm_alerts()
        if armed is not None:
            await self._fault(armed[0], Fault.OT_CUT_NOT_ARMED, retry=armed[1])
            return
        self._seat(identity)
        self._slot.go(
            Trigger.IDENTIFIED,
            f"{identity.model} {identity.serial}: {identity.chip_count} chips",
            serial=identity.serial,
            model=identity.model,
        )

    def _seat(self, identity: BoardIdentity) -> None:
        """The identified module becomes this slot's `SeatedModule`. Identified again in
        this slot (a restart), it keeps its guard and restart count."""
        self._slot.log = log.bind(slot=self._slot.index, serial=identity.serial)
        tuning = self._slot.svc.tuning
        loaded = tuning.stored(identity, self._slot.svc.envelope.board(self._slot.index))
        if loaded.problem:
            self._slot.event(
                EventKind.STATE_DROPPED,
                f"slot {self._slot.index}: stored tuning profile left out, running untuned: "
                f"{loaded.problem}",
                file="tune profile",
                reason=loaded.problem,
            )
        stored = loaded.stored
        planner = planner_for(identity, self._slot.svc.envelope.board(self._slot.index), loaded)
        tune_wanted = tuning.settings.auto_tune and (
            stored is None or stored.stale(tuning.settings.max_age_days)
        )
        if stored is not None:
            self._slot.set_status(
                tuning=f"tuned {stored.tuned_at:%Y-%m-%d}: {stored.profile.summary()}"
            )
        health = self._slot.svc.health(identity)
        previous = self._slot.module
        if previous is not None:  # identified again in this slot
            self._slot.svc.predictions.release(previous.serial)
        predictor = self._slot.svc.predictions.take(
            identity.serial, identity.chip_count, identity.nominal_vout_mv / 1000
        )
        self._slot.module = SeatedModule(
            identity,
            planner,
            health,
            predictor,
            tune_wanted,
            guard=previous.guard if previous is not None else None,
            restarts=previous.restarts if previous is not None else None,
        )

    async def _untrusted(self, why: str) -> None:
        self._slot.fault_retry = False  # only a technician's reset (or a new module) retries
        self._slot.svc.envelope.forget_board(self._slot.index)
        self._slot.hw.pins.locate("on")
        code = Fault.MODULE_UNTRUSTED.code
        self._slot.go(Trigger.UNTRUSTED, f"not powered: {why}", locate="on", fault_code=code)
        message = f"module in slot {self._slot.index} not powered: {why}"
        self._slot.event(EventKind.FAULT, message, code=code)

    async def powering(self) -> None:
        identity = self._slot.seated().identity
        self._slot.svc.director.refresh()  # decide with this board counted, before powering it
        if self._slot.svc.director.mode() is Mode.SLEEP:
            self._slot.go(Trigger.SLEEP, "asleep: curtailed before powering up")
            return
        await self._power.reserve(identity.power_max_w)
        if self._slot.hw.pins.alert_asserted:
            why = "over-temperature alert asserted: too hot to power up"
            await self._fault(why, Fault.TOO_HOT_TO_POWER)
            return
        self._protection.start()
        volts = self._power.planned().board_v
        try:
            await power_up(
                self._slot.hw,
                volts,
                call=self._slot.svc.call,
                timeout_s=self._slot.settings.power_good_timeout_s,
            )
        except PowerUpFailed as exc:
            await self._fault(str(exc), Fault.POWER_UP_FAILED)
            return
        self._slot.go(Trigger.POWER_GOOD, f"rail up at {volts:.2f} V", board_v=volts)

    async def enumerating(self) -> None:
        module = self._slot.seated()
        settings = self._slot.settings
        last_error = ""
        for _ in range(ENUMERATE_ATTEMPTS):
            await self._slot.close_chain()
            self._slot.hw.pins.hold_reset(True)
            await asyncio.sleep(0.02)
            self._slot.hw.pins.hold_reset(False)
            await asyncio.sleep(0.15)
            chain = Bm13xxChain(
                self._open_uart(),
                slot=self._slot.index,
                envelope=self._slot.svc.envelope,
                check_zero_bits=settings.nonce_check_bits,
                clock=self._slot.svc.clock,
                on_nonce=self._hashing.nonce_found,
            )
            await self._slot.attach(chain)
            try:
                info = await chain.enumerate(expected_chips=module.identity.chip_count)
            except HashbayError as exc:
                last_error = str(exc)
                self._slot.log.warning("enumeration failed", error=last_error)
                continue
            chain.set_version_mask()
            chain.set_ticket_difficulty(settings.ticket_difficulty)
            if settings.fast_baud:
                await chain.set_fast_baud()
            self._slot.go(Trigger.ENUMERATED, f"{info.chip_count} {info.model} chips answered")
            return
        await self._fault(f"chain enumeration failed: {last_error}", Fault.CHAIN_ENUMERATION_FAILED)

    async def ramping(self) -> None:
        target = self._power.planned()
        self._slot.set_status(detail=f"ramping to {target.mean_freq_mhz:.0f} MHz ({target.why})")
        self._slot.point = OperatingPoint(
            self._slot.status.board_v or target.board_v, tuple(self._slot.live_chain().freq_mhz)
        )
        await self._power.apply(target)
        self._hashing.send_job()
        self._slot.hashing_since_s = self._slot.svc.clock()
        self._slot.go(Trigger.RAMPED, f"hashing at {target.mean_freq_mhz:.0f} MHz ({target.why})")
