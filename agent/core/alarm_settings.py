"""Settings of the alarm gate (`alarms`): how events are debounced and bounded.

Declared apart from the service so the config assembles it without importing the
service (`config` imports settings, never services)."""

from __future__ import annotations

from dataclasses import dataclass

from hashbay.agent.core.settings import setting


@dataclass(frozen=True, kw_only=True)
class AlarmSettings:
    repeat_s: float = setting(
        300.0,
        "The same alarm on the same slot (overheat and throttling, an unreadable sensor, a "
        "noisy bus device, a pool given up) raises at most one event this often; the next "
        "one carries `details.folded`, how many were folded into it. 0 tells every one.",
        unit="s",
        min=0,
        max=86400,
    )
    bus_error_share: float = setting(
        0.05,
        "A bus device whose transactions fail (NACK, PEC error, timeout, bus error) this "
        "often over bus_window_s is noisy: a `bus_noise` event and a health reason.",
        min=0.001,
        max=1,
    )
    bus_window_s: float = setting(
        600.0,
        "Window over which a device's bus errors are judged: long enough that a burst at "
        "power-up does not count, short enough to notice within minutes.",
        unit="s",
        min=10,
        max=86400,
    )
    bus_min_transactions: int = setting(
        100,
        "Transactions a device must have had in the window before its error share is believed.",
        min=1,
        max=1_000_000,
    )
