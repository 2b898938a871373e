"""Fan duty from the hottest board temperature, and the power scale quiet mode asks for.

A board is one heat capacity cooled by the air the fans push (time constant 45-100 s);
its temperature responds to the duty through a gain that is several times larger at low
airflow than near full speed. A PI loop on a low-passed reading, with an integral time
near the boards' time constant, stays overdamped across that range. Derivative action is
there (on the measurement, so a setpoint change does not kick the fans) but off by
default: on the simulated plant it amplified sensor noise more than it damped the loop.

Rules that beat the loop, in order: a stalled fan puts the others at full speed (the
boards must then be throttled by protection), a heating board without a readable sensor
gets full speed, a board at or above protection's throttle limit gets full speed — these
three ignore the noise cap and the technician override, because safety beats noise — then
a technician override, then the loop. Forced outputs jump; the loop's own output moves
at a bounded rate (fast up, slow down) so the fans never hunt audibly.

Anti-windup: the integral stops growing while the output is held at a limit in the
direction the error pushes (conditional integration) and is kept within the output
range; whenever something else sets the duty, the loop tracks it, so control resumes
from that duty without a bump.

Quiet mode: when the noise cap is what stops the fans (the loop wants more), the boards
would run hot. The PowerLimiter then holds them at `target_c + power_margin_c` by lowering
the miner's power scale (a slow incremental PI, bounded to power_scale_min..1), and lets
it grow back once there is headroom. The power governor applies the scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hashbay.agent.thermal.thermal_settings import ThermalSettings

LONGEST_STEP = 10.0
"""A step longer than this many intervals (a paused process) counts as this many."""


def _clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


class Pid:
    """A reverse-acting PID (more duty when hotter) with the anti-windup described above."""

    def __init__(
        self,
        kp: float,
        integral_time_s: float,
        derivative_time_s: float,
        *,
        filter_s: float,
        up_per_s: float,
        down_per_s: float,
        output: float,
    ) -> None:
        self.kp = kp
        self.integral_time_s = integral_time_s
        self.derivative_time_s = derivative_time_s
        self.filter_s = filter_s
        self.up_per_s = up_per_s
        self.down_per_s = down_per_s
        self.output = output
        self.raw = output  # what the loop asked for before limits: > output means "wants more"
        self._integral: float | None = None  # None: take the present output on the next step
        self._filtered: float | None = None

    def track(self, output: float, measurement: float | None = None) -> None:
        """Something else set the output: continue from it, bumplessly, when control resumes."""
        self.output = self.raw = output
        self._integral = None
        if measurement is not None:
            self._filtered = measurement

    def _filter(self, measurement: float, dt_s: float) -> tuple[float, float]:
        """Low-pass the measurement; returns it filtered and its rate of change (per s)."""
        before = self._filtered
        if before is None:
            self._filtered = measurement
            return measurement, 0.0
        if dt_s <= 0:
            return before, 0.0
        self._filtered = before + (measurement - before) * dt_s / (self.filter_s + dt_s)
        return self._filtered, (self._filtered - before) / dt_s

    def step(
        self, dt_s: float, setpoint: float, measurement: float, low: float, high: float
    ) -> float:
        filtered, rate = self._filter(measurement, dt_s)
        error = filtered - setpoint
        proportional = self.kp * error
        derivative = self.kp * self.derivative_time_s * rate
        integral = self._integral
        if integral is None:
            integral = _clamp(self.output - proportional - derivative, low, high)
        candidate = integral + self.kp * error * dt_s / self.integral_time_s
        raw = proportional + candidate + derivative
        slewed = _clamp(
            raw, self.output - self.down_per_s * dt_s, self.output + self.up_per_s * dt_s
        )
        output = _clamp(slewed, low, high)
        if output != raw and (raw - output) * error > 0:
            candidate = integral  # held at a limit the error pushes against: do not wind up
        self._integral = _clamp(candidate, low, high)
        self.output, self.raw = output, raw
        return output


class PowerLimiter:
    """The power scale quiet mode asks for (1 = full power); see the module docstring."""

    def __init__(self, settings: ThermalSettings) -> None:
        self.settings = settings
        self.scale = 1.0
        self._hot_since_s: float | None = None
        self._last_error: float | None = None

    def update(self, now_s: float, dt_s: float, hottest_c: float | None, capped: bool) -> float:
        s = self.settings
        if capped and hottest_c is not None:
            error = hottest_c - (s.target_c + s.power_margin_c)
            waiting = False
            if error > 0:
                if self._hot_since_s is None:
                    self._hot_since_s = now_s
                waiting = now_s - self._hot_since_s < s.power_after_s
            else:
                self._hot_since_s = None
            if not waiting:
                last = error if self._last_error is None else self._last_error
                change = s.power_kp_per_c * (error - last + error * dt_s / s.power_integral_time_s)
                self.scale = _clamp(self.scale - change, s.power_scale_min, 1.0)
            self._last_error = error
        else:
            self._hot_since_s = self._last_error = None
            self.scale = min(1.0, self.scale + s.power_recover_per_s * dt_s)
        return self.scale


@dataclass(frozen=True)
class FanCommand:
    """One decision of the fan loop, with its reasons in words for status and MQTT."""

    duty: float
    code: str  # stable: holding_target, quiet_capped, override, idle, fan_stalled, ...
    reason: str
    capped: bool  # the noise cap is what keeps the fans from going faster
    forced: bool  # set by a rule, not the loop (written at once)
    power_scale: float
    power_code: str  # full, quiet_limited, recovering
    power_reason: str
    throttle_boards: bool  # a fan stalled: the boards must run slower


class FanController:
    """Decides one common fan duty per step; pure logic, the clock comes with each call."""

    def __init__(
        self,
        settings: ThermalSettings,
        *,
        duty_min: float,
        duty_max: float,
        force_above_c: float,
        initial_duty: float,
    ) -> None:
        if not 0.0 <= duty_min <= duty_max <= 1.0:
            raise ValueError(f"duty range {duty_min}..{duty_max} must lie within 0..1")
        self.settings = settings
        self.duty_min = duty_min
        self.duty_max = duty_max
        self.force_above_c = force_above_c
        self.pid = Pid(
            settings.kp_duty_per_c,
            settings.integral_time_s,
            settings.derivative_time_s,
            filter_s=settings.filter_s,
            up_per_s=settings.duty_up_per_s,
            down_per_s=settings.duty_down_per_s,
            output=_clamp(initial_duty, duty_min, duty_max),
        )
        self.limiter = PowerLimiter(settings)
        self._last_s: float | None = None

    def update(
        self,
        now_s: float,
        hottest_c: float | None,
        *,
        heating: bool = True,
        stalled: int = 0,
        cap_duty: float | None = None,
        override: float | None = None,
    ) -> FanCommand:
        """`hottest_c`: hottest usable sensor of the boards making heat (None: none readable);
        `heating`: whether any board makes heat; `cap_duty`: the highest duty the noise cap
        allows (None: no cap); `override`: a technician's duty (None: automatic)."""
        s = self.settings
        dt_s = self._dt(now_s)
        if hottest_c is not None and not math.isfinite(hottest_c):
            hottest_c = None  # a reading that is not a temperature is no reading
        forced = self._forced(hottest_c, heating=heating, stalled=stalled, override=override)
        capped = False
        if forced is not None:
            duty, code, reason = forced
            self.pid.track(duty, hottest_c)
        elif not heating or hottest_c is None:
            duty = _clamp(self.pid.output - s.duty_down_per_s * dt_s, self.duty_min, self.duty_max)
            self.pid.track(duty)
            code, reason = "idle", "no board is making heat: fans wind down to the minimum"
        else:
            high = self.duty_max
            if cap_duty is not None:
                high = _clamp(cap_duty, self.duty_min, self.duty_max)
            duty = self.pid.step(dt_s, s.target_c, hottest_c, self.duty_min, high)
            capped = high < self.duty_max and self.pid.raw > high
            code, reason = self._loop_reason(hottest_c, duty, capped, cap_duty)
        scale = self.limiter.update(now_s, dt_s, hottest_c, capped)
        power_code, power_reason = self._power_reason(scale, capped)
        return FanCommand(
            duty=duty,
            code=code,
            reason=reason,
            capped=capped,
            forced=forced is not None,
            power_scale=scale,
            power_code=power_code,
            power_reason=power_reason,
            throttle_boards=stalled > 0,
        )

    def _dt(self, now_s: float) -> float:
        interval = self.settings.interval_s
        last, self._last_s = self._last_s, now_s
        if last is None:
            return interval
        return _clamp(now_s - last, 0.0, interval * LONGEST_STEP)

    def _forced(
        self, hottest_c: float | None, *, heating: bool, stalled: int, override: float | None
    ) -> tuple[float, str, str] | None:
        full = self.duty_max
        if stalled > 0:
            plural = "s" if stalled > 1 else ""
            return (
                full,
                "fan_stalled",
                f"{stalled} fan{plural} stalled: the others at full speed and the boards "
                "throttled, whatever the quiet cap or override",
            )
        if heating and hottest_c is None:
            return (
                full,
                "sensors_lost",
                "a hashing board has no readable temperature sensor: fans at full speed",
            )
        if hottest_c is not None and hottest_c >= self.force_above_c:
            return (
                full,
                "overheat",
                f"hottest board at {hottest_c:.1f} °C, at or above the {self.force_above_c:g} "
                "°C throttle limit: fans at full speed whatever the quiet cap or override",
            )
        if override is not None:
            duty = _clamp(override, self.duty_min, self.duty_max)
            clamped = "" if duty == override else f" (asked {override:.0%}, within limits)"
            return duty, "override", f"technician override: fans at {duty:.0%}{clamped}"
        return None

    def _loop_reason(
        self, hottest_c: float, duty: float, capped: bool, cap_duty: float | None
    ) -> tuple[str, str]:
        target = self.settings.target_c
        if capped:
            if cap_duty is not None and cap_duty < self.duty_min:
                return (
                    "quiet_capped",
                    f"the quiet cap is below what the fans make at their minimum duty; "
                    f"fans at {duty:.0%}, hottest board {hottest_c:.1f} °C",
                )
            return (
                "quiet_capped",
                f"quiet cap holds the fans at {duty:.0%}; hottest board {hottest_c:.1f} °C "
                f"(target {target:g} °C)",
            )
        return (
            "holding_target",
            f"holding the hottest board at {target:g} °C: {hottest_c:.1f} °C, fans at {duty:.0%}",
        )

    def _power_reason(self, scale: float, capped: bool) -> tuple[str, str]:
        if scale >= 1.0:
            return "full", "full power"
        hold_c = self.settings.target_c + self.settings.power_margin_c
        if capped:
            return (
                "quiet_limited",
                f"quiet mode: power at {scale:.0%} so the boards stay near {hold_c:g} °C "
                "with the fans capped",
            )
        return "recovering", f"power growing back after quiet mode: {scale:.0%}"
