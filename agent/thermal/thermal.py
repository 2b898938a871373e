"""The thermal service: every `thermal.interval_s` it reads how hot the boards are, decides
one fan duty (fan_control.py) under the noise cap quiet mode sets (quiet.py, noise.py),
writes it to every fan, and keeps what it decided — and why — for status and MQTT.

It reaches the hardware only through the callables it is given, so it runs the same on
the real rig, the simulated one, or a hand-stepped plant. Fans are written only when the
duty moves by more than DUTY_RESOLUTION or a rule forces it: a PWM write is cheap, but
the hardware thread is shared with every bus transaction.
"""

from __future__ import annotations

import asyncio
import datetime
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any, Protocol

import structlog

from hashbay.agent.core.status import SlotState, SlotStatus
from hashbay.agent.daemon.config import Config
from hashbay.agent.hardware.fans import retried
from hashbay.agent.hardware.rig import Rig
from hashbay.agent.thermal.fan_control import FanCommand, FanController
from hashbay.agent.thermal.noise import NoiseModel, finite_or_none
from hashbay.agent.thermal.quiet import MODES, QuietSettings, quiet_active
from hashbay.agent.thermal.thermal_settings import ThermalSettings
from hashbay.drivers.errors import HardwareError
from hashbay.drivers.fan import FanReading
from hashbay.drivers.numbers import finite_in

log = structlog.get_logger("hashbay.thermal")
RPM_SMOOTHING = 0.3  # weight of the newest tach reading in the noise estimate

DUTY_RESOLUTION = 0.005
"""Smaller duty changes are not written: inaudible, and they would keep the bus busy."""
WRITE_FAILURES_LOGGED = 3  # steps in a row a failed fan write is logged, then quiet

HEATING_STATES = frozenset({SlotState.HASHING, SlotState.DEGRADED})


class DutySink(Protocol):
    """A fan as the service drives it (drivers.fan.Fan)."""

    def set_duty(self, duty: float) -> float: ...


class OperatorControls(Protocol):
    """The operator's choices the thermal service follows (controls.Controls)."""

    @property
    def quiet(self) -> str | None: ...

    @property
    def fan_override(self) -> float | None: ...


@dataclass(frozen=True)
class Heat:
    """How hot the boards that make heat are. `hottest_c` is None when one of them has no
    readable sensor (which forces full speed); `boards` counts the boards making heat."""

    hottest_c: float | None
    boards: int


def heat_of(statuses: Iterable[SlotStatus]) -> Heat:
    """The hottest usable reading over the hashing boards.

    A board that has not been sampled yet (no readings at all) does not count: it only
    just started hashing and the next sample, a second later, will say. A board whose
    every sensor fails to read does count — as unknown, which means full speed.
    """
    hottest: float | None = None
    boards = 0
    blind = False
    for status in statuses:
        if status.state not in HEATING_STATES or not status.temps_c:
            continue
        boards += 1
        readable = [t for t in status.temps_c if t is not None and math.isfinite(t)]
        if not readable:
            blind = True
            continue
        board_c = max(readable)
        hottest = board_c if hottest is None else max(hottest, board_c)
    return Heat(None if blind else hottest, boards)


@dataclass(frozen=True)
class ThermalStatus:
    enabled: bool
    target_c: float
    hottest_c: float | None
    duty: float | None  # what the fans were last told; None before the first write
    noise_dba: float | None  # estimated from the fans' measured speeds; None if all stand
    noise_cap_dba: float | None  # the cap in force now; None when quiet mode is off
    quiet: bool
    quiet_mode: str  # off, on, schedule (configured, or the operator's override)
    override_duty: float | None
    power_scale: float  # what the power governor should apply (1 = full power)
    fans_stalled: int
    code: str
    reason: str
    power_code: str
    power_reason: str

    def to_json(self) -> dict[str, Any]:
        """Nested so MQTT's change detection compares codes exactly and prose by interval."""
        data = asdict(self)
        data["reason"] = {"code": data.pop("code"), "text": data.pop("reason")}
        data["power"] = {
            "scale": data.pop("power_scale"),
            "code": data.pop("power_code"),
            "text": data.pop("power_reason"),
        }
        return data


class ThermalService:
    def __init__(
        self,
        settings: ThermalSettings,
        quiet: QuietSettings,
        noise: NoiseModel,
        *,
        fans: Sequence[DutySink],
        call: Callable[[Callable[[], Any]], Awaitable[Any]],
        heat: Callable[[], Heat],
        fan_readings: Callable[[], Sequence[FanReading]],
        clock: Callable[[], float],
        duty_min: float,
        duty_max: float,
        safe_duty: float,
        force_above_c: float,
        local_now: Callable[[], datetime.datetime] | None = None,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.quiet_settings = quiet
        self.noise = noise
        self._fans = list(fans)
        self._call = call
        self._heat = heat
        self._fan_readings = fan_readings
        self._clock = clock
        self._local_now = local_now or (lambda: datetime.datetime.now().astimezone())
        self._on_change = on_change
        self._safe_duty = safe_duty
        self.controller = FanController(
            settings,
            duty_min=duty_min,
            duty_max=duty_max,
            force_above_c=force_above_c,
            initial_duty=safe_duty,
        )
        self._override: float | None = None
        self._quiet_mode: str | None = None
        self._written: float | None = None
        self._write_failures = 0
        self._rpm_smoothed: list[float] = []
        self.status = ThermalStatus(
            enabled=settings.enabled,
            target_c=settings.target_c,
            hottest_c=None,
            duty=None,
            noise_dba=None,
            noise_cap_dba=None,
            quiet=False,
            quiet_mode=quiet.mode,
            override_duty=None,
            power_scale=1.0,
            fans_stalled=0,
            code="starting" if settings.enabled else "disabled",
            reason="fans at the safe duty until the first step"
            if settings.enabled
            else "fan control disabled (thermal.enabled = false): fans at the safe duty",
            power_code="full",
            power_reason="full power",
        )

    # -- what others call --------------------------------------------------------------

    def status_json(self) -> dict[str, Any]:
        return self.status.to_json()

    def noise_dba(self) -> float | None:
        return self.status.noise_dba

    def power_scale(self) -> float:
        """The share of full power quiet mode allows now (for the power governor)."""
        return self.status.power_scale

    def set_fan_override(self, duty: float | None) -> None:
        """A technician's duty for every fan (None: back to automatic control).

        Clamped to the limits when applied; a stall, a blind board or a board at the
        throttle limit still force full speed."""
        if duty is not None and finite_in(duty, 0.0, 1.0) is None:
            raise ValueError(f"fan override duty {duty!r} must be a number from 0 to 1")
        self._override = duty

    def set_quiet_mode(self, mode: str | None) -> None:
        """The operator's quiet mode (None: as configured)."""
        if mode is not None and mode not in MODES:
            raise ValueError(f"quiet mode {mode!r} must be one of {', '.join(MODES)}")
        self._quiet_mode = mode

    def follow_controls(self, controls: OperatorControls) -> None:
        """Take the operator's quiet mode and fan override (ControlStore.on_change)."""
        self.set_quiet_mode(controls.quiet)
        self.set_fan_override(controls.fan_override)

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        try:
            while True:
                await self.step()
                next_at += self.settings.interval_s
                now = loop.time()
                next_at = max(next_at, now)
                await asyncio.sleep(next_at - now)
        except Exception:
            await self._fans_safe()
            raise

    async def step(self) -> FanCommand | None:
        """One decision: read, decide, write if needed, publish. Returns the decision."""
        readings = tuple(self._fan_readings())
        stalled = sum(r.stalled for r in readings)
        noise_dba = self._estimate(readings)
        mode = self._quiet_mode or self.quiet_settings.mode
        quiet = quiet_active(mode, self.quiet_settings.schedule, self._local_now())
        cap_dba = self.quiet_settings.max_dba if quiet else None
        base = replace(
            self.status,
            noise_dba=noise_dba,
            noise_cap_dba=cap_dba,
            quiet=quiet,
            quiet_mode=mode,
            override_duty=self._override,
            fans_stalled=stalled,
        )
        if not self.settings.enabled:
            self._publish(base)
            return None
        heat = self._heat()
        cap_duty = None
        if cap_dba is not None:
            running = (
                [not r.stalled for r in readings] if len(readings) == len(self.noise.fans) else None
            )
            cap_duty = self.noise.duty_for_cap(cap_dba, running)
        command = self.controller.update(
            self._clock(),
            heat.hottest_c,
            heating=heat.boards > 0,
            stalled=stalled,
            cap_duty=cap_duty,
            override=self._override,
        )
        await self._write(command)
        self._publish(
            replace(
                base,
                hottest_c=heat.hottest_c,
                duty=self._written,
                power_scale=command.power_scale,
                code=command.code,
                reason=command.reason,
                power_code=command.power_code,
                power_reason=command.power_reason,
            )
        )
        return command

    def _estimate(self, readings: Sequence[FanReading]) -> float | None:
        """Noise from the fans' speeds, each smoothed over a few polls: one tach window
        miscounts by a pulse or two, which at low speed moves the estimate by decibels."""
        if len(readings) != len(self.noise.fans):
            return None  # no poll yet, or a rig that does not match the config
        if len(self._rpm_smoothed) != len(readings):
            self._rpm_smoothed = [r.rpm for r in readings]
        self._rpm_smoothed = [
            0.0 if r.stalled else s + RPM_SMOOTHING * (r.rpm - s)
            for s, r in zip(self._rpm_smoothed, readings, strict=True)
        ]
        return finite_or_none(self.noise.level_dba(self._rpm_smoothed))

    async def _write(self, command: FanCommand) -> None:
        duty = command.duty
        last = self._written
        if (
            last is not None
            and abs(duty - last) < DUTY_RESOLUTION
            and not (command.forced and duty != last)
        ):
            return
        fans = self._fans

        def write() -> list[str]:
            failed = []
            for fan in fans:
                try:
                    retried(partial(fan.set_duty, duty))
                except HardwareError as exc:
                    failed.append(str(exc))
            return failed

        failed = await self._call(write)
        if failed:
            # Not recorded as written: the next step writes it again. Meanwhile the fan
            # runs at its last duty (or its controller's watchdog runs it at full speed).
            self._write_failures += 1
            if self._write_failures <= WRITE_FAILURES_LOGGED:
                log.warning("fan duty not written", duty=round(duty, 3), errors=failed)
            return
        if self._write_failures:
            log.info("fan duty written again", steps_missed=self._write_failures)
            self._write_failures = 0
        if last is None or command.code != self.status.code:
            log.info("fan duty", duty=round(duty, 3), code=command.code, reason=command.reason)
        self._written = duty

    async def _fans_safe(self) -> None:
        """The loop failed: leave the fans at the safe duty, not wherever they were."""
        duty, fans = self._safe_duty, self._fans

        def write() -> None:
            for fan in fans:
                try:
                    retried(partial(fan.set_duty, duty))
                except Exception:
                    log.critical("fan not set to the safe duty", exc_info=True)

        try:
            await self._call(write)
        except Exception:
            log.critical("fans not set to the safe duty", exc_info=True)

    def _publish(self, status: ThermalStatus) -> None:
        before = self.status
        self.status = status
        if (status.code, status.power_code, status.quiet, status.fans_stalled) != (
            before.code,
            before.power_code,
            before.quiet,
            before.fans_stalled,
        ):
            self._on_change()


def build_thermal(
    config: Config,
    rig: Rig,
    statuses: Callable[[], Iterable[SlotStatus]],
    *,
    on_change: Callable[[], None] = lambda: None,
) -> ThermalService:
    """The service for this rig: every fan, the limits' duty range, protection's throttle
    temperature as the point where the fans go to full speed whatever else is asked."""
    limits = config.limits

    def readings() -> Sequence[FanReading]:
        last = rig.last
        return last.fans if last is not None else ()

    return ThermalService(
        config.thermal,
        config.quiet,
        NoiseModel.of(config.fan),
        fans=rig.fans,
        call=rig.call,
        heat=lambda: heat_of(statuses()),
        fan_readings=readings,
        clock=rig.clock,
        duty_min=limits.fan_duty_min,
        duty_max=limits.fan_duty_max,
        safe_duty=limits.safe_fan_duty,
        force_above_c=config.protection.throttle_c,
        on_change=on_change,
    )
