"""How long the self-test's moving checks wait (`[selftest]`): fans and air differ, and a
big fan coasting down needs longer than a small one."""

from __future__ import annotations

from dataclasses import dataclass

from hashbay.agent.core.settings import setting


@dataclass(frozen=True, kw_only=True)
class SelfTestSettings:
    fan_settle_s: float = setting(
        3.0,
        "After a fan's duty changes, the self-test waits this long before counting its "
        "tachometer (coasting down is the slow way).",
        unit="s",
        min=0.5,
        max=60,
    )
    fan_window_s: float = setting(
        1.0,
        "Tachometer pulses are counted over this long for each reading.",
        unit="s",
        min=0.25,
        max=30,
    )
    led_blink_s: float = setting(
        2.0,
        "Each slot's locate LED blinks this long, one slot after the other.",
        unit="s",
        min=0.5,
        max=30,
    )
