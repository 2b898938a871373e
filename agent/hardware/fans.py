"""The fans as the config wires them, chosen by name (`hardware.fan_backend`): four-wire
fans on GPIO pins, or on the channels of an EMC2305-family fan controller on the I2C bus.

Either way the rest of the agent gets FanDevice objects with the same readings and the
same stall rule, and cannot tell which backend it has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import structlog

from hashbay.agent.daemon.config import EMC2305, GPIO_FANS, Config, FanSection
from hashbay.agent.hardware.bus_backends import Buses
from hashbay.drivers.emc2305 import Emc2305
from hashbay.drivers.envelope import SafetyEnvelope
from hashbay.drivers.errors import ConfigError, HardwareError, ProtocolError
from hashbay.drivers.fan import Fan, FanDevice, FanReading

log = structlog.get_logger("hashbay.fans")

T = TypeVar("T")

FanBackend = Callable[[Config, Buses, SafetyEnvelope], list[FanDevice]]


def _gpio_fans(config: Config, buses: Buses, envelope: SafetyEnvelope) -> list[FanDevice]:
    return [
        Fan(
            f"fan{i}",
            *fan.pins,
            buses.pin_factory,
            envelope,
            clock=buses.clock,
            pwm_hz=config.hardware.fan_pwm_hz,
        )
        for i, fan in enumerate(config.fan)
    ]


def _controller_fans(config: Config, buses: Buses, envelope: SafetyEnvelope) -> list[FanDevice]:
    """Identify and set up the controller (every fan at full drive), then its fans."""
    chip = Emc2305(
        buses.i2c,
        config.hardware.fan_controller_address,
        envelope,
        on_restore=lambda what: log.warning("fan controller put right", what=what),
    )
    channels = [_channel(fan) for fan in config.fan]
    chip.configure(channels)
    return [chip.fan(channel, f"fan{i}") for i, channel in enumerate(channels)]


def _channel(fan: FanSection) -> int:
    if fan.channel is None:
        raise ConfigError("fan: a fan on the fan controller needs its channel")
    return fan.channel


READ_ATTEMPTS = 3  # transactions asked per fan per poll before the poll counts as missed
UNREADABLE_POLLS = 3  # polls in a row a fan could not be read before it counts as stalled

BACKENDS: dict[str, FanBackend] = {GPIO_FANS: _gpio_fans, EMC2305: _controller_fans}


def build_fans(config: Config, buses: Buses, envelope: SafetyEnvelope) -> list[FanDevice]:
    return BACKENDS[config.hardware.fan_backend](config, buses, envelope)


class FanReader:
    """Reads every fan for the hardware poll. A read that fails is asked again at once, up
    to READ_ATTEMPTS times (on a noisy bus single transactions fail); a fan that still
    cannot be read in UNREADABLE_POLLS polls running counts as stalled, like a fan whose
    tach was slow twice: the others go to full speed and the boards are throttled. Its
    controller's watchdog has run it at full speed meanwhile, since nothing reached it."""

    def __init__(self, fans: list[FanDevice]) -> None:
        self._fans = fans
        self._failures = [0] * len(fans)
        self._errors = [""] * len(fans)

    def read_all(self) -> tuple[FanReading, ...]:
        return tuple(self._read(n) for n in range(len(self._fans)))

    def _read(self, n: int) -> FanReading:
        fan = self._fans[n]
        try:
            reading = retried(fan.read)
        except (HardwareError, ProtocolError) as exc:
            failures = self._failures[n] = self._failures[n] + 1
            stalled = failures >= UNREADABLE_POLLS
            error, self._errors[n] = self._errors[n], str(exc)
            if failures <= UNREADABLE_POLLS or error != str(exc):  # not every poll
                log.warning("fan not read", fan=fan.name, error=str(exc), stalled=stalled)
            return FanReading(duty=fan.duty, rpm=0.0, stalled=stalled)
        if self._failures[n]:
            log.info("fan read again", fan=fan.name, polls_missed=self._failures[n])
            self._failures[n] = 0
            self._errors[n] = ""
        return reading


def retried(call: Callable[[], T], attempts: int = READ_ATTEMPTS) -> T:
    """`call()`, asked again at once when a transaction is lost to bus noise."""
    for _ in range(attempts - 1):
        try:
            return call()
        except (HardwareError, ProtocolError):
            continue
    return call()
