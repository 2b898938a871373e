"""The protection fast path of one slot: its board guard on the sensor sweep, and what a
verdict does at once (a cut, a throttle, a sensor alarm), before the slot's loop hears.

The guard and its restart policy belong to the seated module (`SeatedModule`); this link
only says whether the board is watched now, and acts on what the guard decides."""

from __future__ import annotations

from hashbay.agent.core.fault_codes import Fault, for_tier
from hashbay.agent.modules.protection import BoardGuard, RestartPolicy, Tier, Verdict
from hashbay.agent.modules.slot_core import SlotCore
from hashbay.drivers.errors import HardwareError, ProtocolError


class ProtectionLink:
    def __init__(self, slot: SlotCore) -> None:
        self._slot = slot
        self.guarded = False
        self._tier = Tier.OK
        self._unreadable: tuple[int, ...] = ()  # sensors protection reports unreadable

    async def arm_alerts(self) -> tuple[str, bool] | None:
        """Program the sensors' hardware over-temperature cut (where the alert line is
        wired) before the module is ever powered. If they would not take it, the fault to
        raise and whether it may retry: a board that cannot cut itself is not powered."""
        slot = self._slot
        settings = slot.svc.protection
        if not slot.hw.pins.has_alert:
            return None
        over_c, release_c = settings.cutoff_c, settings.cutoff_c - settings.hysteresis_c
        try:
            armed = await slot.svc.call(
                lambda: slot.hw.arm_alerts(over_c, release_c, settings.alert_fault_queue)
            )
        except ProtocolError as exc:  # a part that does not keep its limits: service
            return f"over-temperature cut not armed: {exc}", False
        except HardwareError as exc:
            return f"over-temperature cut not armed: {exc}", True
        slot.log.info(
            "over-temperature cut armed",
            over_c=armed.over_c,
            release_c=armed.release_c,
            fault_queue=armed.fault_queue,
        )
        return None

    def alert_tripped(self) -> None:
        """The module's over-temperature line cut its power in the pin callback: the state
        machine follows the hardware."""
        if self.guarded:
            limit = self._slot.svc.protection.cutoff_c
            why = (
                f"over temperature: the board's sensors tripped their hardware limit ({limit:g} °C)"
            )
            self.cut(why, Fault.OVER_TEMP_CUT)

    def start(self) -> None:
        """Watch the board on the sweep from now (it is about to be powered)."""
        slot = self._slot
        settings, sweep = slot.svc.protection, slot.svc.sweep
        if self.guarded:
            return
        module = slot.seated()
        if module.guard is None or module.restarts is None:
            module.guard = BoardGuard(settings)
            module.restarts = RestartPolicy(settings)
        module.guard.reset()
        self._tier = Tier.OK
        self._unreadable = ()
        self.guarded = True
        sweep.watch(slot.index, slot.hw, self._on_reading, backed=slot.hw.pins.has_alert)

    def stop(self) -> None:
        """Unwatched: the board is unpowered (no throttle reason may outlive it)."""
        self.guarded = False
        self._tier = Tier.OK
        self._slot.svc.sweep.unwatch(self._slot.index)

    def cut(self, why: str, cause: Fault) -> None:
        """The hard cut first (GPIO, no bus), then the state machine tidies up."""
        slot = self._slot
        slot.hw.safe()
        self.stop()
        slot.log.warning("protection cut", why=why)
        slot.request_fault(why, cause)

    def _on_reading(self, temps: tuple[float | None, ...], rail_fault: str | None) -> None:
        """One sweep's readings of this board (in the loop): judged, and acted on, now.

        If judging itself fails the board cannot be watched, so that is a cut too."""
        slot = self._slot
        guard = slot.module.guard if slot.module is not None else None
        if not self.guarded or guard is None:
            return
        try:
            verdict = guard.assess(
                slot.svc.clock(), temps, slot.status.power_w, slot.svc.fans_stalled(), rail_fault
            )
            if verdict.tier.cuts_power:
                self.cut(verdict.reason, for_tier(verdict.tier) or Fault.OVER_TEMP_CUT)
                return
            if verdict.changed:
                self._throttled(verdict)
            if verdict.unreadable != self._unreadable:
                before, self._unreadable = self._unreadable, verdict.unreadable
                slot.alarms.sensors(before, verdict.unreadable, guard.settings.sensor_lost_s)
        except Exception as exc:  # unwatched means unpowered
            slot.log.exception("protection failed")
            self.cut(f"protection failed: {exc!r}", Fault.INTERNAL_ERROR)

    def _throttled(self, verdict: Verdict) -> None:
        slot = self._slot
        previous, self._tier = self._tier, verdict.tier
        slot.throttle = verdict.freq_scale
        slot.nudge()
        if verdict.tier is Tier.OK and previous is Tier.OK:
            return  # a fresh guard's first word: nothing happened
        reason = "" if verdict.tier is Tier.OK else verdict.reason
        slot.set_status(throttle=verdict.freq_scale, throttle_reason=reason)
        slot.alarms.temperature(verdict)
