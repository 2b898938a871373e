"""GPIO: every line the config names, claimed one at a time in its safe role and level,
then the rig built on them all.

Claiming each line alone names the one that fails (a kernel driver such as a UART or
SPI overlay owns it, another program holds it, the number is wrong) instead of one
error for the whole rig. Outputs are claimed at their safe level: enable low, chain
held in reset, LED off, fan PWM high (full speed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from gpiozero import DigitalInputDevice, DigitalOutputDevice

from hashbay.agent.core.quoting import clip
from hashbay.agent.daemon.config import Config
from hashbay.agent.hardware.rig import Rig
from hashbay.agent.selftest.report import Verdict
from hashbay.agent.selftest.session import Session


class Role(Enum):
    PRESENCE = "presence (in, pulled up)"
    ALERT = "over-temperature alert (in, pulled up)"
    TACH = "tachometer (in, pulled up)"
    ENABLE = "power enable (out)"
    RESET = "chain reset (out)"
    LED = "locate LED (out)"
    PWM = "PWM (out)"


@dataclass(frozen=True)
class Line:
    part: str  # "slot 0", "fan 1"
    role: Role
    pin: int

    @property
    def item(self) -> str:
        return f"{self.role.value.split(' (')[0]}, pin {self.pin}"


class AlertAsserted(Exception):
    """An over-temperature alert line reads low before anything was powered."""


def configured_lines(config: Config) -> list[Line]:
    """Every GPIO line the config wires, slot lines first."""
    lines: list[Line] = []
    for n, slot in enumerate(config.slot):
        part = f"slot {n}"
        lines += [
            Line(part, Role.PRESENCE, slot.presence_pin),
            Line(part, Role.ENABLE, slot.power_pin),
            Line(part, Role.RESET, slot.reset_pin),
            Line(part, Role.LED, slot.led_pin),
        ]
        if slot.alert_pin is not None:
            lines.append(Line(part, Role.ALERT, slot.alert_pin))
    for n, fan in enumerate(config.fan):
        if fan.pwm_pin is None or fan.tach_pin is None:
            continue  # on the fan controller (hardware.fan_backend = "emc2305"): no GPIO
        lines += [
            Line(f"fan {n}", Role.PWM, fan.pwm_pin),
            Line(f"fan {n}", Role.TACH, fan.tach_pin),
        ]
    return lines


_CLAIM: dict[Role, Callable[[int, Any], Any]] = {
    Role.PRESENCE: lambda pin, f: DigitalInputDevice(pin, pull_up=True, pin_factory=f),
    Role.TACH: lambda pin, f: DigitalInputDevice(pin, pull_up=True, pin_factory=f),
    Role.ALERT: lambda pin, f: DigitalInputDevice(pin, pull_up=True, pin_factory=f),
    Role.ENABLE: lambda pin, f: DigitalOutputDevice(pin, initial_value=False, pin_factory=f),
    Role.RESET: lambda pin, f: DigitalOutputDevice(
        pin, active_high=False, initial_value=True, pin_factory=f
    ),
    Role.LED: lambda pin, f: DigitalOutputDevice(pin, initial_value=False, pin_factory=f),
    Role.PWM: lambda pin, f: DigitalOutputDevice(pin, initial_value=True, pin_factory=f),
}

_HELD = {
    Role.TACH: "claimed (its level follows the rotor)",
    Role.ENABLE: "claimed, driven low: slot off",
    Role.RESET: "claimed, driven low: chain held in reset",
    Role.LED: "claimed, driven low: LED off",
    Role.PWM: "claimed, driven high: full speed",
}


def _claim(line: Line, factory: Any) -> str:
    """Claim the line in its safe role, say what it shows, release it."""
    device = _CLAIM[line.role](line.pin, factory)
    try:
        if line.role is Role.PRESENCE:
            return "low: a module is seated" if device.is_active else "high: empty"
        if line.role is Role.ALERT:
            if device.is_active:
                raise AlertAsserted
            return "high: no module over its limit"
        return _HELD[line.role]
    finally:
        device.close()


async def claim_lines(session: Session) -> None:
    factory = session.buses.pin_factory
    failed = 0
    for line in configured_lines(session.config):
        try:
            seen = _claim(line, factory)
        except AlertAsserted:
            failed += 1
            session.record(
                line.part,
                line.item,
                Verdict.FAIL,
                "low: a sensor says over temperature (or the line is shorted to ground, or a "
                "sensor's power-on limit is below the room's temperature); nothing is powered",
                pin=line.pin,
            )
            continue
        except Exception as exc:  # each library has its own errors; all mean "not claimable"
            failed += 1
            session.record(
                line.part,
                line.item,
                Verdict.FAIL,
                f"cannot be claimed ({clip(str(exc) or type(exc).__name__, 120)}): another "
                "program holds it, a kernel driver (UART, I2C or SPI overlay) owns it, or the "
                "pin number is wrong",
                pin=line.pin,
            )
            continue
        session.record(line.part, line.item, Verdict.PASS, seen, pin=line.pin)
    if failed:
        return
    try:
        rig = Rig(session.config, session.buses)
    except Exception as exc:  # the lines claimed alone; together they must too
        session.record(
            "gpio", "all lines together", Verdict.FAIL, f"the rig cannot be built: {exc}"
        )
        return
    session.rig = rig
    session.seated = {hw.index: hw.pins.present() for hw in rig.slots}
