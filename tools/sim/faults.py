"""Fault injection for the simulated rig: one small command language, used live
(`hashbay-sim inject …`) and from scenario files.

Commands come from outside (a socket, a file), so each is parsed against a table of
argument types and ranges and refused with a clear message before it touches the rig.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hashbay.drivers.errors import ConfigError

if TYPE_CHECKING:
    from hashbay.tools.sim.rig import SimRig


class FaultError(ValueError):
    """A fault command that cannot be understood or applied."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: type
    low: float
    high: float


@dataclass(frozen=True)
class FaultSpec:
    name: str
    params: tuple[Param, ...]
    doc: str
    apply: Callable[[SimRig, list[Any]], object]
    optional: int = 0  # how many trailing params may be left out

    def usage(self) -> str:
        names = [p.name.upper() for p in self.params]
        for i in range(len(names) - self.optional, len(names)):
            names[i] = f"[{names[i]}]"
        return " ".join([self.name, *names])


SLOT = Param("slot", int, 0, 7)
CHIP = Param("chip", int, 0, 129)
FAN = Param("fan", int, 0, 7)
SENSOR = Param("sensor", int, 0, 3)
PROBABILITY = Param("probability", float, 0.0, 1.0)
ADDRESS = Param("address", int, 0x03, 0x77)

FAULTS: dict[str, FaultSpec] = {
    spec.name: spec
    for spec in (
        FaultSpec(
            "insert",
            (SLOT,),
            "seat the module last pulled from SLOT (or a new one) live",
            lambda rig, a: rig.insert_module(a[0]),
        ),
        FaultSpec(
            "insert-new",
            (SLOT,),
            "seat a brand-new module (new serial, new silicon)",
            lambda rig, a: rig.insert_module(a[0], new=True),
        ),
        FaultSpec("pull", (SLOT,), "pull a module out live", lambda rig, a: rig.pull_module(a[0])),
        FaultSpec(
            "chip-dead",
            (SLOT, CHIP),
            "a chip stops answering (its relay still works)",
            lambda rig, a: rig.chip_dead(a[0], a[1]),
        ),
        FaultSpec(
            "chip-degrade",
            (SLOT, CHIP, Param("per_hour", float, 0.0, 10.0)),
            "a chip ages: degradation (0 healthy .. 1 failed) grows this much per "
            "simulated hour, so its error rate creeps up",
            lambda rig, a: rig.chip_degrade(a[0], a[1], a[2]),
        ),
        FaultSpec("chip-ok", (SLOT, CHIP), "heal a chip", lambda rig, a: rig.chip_ok(a[0], a[1])),
        FaultSpec(
            "overheat",
            (SLOT, Param("c_per_s", float, 0.0, 50.0)),
            "a board heats this many °C per simulated second beyond its physics (a blocked "
            "heatsink); 0 ends it",
            lambda rig, a: rig.overheat(a[0], a[1]),
        ),
        FaultSpec("fan-stall", (FAN,), "lock a fan's rotor", lambda rig, a: rig.fan_stall(a[0])),
        FaultSpec("fan-ok", (FAN,), "free a stalled fan", lambda rig, a: rig.fan_ok(a[0])),
        FaultSpec(
            "sensor-lost",
            (SLOT, SENSOR),
            "a temperature sensor stops answering",
            lambda rig, a: rig.sensor_fault(a[0], a[1], "lost"),
        ),
        FaultSpec(
            "sensor-stuck",
            (SLOT, SENSOR),
            "a temperature sensor freezes its reading",
            lambda rig, a: rig.sensor_fault(a[0], a[1], "stuck"),
        ),
        FaultSpec(
            "sensor-ok",
            (SLOT, SENSOR),
            "heal a temperature sensor",
            lambda rig, a: rig.sensor_fault(a[0], a[1], "ok"),
        ),
        FaultSpec(
            "dcdc-overcurrent",
            (SLOT,),
            "the module's DC-DC trips on over-current",
            lambda rig, a: rig.dcdc_overcurrent(a[0]),
        ),
        FaultSpec(
            "hotswap-overcurrent",
            (SLOT,),
            "the slot's hot-swap controller trips",
            lambda rig, a: rig.hotswap_overcurrent(a[0]),
        ),
        FaultSpec(
            "module-short",
            (SLOT,),
            "the module's input shorts: its hot-swap controller trips again at every power-up "
            "(the module is faulty; a new one cures it)",
            lambda rig, a: rig.module_short(a[0]),
        ),
        FaultSpec(
            "psu-sag",
            (Param("volts", float, 0.0, 300.0),),
            "AC input drops to VOLTS",
            lambda rig, a: rig.psu_input(a[0]),
        ),
        FaultSpec("psu-ok", (), "AC input back to 230 V", lambda rig, a: rig.psu_input(230.0)),
        FaultSpec(
            "uart-noise",
            (SLOT, Param("bit_flip", float, 0.0, 1.0), Param("drop", float, 0.0, 1.0)),
            "per-byte probability of a flipped bit and of a dropped byte, both ways",
            lambda rig, a: rig.uart_noise(a[0], a[1], a[2]),
        ),
        FaultSpec(
            "i2c-errors",
            (PROBABILITY, ADDRESS),
            "share of I2C transactions that fail (one address, or all when left out)",
            lambda rig, a: rig.i2c_errors(a[0], a[1] if len(a) > 1 else None),
            optional=1,
        ),
        FaultSpec(
            "pec-errors",
            (PROBABILITY, ADDRESS),
            "share of reads from PMBus devices (PSU, hot-swap controllers, DC-DCs) that "
            "arrive with a flipped bit, which their PEC catches (one address, or all of them "
            "when left out)",
            lambda rig, a: rig.pec_errors(a[0], a[1] if len(a) > 1 else None),
            optional=1,
        ),
        FaultSpec(
            "i2c-stuck",
            (Param("seconds", float, 0.0, 600.0),),
            "a device holds the I2C bus for SECONDS (real time, as the adapter's timeout): "
            "every transaction blocks, then times out",
            lambda rig, a: rig.i2c_stuck(a[0]),
        ),
        FaultSpec(
            "i2c-ok",
            (),
            "end every I2C bus fault (errors, PEC errors, a stuck bus)",
            lambda rig, a: rig.i2c_ok(),
        ),
        FaultSpec(
            "eeprom-corrupt",
            (SLOT,),
            "a byte of the module's identity EEPROM is damaged: its CRC no longer matches "
            "(read when the module is next identified)",
            lambda rig, a: rig.eeprom_fault(a[0], "corrupt"),
        ),
        FaultSpec(
            "eeprom-blank",
            (SLOT,),
            "the module's identity EEPROM is erased (all 0xFF)",
            lambda rig, a: rig.eeprom_fault(a[0], "blank"),
        ),
        FaultSpec(
            "eeprom-silent",
            (SLOT,),
            "the module's identity EEPROM stops answering (NACK)",
            lambda rig, a: rig.eeprom_fault(a[0], "silent"),
        ),
        FaultSpec(
            "eeprom-ok",
            (SLOT,),
            "the module's identity EEPROM answers again with what the factory wrote",
            lambda rig, a: rig.eeprom_fault(a[0], "ok"),
        ),
        FaultSpec(
            "device-silent",
            (ADDRESS,),
            "the I2C device at ADDRESS (PSU, hot-swap, DC-DC, sensor, EEPROM) stops answering",
            lambda rig, a: rig.device_silent(a[0], silent=True),
        ),
        FaultSpec(
            "device-ok",
            (ADDRESS,),
            "the I2C device at ADDRESS answers again",
            lambda rig, a: rig.device_silent(a[0], silent=False),
        ),
        FaultSpec(
            "ambient",
            (Param("celsius", float, -20.0, 60.0),),
            "set the inlet air",
            lambda rig, a: rig.set_ambient(a[0]),
        ),
    )
}


@dataclass(frozen=True)
class FaultCommand:
    spec: FaultSpec
    args: tuple[Any, ...]

    def apply(self, rig: SimRig) -> None:
        self.spec.apply(rig, list(self.args))

    def __str__(self) -> str:
        return " ".join([self.spec.name, *(str(a) for a in self.args)])


def parse(text: str) -> FaultCommand:
    """Parse one command line; FaultError says what is wrong and what is expected."""
    words = text.split()
    if not words:
        raise FaultError("empty command")
    spec = FAULTS.get(words[0])
    if spec is None:
        raise FaultError(f"unknown fault {words[0]!r}; known: {', '.join(FAULTS)}")
    given = words[1:]
    if not len(spec.params) - spec.optional <= len(given) <= len(spec.params):
        raise FaultError(f"usage: {spec.usage()}")
    args = [_convert(param, word) for param, word in zip(spec.params, given, strict=False)]
    return FaultCommand(spec, tuple(args))


def _convert(param: Param, word: str) -> Any:
    try:
        value: Any = int(word, 0) if param.kind is int else float(word)
    except ValueError:
        raise FaultError(
            f"{param.name}: {word!r} is not a{'n integer' if param.kind is int else ' number'}"
        ) from None
    if not param.low <= value <= param.high:
        raise FaultError(f"{param.name}: {value} outside {param.low:g}..{param.high:g}")
    return value


@dataclass(frozen=True)
class ScheduledFault:
    at_s: float
    command: FaultCommand


def load_scenario(path: Path) -> list[ScheduledFault]:
    """A scenario file: `[[event]]` tables with `at_s` (simulated seconds) and `do`."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read scenario: {exc}") from None
    unknown = set(raw) - {"event"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))}; expected [[event]]"
        )
    events = raw.get("event", [])
    if not isinstance(events, list):
        raise ConfigError(f"{path}: event must be an array of tables ([[event]])")
    scheduled = []
    for i, event in enumerate(events):
        where = f"{path}: event[{i}]"
        if not isinstance(event, dict) or set(event) != {"at_s", "do"}:
            raise ConfigError(f"{where}: needs exactly the keys at_s and do")
        at_s, do = event["at_s"], event["do"]
        if isinstance(at_s, bool) or not isinstance(at_s, int | float) or at_s < 0:
            raise ConfigError(f"{where}.at_s: must be a number of seconds >= 0, got {at_s!r}")
        if not isinstance(do, str):
            raise ConfigError(f"{where}.do: must be a fault command string, got {do!r}")
        try:
            scheduled.append(ScheduledFault(float(at_s), parse(do)))
        except FaultError as exc:
            raise ConfigError(f"{where}.do: {exc}") from None
    return sorted(scheduled, key=lambda s: s.at_s)


def help_text() -> str:
    return "\n".join(f"  {spec.usage():<44} {spec.doc}" for spec in FAULTS.values())
