"""Settings of autotuning (`autotune`): how to search, and what counts as stable.

Declared apart from the service so the config assembles it without importing the
service (`config` imports settings, never services)."""

from __future__ import annotations

from dataclasses import dataclass

from hashbay.agent.core.settings import setting
from hashbay.drivers.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class TuneSettings:
    """How the autotuner searches. Defaults suit a 126-chip S21-class board."""

    auto_tune: bool = setting(
        True,
        "Tune a module when it is identified and no usable stored profile exists (none, "
        "too old, or not matching the module); otherwise only on the `tune` command.",
    )
    max_error: float = setting(
        0.01,
        "Highest share of a chip's nonces that may be hardware errors at its tuned clock; "
        "every tuned clock is verified against it (chips settle well under it).",
        min=0.0005,
        max=0.2,
    )
    voltage_steps: int = setting(
        8,
        "Board voltages tried, evenly spaced from the module's lowest allowed voltage to "
        "its highest (both included).",
        min=2,
        max=64,
    )
    voltage_step_v: float = setting(
        0.0,
        "If above 0, voltages this far apart from the lowest are tried instead, up to the "
        "highest (voltage_steps is then ignored).",
        unit="V",
        min=0,
        max=5,
    )
    coarse_step_mhz: float = setting(
        25.0,
        "Search step around a chip's first guess while its edge is unknown (the first two "
        "voltages; later ones are predicted from them); it doubles until the edge is "
        "bracketed.",
        unit="MHz",
        min=1,
        max=200,
    )
    fine_step_mhz: float = setting(
        3.0,
        "The search stops once a chip's clean and erring clocks are this close; a clock "
        "that fails verification is lowered by this much.",
        unit="MHz",
        min=0.5,
        max=50,
    )
    margin_mhz: float = setting(
        8.0,
        "The clock verified against max_error is this far below the highest one the quick "
        "probes found clean: a chip's errors grow about e-fold every 3-8 MHz past its edge, "
        "so verification starts where it can pass.",
        unit="MHz",
        min=0,
        max=100,
    )
    backoff_mhz: float = setting(
        3.0,
        "The tuned clock is this far below the verified one, so a chip that only just "
        "passed is not left at the edge of its error budget (room for heat and aging).",
        unit="MHz",
        min=0,
        max=100,
    )
    decision_risk: float = setting(
        0.05,
        "Chance that one accept/reject decision on a chip is wrong (the sequential test's "
        "alpha and beta).",
        min=0.001,
        max=0.25,
    )
    probe_factor: float = setting(
        4.0,
        "Search probes only tell a clock erring on half of max_error from one erring on "
        "this many times it (fast); the tuned clock is verified against max_error itself.",
        min=1.5,
        max=100,
    )
    slice_nonces: int = setting(
        50,
        "Each measurement slice lasts long enough for a typical chip to report about this "
        "many nonces; decisions are taken between slices.",
        min=5,
        max=10000,
    )
    ticket_difficulty: int = setting(
        16,
        "Ticket difficulty (a power of two) while tuning: lower gives more nonces per "
        "second, so faster decisions, at more UART traffic and verification work.",
        min=1,
        max=65536,
    )
    measure_s: float = setting(
        30.0,
        "Once every chip at a voltage is settled, board power and error share are measured "
        "over this long.",
        unit="s",
        min=1,
        max=3600,
    )
    voltage_time_max_s: float = setting(
        1800.0,
        "The search at one voltage ends after this long; unsettled chips fall back to the "
        "clock they passed at a lower voltage less backoff_mhz (or the lowest allowed) and "
        "are listed as weak.",
        unit="s",
        min=10,
        max=86400,
    )
    max_age_days: float = setting(
        30.0,
        "A stored profile older than this is retuned when its module comes back (0: never).",
        unit="d",
        min=0,
        max=3650,
    )

    def __post_init__(self) -> None:
        if self.fine_step_mhz > self.coarse_step_mhz:
            raise ConfigError(
                f"autotune: fine_step_mhz {self.fine_step_mhz} must not exceed "
                f"coarse_step_mhz {self.coarse_step_mhz}"
            )
        difficulty = self.ticket_difficulty
        if difficulty & (difficulty - 1):
            raise ConfigError(
                f"autotune.ticket_difficulty: must be a power of two, got {difficulty}"
            )
