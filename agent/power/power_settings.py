"""Settings of the power governor (`governor`): the target, prices and windows.

Declared apart from the service so the config assembles it without importing the
service (`config` imports settings, never services)."""

from __future__ import annotations

from dataclasses import dataclass

from hashbay.agent.core.settings import scalars, setting


@dataclass(frozen=True, kw_only=True)
class PowerSettings:
    target_w: float = setting(
        0.0,
        "Whole-miner input power to hold, measured at the PSU; 0 = no target (boards run "
        "at their most efficient point). A `power_target` command overrides it.",
        unit="W",
        min=0,
        max=100_000,
    )
    interval_s: float = setting(
        1.0, "How often the governor re-decides the boards' budgets.", unit="s", min=0.1, max=60
    )
    gain: float = setting(
        0.4,
        "Integral gain of the power target: the share of the error corrected per second. "
        "Higher settles faster; above about 1 it overshoots with a 1 s PSU reading.",
        min=0.01,
        max=2,
    )
    ramp_w_per_s: float = setting(
        400.0,
        "Fastest change of the boards' total budget, so power ramps and never jumps.",
        unit="W/s",
        min=10,
        max=100_000,
    )


@dataclass(frozen=True, kw_only=True)
class EconomicsSettings:
    profit: bool = setting(
        False,
        "Profitability mode: each board runs at the point that earns most at the current "
        "prices, and the miner sleeps when no point earns.",
    )
    electricity_per_kwh: float = setting(
        0.0, "Electricity price when no tariff window applies.", unit="per kWh", min=0, max=100
    )
    hashprice_per_th_day: float = setting(
        0.0,
        "What the pool pays per TH/s per day (same currency as the electricity price).",
        unit="per TH/s/day",
        min=0,
        max=100,
    )
    tariff: tuple[str, ...] = scalars(
        (),
        "Time-of-use prices, local time: `HH:MM-HH:MM=price` per kWh; a window may cross "
        'midnight, e.g. `["17:00-21:00=0.32", "23:00-06:00=0.08"]`.',
        pattern=r"\d\d:\d\d-\d\d:\d\d=\d+(\.\d+)?",
        max_items=24,
    )
    curtail_schedule: tuple[str, ...] = scalars(
        (),
        "Local-time windows `HH:MM-HH:MM` during which the miner is curtailed "
        '(demand response, peak tariff), e.g. `["17:30-19:30"]`.',
        pattern=r"\d\d:\d\d-\d\d:\d\d",
        max_items=24,
    )
    curtail_mode: str = setting(
        "sleep",
        "What scheduled curtailment does: power the boards down, or hold minimum power.",
        choices=("sleep", "min"),
    )
