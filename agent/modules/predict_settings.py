"""Settings of predictive maintenance (`predict`): when a trend is a warning.

Declared apart from the service so the config assembles it without importing the
service (`config` imports settings, never services)."""

from __future__ import annotations

from dataclasses import dataclass

from hashbay.agent.core.settings import scalars, setting
from hashbay.agent.modules.health_settings import CHIP_FAULT_ERROR_RATE
from hashbay.drivers.errors import ConfigError

HOUR_S = 3600.0


@dataclass(frozen=True, kw_only=True)
class PredictSettings:
    """When a chip's rising error rate is worth a warning. Defaults suit 1 Hz polls of
    S21-class boards with the chips' ticket difficulty at 256 (0.57 nonces/s per chip)."""

    bucket_s: float = setting(
        300.0,
        "Per-chip nonce and error counts are kept per bucket of this much hashing time: "
        "short enough to follow a chip failing within hours, long enough for ~170 nonces "
        "per chip.",
        unit="s",
        min=10,
        max=86400,
    )
    horizon_s: float = setting(
        72 * HOUR_S,
        "A failure expected within this long raises the warning.",
        unit="s",
        min=600,
        max=365 * 86400,
    )
    failure_error_rate: float = setting(
        CHIP_FAULT_ERROR_RATE,
        "The error rate at which a chip has failed: the health model's chip fault rate.",
        min=0.001,
        max=1,
    )
    fit_windows_s: tuple[float, ...] = scalars(
        (2 * HOUR_S, 8 * HOUR_S, 24 * HOUR_S),
        "Trends are fitted over each of these recent spans of hashing time; the short one "
        "catches fast failures early, the long ones slow aging whose rate barely moves in "
        "two hours, and a step that a long one sees vetoes a short one's trend.",
        unit="s",
        min=60,
        min_items=1,
        max_items=6,
    )
    min_errors: int = setting(
        10,
        "Hardware errors a chip must have made within a fit window before its trend counts.",
        min=3,
        max=100000,
    )
    min_likelihood_ratio: float = setting(
        30.0,
        "How strongly the rising fit must beat a steady rate (twice the log-likelihood "
        "gain). 30 is a 1-in-10^7 chance for steady Poisson errors: a fleet of thousands "
        "of 126-chip boards refitted every 5 minutes must not cry wolf.",
        min=1,
        max=1000,
    )
    step_preference_max: float = setting(
        6.0,
        "A chip whose errors one jump in rate explains better than a trend, by more than "
        "this much log-likelihood (a factor e^6 = 400), is not aging: its rate changed for "
        "another reason (a neighbour failing, a connector). It is reported as a step.",
        min=0,
        max=1000,
    )
    clock_sensitivity_max: float = setting(
        0.35,
        "Most a chip's error rate may grow with its effective clock, in logit per MHz: "
        "past its clean clock a chip's errors grow e-fold every 3-8 MHz (0.12-0.33). It "
        "bounds how much a clock, rail or temperature change can explain, so warming that "
        "comes with aging does not hide it.",
        unit="1/MHz",
        min=0.01,
        max=10,
    )
    thermal_derate_per_c: float = setting(
        0.0015,
        "Share of a chip's clean clock lost per °C of board temperature above 65 °C "
        "(gained below it): heat slows the gates.",
        unit="1/°C",
        min=0,
        max=0.05,
    )
    threshold_share: float = setting(
        0.69,
        "The chips' threshold voltage as a share of their nominal voltage: the clean "
        "clock grows with the overdrive above it (BM1366/68/70: 0.68-0.71).",
        min=0,
        max=0.95,
    )
    hold_s: float = setting(
        3600.0,
        "A raised warning (or a reported step) stays up this long after its evidence last "
        "held, so one noisy bucket does not clear and re-raise it.",
        unit="s",
        min=0,
        max=7 * 86400,
    )
    save_interval_s: float = setting(
        900.0,
        "A hashing module's predictor state (evidence, trend, warning) is written under "
        "its serial this often, and when it stops: a power cut loses at most this much.",
        unit="s",
        min=10,
        max=86400,
    )

    def __post_init__(self) -> None:
        shortest = 3 * self.bucket_s
        for window_s in self.fit_windows_s:
            if window_s < shortest:
                raise ConfigError(
                    f"predict: fit window {window_s:g} s must span at least three buckets "
                    f"({shortest:g} s)"
                )
