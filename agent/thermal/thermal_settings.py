"""Settings of fan control (`fan_control`, `thermal`).

Declared apart from the service so the config assembles it without importing the
service (`config` imports settings, never services)."""

from __future__ import annotations

from dataclasses import dataclass

from hashbay.agent.core.settings import setting
from hashbay.drivers.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class ThermalSettings:
    """Fan control and quiet mode's power limiter. Defaults suit the 1.3 kW sim boards."""

    enabled: bool = setting(
        True,
        "Control the fans from board temperature. `false` leaves them at "
        "limits.safe_fan_duty (full speed): loud, always safe.",
    )
    interval_s: float = setting(
        1.0,
        "Period of the fan loop; boards change temperature over tens of seconds.",
        unit="s",
        min=0.1,
        max=10,
    )
    target_c: float = setting(
        75.0,
        "The hottest board sensor is held at this temperature (the board runs at 60-70 °C "
        "with the fans at full speed).",
        unit="°C",
        min=30,
        max=110,
    )
    kp_duty_per_c: float = setting(
        0.08,
        "Proportional gain: duty added per degree above the target (0.08 = 8 % per °C).",
        min=0.001,
        max=1,
    )
    integral_time_s: float = setting(
        60.0,
        "Integral time: about the boards' thermal time constant keeps the loop overdamped.",
        unit="s",
        min=5,
        max=3600,
    )
    derivative_time_s: float = setting(
        0.0,
        "Derivative time, on the filtered measurement. 0 (a PI loop) by default: on these "
        "boards it amplifies sensor noise more than it damps the loop.",
        unit="s",
        min=0,
        max=600,
    )
    filter_s: float = setting(
        5.0,
        "Time constant of the low-pass on the measured temperature: sensor noise must not "
        "make the fans hunt; short against the boards' 45-100 s.",
        unit="s",
        min=0,
        max=120,
    )
    duty_up_per_s: float = setting(
        0.2,
        "Fastest rise of the loop's duty (forced full speed is immediate).",
        unit="1/s",
        min=0.001,
        max=10,
    )
    duty_down_per_s: float = setting(
        0.02,
        "Fastest fall of the loop's duty: slow, so the fans never audibly hunt.",
        unit="1/s",
        min=0.001,
        max=10,
    )
    power_margin_c: float = setting(
        3.0,
        "Quiet mode lowers the boards' power once the hottest one is this far above the "
        "target with the fans held by the noise cap.",
        unit="°C",
        min=0,
        max=20,
    )
    power_after_s: float = setting(
        30.0,
        "How long the hottest board must stay above target_c + power_margin_c, with the "
        "fans held by the noise cap, before power is lowered (a passing warm spell costs "
        "no hashrate).",
        unit="s",
        min=0,
        max=3600,
    )
    power_kp_per_c: float = setting(
        0.02,
        "Proportional gain of the power limiter: power scale per degree.",
        min=0.0001,
        max=1,
    )
    power_integral_time_s: float = setting(
        120.0, "Integral time of the power limiter.", unit="s", min=5, max=3600
    )
    power_scale_min: float = setting(
        0.5,
        "Lowest power scale quiet mode may ask for; hotter than that is protection's job.",
        min=0.1,
        max=1,
    )
    power_recover_per_s: float = setting(
        0.002,
        "How fast the power scale grows back once the fans are no longer capped.",
        unit="1/s",
        min=0.0001,
        max=1,
    )

    def __post_init__(self) -> None:
        if self.duty_down_per_s > self.duty_up_per_s:
            raise ConfigError(
                f"thermal: duty_down_per_s {self.duty_down_per_s} must not exceed "
                f"duty_up_per_s {self.duty_up_per_s}: fans slow down more gently than they speed up"
            )
