"""The GPIO lines of one hashboard slot: presence, power enable, chain reset, locate LED,
and (where wired) the module's over-temperature alert.

Presence comes from a contact that bounces when a module slides in or out, so the raw
level is only believed once it has held still for the debounce time. Edges are timed in
the pin callback; the decision is made when someone asks, so there is no thread here.

The alert line is the sensors' OS/ALERT output (open drain, pulled up, low when hot). Its
falling edge drops the power enable in the pin callback itself — the GPIO library's
thread, no bus, no event loop — and only then tells the rest of the agent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from gpiozero import LED, DigitalInputDevice, DigitalOutputDevice

from hashbay.drivers.errors import SafetyViolation


class SlotPins:
    """GPIO of one slot. Power and reset start in their safe levels: off and held in reset."""

    def __init__(
        self,
        presence_pin: int,
        power_pin: int,
        reset_pin: int,
        led_pin: int,
        pin_factory: Any,
        *,
        debounce_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        on_presence_edge: Callable[[], None] | None = None,
        alert_pin: int | None = None,
        on_alert: Callable[[], None] | None = None,
    ) -> None:
        self._clock = clock
        self._debounce_s = debounce_s
        self._on_edge = on_presence_edge
        self._lock = threading.Lock()
        # Presence switch pulls the line low when a module is seated.
        self._presence = DigitalInputDevice(presence_pin, pull_up=True, pin_factory=pin_factory)
        self._power = DigitalOutputDevice(power_pin, initial_value=False, pin_factory=pin_factory)
        self._reset = DigitalOutputDevice(
            reset_pin, active_high=False, initial_value=True, pin_factory=pin_factory
        )
        self._led = LED(led_pin, initial_value=False, pin_factory=pin_factory)
        self._last_edge = clock()
        self._stable = bool(self._presence.is_active)
        self._presence.when_activated = self._edge
        self._presence.when_deactivated = self._edge
        self._on_alert = on_alert
        self._alert: DigitalInputDevice | None = None
        if alert_pin is not None:
            self._alert = DigitalInputDevice(alert_pin, pull_up=True, pin_factory=pin_factory)
            self._alert.when_activated = self._alerted

    def _alerted(self) -> None:
        """The module is over its limit (in the GPIO library's thread): power off first."""
        self.safe()
        if self._on_alert is not None:
            self._on_alert()

    @property
    def has_alert(self) -> bool:
        """Whether the over-temperature alert line is wired."""
        return self._alert is not None

    @property
    def alert_asserted(self) -> bool:
        """Whether the alert line says over temperature now (False when not wired)."""
        return self._alert is not None and bool(self._alert.is_active)

    def _edge(self) -> None:
        with self._lock:
            now = self._clock()
            if now - self._last_edge >= self._debounce_s:
                # The level this edge ends had held long enough to count, even if nobody
                # read it while it held.
                self._stable = not bool(self._presence.is_active)
            self._last_edge = now
        if self._on_edge is not None:
            self._on_edge()

    @property
    def debounce_s(self) -> float:
        return self._debounce_s

    def present(self) -> bool:
        """Debounced presence: the raw level once it has been steady for debounce_s."""
        with self._lock:
            if self._clock() - self._last_edge >= self._debounce_s:
                self._stable = bool(self._presence.is_active)
            return self._stable

    def settling(self) -> bool:
        """True while the contact is still bouncing (an edge within the debounce time)."""
        return self.settle_remaining_s() > 0

    def settle_remaining_s(self) -> float:
        """How long until the line has been quiet for the debounce time (0 if it has)."""
        with self._lock:
            return max(0.0, self._last_edge + self._debounce_s - self._clock())

    @property
    def power_enabled(self) -> bool:
        return bool(self._power.is_active)

    def enable_power(self, on: bool) -> None:
        """Switch the slot's power enable; never on while the alert line says too hot."""
        if on and self.alert_asserted:
            raise SafetyViolation(
                "power enable refused: the module's over-temperature alert is asserted"
            )
        self._power.value = on

    @property
    def in_reset(self) -> bool:
        return bool(self._reset.is_active)

    def hold_reset(self, held: bool) -> None:
        self._reset.value = held

    def locate(self, mode: str) -> None:
        """Locate LED: 'off', 'on' or 'blink' (1 Hz, so a technician finds the slot)."""
        if mode == "off":
            self._led.off()
        elif mode == "on":
            self._led.on()
        elif mode == "blink":
            self._led.blink(on_time=0.5, off_time=0.5)
        else:
            raise ValueError(f"locate mode must be off, on or blink, not {mode!r}")

    def safe(self) -> None:
        """Power off and hold the chain in reset; safe to call from any thread, any time."""
        self._power.off()
        self._reset.on()

    def close(self) -> None:
        for device in (self._led, self._reset, self._power, self._presence, self._alert):
            if device is not None:
                device.close()
