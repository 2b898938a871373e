"""The alarms one slot raises about conditions that may flap: temperature tiers, unreadable
sensors, noisy bus devices, health recovering.

Each goes through the alarm gate (one event per condition per interval, escalations at
once), and none is raised while the module's presence contact is moving: a pull makes
every sensor and device vanish, and that is the pull's event, not an alarm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from hashbay.agent.core.alarms import AlarmGate
from hashbay.agent.core.events import Event, EventKind
from hashbay.agent.core.fault_codes import Fault, for_tier
from hashbay.agent.core.status import BusDevice
from hashbay.agent.hardware.bus_health import describe
from hashbay.agent.modules.protection import Tier, Verdict
from hashbay.drivers.slot_pins import SlotPins

log = structlog.get_logger("hashbay.slots")

_TIER_KIND = {Tier.OK: EventKind.RECOVERED, Tier.WARN: EventKind.OVERHEAT}
_TIER_SEVERITY = {Tier.OK: 0, Tier.WARN: 1}  # throttling is 2


class SlotAlarms:
    def __init__(
        self,
        slot: int,
        gate: AlarmGate,
        pins: SlotPins,
        serial: Callable[[], str | None],
        bus_window_s: float,
    ) -> None:
        self.slot = slot
        self._gate = gate
        self._pins = pins
        self._serial = serial
        self._bus_window_s = bus_window_s

    def temperature(self, verdict: Verdict) -> None:
        """A protection tier reached or cleared (a throttle by a stalled fan included)."""
        cause = for_tier(verdict.tier)
        coded = {"code": cause.code} if cause is not None else {}
        self._raise(
            "temperature",
            _TIER_KIND.get(verdict.tier, EventKind.THROTTLED),
            f"slot {self.slot}: {verdict.reason}",
            _TIER_SEVERITY.get(verdict.tier, 2),
            scale=verdict.freq_scale,
            tier=verdict.tier.value,
            hottest_c=verdict.hottest_c,
            **coded,
        )

    def sensors(self, before: tuple[int, ...], now: tuple[int, ...], lost_s: float) -> None:
        """Sensors past the unreadable debounce: their own alarm (and a cut if it lasts)."""
        if set(now) - set(before):
            plural = "s" if len(now) > 1 else ""
            names = ", ".join(str(n) for n in now)
            self._raise(
                "sensors",
                EventKind.SENSOR_UNREADABLE,
                f"slot {self.slot}: temperature sensor{plural} {names} unreadable; the board "
                f"is cut if this lasts {lost_s:g} s",
                1,
                sensors=list(now),
            )
        elif before and not now:
            message = f"slot {self.slot}: temperature sensors read again"
            self._raise("sensors", EventKind.RECOVERED, message, sensors=[])

    def bus(self, before: tuple[BusDevice, ...], now: tuple[BusDevice, ...]) -> None:
        """A bus device turning noisy, or quiet again: logged, and an alarm."""
        was_noisy = {d.address: d.noisy for d in before}
        for device in now:
            if device.noisy == was_noisy.get(device.address, False):
                continue
            where = f"{device.device} (0x{device.address:02x})"
            counts: dict[str, Any] = {
                "device": device.device,
                "address": f"0x{device.address:02x}",
                "error_share": device.error_share,
                "nacks": device.nacks,
                "pec_errors": device.pec_errors,
                "timeouts": device.timeouts,
                "bus_errors": device.bus_errors,
            }
            condition = f"bus 0x{device.address:02x}"
            if device.noisy:
                log.warning("bus device noisy", slot=self.slot, **counts)
                text = describe(device, self._bus_window_s)
                self._raise(
                    condition, EventKind.BUS_NOISE, f"slot {self.slot}: {text}", 1, **counts
                )
            else:
                log.info("bus device quiet again", slot=self.slot, **counts)
                message = f"slot {self.slot}: {where} quiet again"
                self._raise(condition, EventKind.RECOVERED, message, **counts)

    def healthy(self, score: float) -> None:
        """Back from degraded (a score hovering at the threshold must not flood)."""
        self._raise("health", EventKind.RECOVERED, "module healthy again", score=round(score))

    def internal(self, why: str, cause: Fault) -> None:
        """A failure in a state with nothing powered: told, at most once per interval."""
        message = f"slot {self.slot}: {why}"
        event = Event(EventKind.FAULT, self.slot, message, details={"code": cause.code})
        self._gate.raise_event("internal error", event, 1)

    def _raise(
        self, condition: str, kind: EventKind, message: str, severity: int = 0, **details: Any
    ) -> None:
        if self._pins.settling() or not self._pins.present():
            return
        event = Event(kind, self.slot, message, serial=self._serial(), details=details)
        self._gate.raise_event(condition, event, severity)
