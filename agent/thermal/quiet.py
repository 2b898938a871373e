"""Quiet mode: when the fans' noise is capped, and at what level.

Miners share buildings with people. A cap on the fans' total level (from the noise model)
keeps them below it; the heat the slower fans cannot carry away is handled by lowering
the boards' power (fan_control.PowerLimiter), never by breaking the temperature limit.
The cap applies always (`on`), never (`off`), or inside daily windows of the controller's
local time (`schedule`), e.g. `["22:00-07:00"]` for nights. Windows are written and read
as everywhere else in the config (schedule.py): they may cross midnight, start included,
end excluded, and start == end means all day.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from hashbay.agent.core.schedule import parse_window
from hashbay.agent.core.settings import scalars, setting
from hashbay.drivers.errors import ConfigError

MODES = ("off", "on", "schedule")


@dataclass(frozen=True, kw_only=True)
class QuietSettings:
    mode: str = setting(
        "off",
        "When the noise cap applies: `off` never, `on` always, `schedule` inside the "
        "windows below. The `quiet` command overrides it until set back.",
        choices=MODES,
    )
    max_dba: float = setting(
        65.0,
        "Cap on the fans' total estimated level while quiet. If the fans cannot cool the "
        "boards under it, the boards' power is lowered instead.",
        unit="dB(A)",
        min=30,
        max=120,
    )
    schedule: tuple[str, ...] = scalars(
        ("22:00-07:00",),
        "Local-time windows `HH:MM-HH:MM` in which the cap applies when mode is `schedule`; "
        "a window may cross midnight.",
        pattern=r"\d\d:\d\d-\d\d:\d\d",
        max_items=16,
    )

    def __post_init__(self) -> None:
        for n, window in enumerate(self.schedule):
            try:
                parse_window(window)
            except ConfigError as exc:
                raise ConfigError(f"quiet.schedule[{n}]: {exc}") from None
        if self.mode == "schedule" and not self.schedule:
            raise ConfigError("quiet.mode: 'schedule' needs at least one window in quiet.schedule")


def quiet_active(mode: str, schedule: Sequence[str], now_local: datetime.datetime) -> bool:
    """Whether the noise cap applies at `now_local`, the controller's wall-clock time.

    Raises ValueError for an unknown mode and ConfigError for a malformed window (both
    are checked when the config loads, so neither happens in a running agent)."""
    if mode == "on":
        return True
    if mode == "off":
        return False
    if mode != "schedule":
        raise ValueError(f"quiet mode {mode!r} is not one of {', '.join(MODES)}")
    minute = now_local.hour * 60 + now_local.minute
    return any(parse_window(window).contains(minute) for window in schedule)
