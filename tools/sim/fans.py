"""A simulated 4-wire fan: PWM duty in, tachometer pulses out.

Wired to gpiozero mock pins, the agent's fan driver owns the same pin objects through
the shared pin factory, so it cannot tell this fan from a real one: it writes a duty,
the rotor follows with inertia, and the tach line is pulled low twice per revolution.
Wired to a fan controller (`drive`), the controller sets the duty and times the rotor
itself, so no pin moves. Time moves only when `step(dt_s)` is called, so a simulation
can run faster than real time and replay exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from hashbay.agent.daemon.config import EMC2305, Config
from hashbay.tools.sim.emc2305 import SimEmc2305
from hashbay.tools.sim.i2c import SimI2CBus
from hashbay.tools.sim.physics import fan_noise_dba

PULSES_PER_REV = 2
"""Intel's 4-wire fan specification: two open-collector pulses per revolution."""

MIN_DUTY = 0.1
"""Below this duty the motor controller gives up and the rotor stops."""


class SimFan:
    """One fan whose speed follows the duty on `pwm_pin` and which pulses `tach_pin`.

    A PWM line nobody drives (the agent has not started, or has exited) reads high
    through the fan's own pull-up, so the fan runs at full speed: the fail-safe every
    4-wire fan has and the agent's startup and shutdown paths rely on.
    """

    def __init__(
        self,
        pin_factory: Any,
        pwm_pin: int | None,
        tach_pin: int | None,
        *,
        drive: Callable[[], float] | None = None,
        rpm_max: float = 6000.0,
        spin_up_s: float = 1.0,
        spin_down_s: float = 3.0,
        dba_at_max: float = 69.0,
        min_duty: float = MIN_DUTY,
        rpm: float = 0.0,
    ) -> None:
        """`spin_up_s` and `spin_down_s` are first-order time constants: a rotor is driven
        up by its motor but only coasts down against air drag, so it slows more lazily.
        `dba_at_max` is its sound level at `rpm_max`; `rpm` is its speed at the start.
        `drive` is a fan controller's PWM output (the pins are then None).
        """
        if rpm_max <= 0 or spin_up_s <= 0 or spin_down_s <= 0:
            raise ValueError("rpm_max and the spin time constants must be > 0")
        if (drive is None) == (pwm_pin is None):
            raise ValueError("a fan's PWM input is either a pin or a controller's drive")
        self._drive = drive
        # A gpiozero factory hands out one object per pin, whoever opens it, so keep them.
        self._pwm = pin_factory.pin(pwm_pin) if pwm_pin is not None else None
        self._tach = pin_factory.pin(tach_pin) if tach_pin is not None else None
        self.rpm_max = rpm_max
        self.spin_up_s = spin_up_s
        self.spin_down_s = spin_down_s
        self.dba_at_max = dba_at_max
        self.min_duty = min_duty
        self._rpm = rpm
        self._health = 1.0
        self._stalled = False
        self._pulse_debt = 0.0
        self.pulses_emitted = 0

    # -- what the fan sees and does ----------------------------------------------------

    @property
    def duty(self) -> float:
        """The duty the fan's controller sees: 1.0 when the line is not driven."""
        if self._drive is not None:
            return min(1.0, max(0.0, self._drive()))
        pin = self._pwm
        if pin is None or pin.function != "output":
            return 1.0
        return min(1.0, max(0.0, float(pin.state)))

    @property
    def target_rpm(self) -> float:
        """The speed the rotor is heading for at the present duty."""
        duty = self.duty
        if self._stalled or duty < self.min_duty:
            return 0.0
        return self.rpm_max * self._health * duty

    @property
    def rpm(self) -> float:
        return self._rpm

    @property
    def airflow(self) -> float:
        """Share of the airflow of a healthy fan at full speed (airflow scales with rpm)."""
        return self._rpm / self.rpm_max

    @property
    def noise_dba(self) -> float:
        return fan_noise_dba(self._rpm, self.rpm_max, self.dba_at_max)

    @property
    def stalled(self) -> bool:
        return self._stalled

    def step(self, dt_s: float) -> int:
        """Advance `dt_s` seconds: move the rotor and pulse the tach line; returns pulses.

        The rotation is the exact integral of the first-order speed curve and the part of
        a pulse left over is carried to the next step, so the pulse count over any window
        matches the true rotation whatever the step sizes.
        """
        if dt_s < 0:
            raise ValueError(f"dt_s {dt_s} must be >= 0")
        if self._stalled:
            return 0
        target = self.target_rpm
        tau_s = self.spin_up_s if target > self._rpm else self.spin_down_s
        decay = math.exp(-dt_s / tau_s)
        revolutions = (target * dt_s + (self._rpm - target) * tau_s * (1.0 - decay)) / 60.0
        self._rpm = target + (self._rpm - target) * decay
        self._pulse_debt += revolutions * PULSES_PER_REV
        pulses = int(self._pulse_debt)
        self._pulse_debt -= pulses
        self._emit(pulses)
        return pulses

    def _emit(self, pulses: int) -> None:
        """Pull the open-collector tach line low and release it, once per pulse."""
        self.pulses_emitted += pulses
        tach = self._tach
        if tach is None:
            return  # on a fan controller, which times the rotor itself
        if tach.function != "input":
            return  # something drives the line itself; an open collector cannot override it
        if tach.when_changed is None:
            return  # nobody counts edges: each pulse ends where it began, so skip the work
        for _ in range(pulses):
            tach.drive_low()
            tach.drive_high()

    @property
    def host_callbacks_cpu_s(self) -> float:
        """CPU time the host's edge callbacks took when this fan pulsed its tach pin: host
        work done on the simulator's thread, which a benchmark must count as the host's
        (timed by the pin around the callbacks alone, not the mock pin's bookkeeping)."""
        return float(getattr(self._tach, "callbacks_cpu_s", 0.0))

    # -- faults ------------------------------------------------------------------------

    def stall(self) -> None:
        """Lock the rotor (a jammed blade, a seized bearing): no rotation, no pulses."""
        self._stalled = True
        self._rpm = 0.0
        self._pulse_debt = 0.0

    def unstall(self) -> None:
        """Free the rotor; it spins up again from rest."""
        self._stalled = False

    def wear(self, factor: float) -> None:
        """A worn bearing: from now on the fan reaches only `factor` of its rated speed.

        Not cumulative: `wear(1.0)` makes the fan as good as new again.
        """
        if not 0.0 < factor <= 1.0:
            raise ValueError(f"wear factor {factor} must be in (0, 1]")
        self._health = factor


def wire_fans(
    config: Config, pin_factory: Any, i2c: SimI2CBus, clock: Callable[[], float]
) -> tuple[list[SimFan], SimEmc2305 | None]:
    """The rig's fans wired as the config says: each on its own pins, or all on the
    channels of a fan controller attached to the I2C bus (returned, for stepping)."""
    if config.hardware.fan_backend != EMC2305:
        return [SimFan(pin_factory, *fan.pins) for fan in config.fan], None
    controller = SimEmc2305(config.hardware.fan_controller_address, clock)
    i2c.attach(controller.address, controller)
    fans = []
    for fan_config in config.fan:
        channel = fan_config.channel
        if channel is None:
            raise ValueError("a fan on the fan controller needs its channel")
        fan = SimFan(pin_factory, None, None, drive=controller.drive(channel))
        controller.connect(channel, fan)
        fans.append(fan)
    return fans, controller
