"""A 4-wire PWM fan: duty out on one pin, tachometer pulses in on another.

gpiozero owns the pins through the injected pin factory, so the same class drives a real
fan (lgpio) and a simulated one (MockFactory). RPM is measured by counting tach pulses
over the time between two readings, which is robust to the jitter of a non-realtime OS.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gpiozero import DigitalInputDevice, PWMOutputDevice

from hashbay.drivers.envelope import SafetyEnvelope

PWM_FREQUENCY_HZ = 25_000  # Intel 4-wire fan spec
PULSES_PER_REV = 2


MIN_WINDOW_S = 0.25  # at the stall speed a 2-pulse fan gives only a few pulses in this


@dataclass(frozen=True)
class FanReading:
    duty: float
    rpm: float
    stalled: bool


class FanDevice(Protocol):
    """A fan as the agent uses it, whatever drives it: GPIO pins (`Fan`) or a fan
    controller's channel (`emc2305.ControllerFan`)."""

    name: str

    @property
    def duty(self) -> float: ...

    def set_duty(self, duty: float) -> float: ...

    def read(self) -> FanReading: ...

    def close(self) -> None: ...


class Fan:
    """One fan; `set_duty` goes through the safe envelope, `read` measures RPM."""

    def __init__(
        self,
        name: str,
        pwm_pin: int,
        tach_pin: int,
        pin_factory: Any,
        envelope: SafetyEnvelope,
        *,
        stall_rpm: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        pwm_hz: int = PWM_FREQUENCY_HZ,
    ) -> None:
        self.name = name
        self._envelope = envelope
        self._stall_rpm = stall_rpm
        self._clock = clock
        self._pwm = PWMOutputDevice(
            pwm_pin, frequency=pwm_hz, initial_value=1.0, pin_factory=pin_factory
        )
        self._tach = DigitalInputDevice(tach_pin, pull_up=True, pin_factory=pin_factory)
        self._lock = threading.Lock()
        self._pulses = 0
        self._window_start = clock()
        self._last: FanReading | None = None
        self._slow = False
        self._tach.when_activated = self._count_pulse

    def _count_pulse(self) -> None:
        with self._lock:
            self._pulses += 1

    @property
    def duty(self) -> float:
        return float(self._pwm.value)

    def set_duty(self, duty: float) -> float:
        """Write a duty cycle (0..1) after the envelope accepts it; returns what was written."""
        accepted = self._envelope.fan_duty(duty, what=self.name)
        self._pwm.value = accepted
        return accepted

    def read(self) -> FanReading:
        """RPM since the previous read; a fan commanded to spin but below stall_rpm in two
        windows running is stalled (one slow window is a late read or a missed pulse)."""
        now = self._clock()
        with self._lock:
            elapsed = now - self._window_start
            if elapsed < MIN_WINDOW_S and self._last is not None:
                return self._last  # too few pulses yet to count: the last honest figure
            pulses, self._pulses = self._pulses, 0
            self._window_start = now
        rpm = pulses / PULSES_PER_REV / elapsed * 60.0 if elapsed > 0 else 0.0
        duty = self.duty
        slow = duty > 0 and rpm < self._stall_rpm
        reading = FanReading(duty=duty, rpm=rpm, stalled=slow and self._slow)
        self._slow = slow
        self._last = reading
        return reading

    def close(self) -> None:
        self._tach.close()
        self._pwm.close()
