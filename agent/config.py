"""The agent's configuration: one TOML file, checked completely before any hardware is touched."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from hashbay.agent.settings import REQUIRED, array, parse_table, setting, table
from hashbay.drivers.errors import ConfigError

SIM = "sim"


def pin(doc: str) -> Any:
    """A required Broadcom (BCM) GPIO number, as gpiozero names pins."""
    return setting(REQUIRED, doc, min=0, max=27)


@dataclass(frozen=True, kw_only=True)
class AgentSection:
    name: str = setting(
        "sim-rig-01",
        "Miner id: names this miner in MQTT topics, logs and the miner API.",
        pattern=r"[a-z0-9][a-z0-9-]{0,31}",
    )
    state_dir: str = setting(
        "/var/lib/hashbay",
        "Persistent state (event spool, tuning results). `--state-dir` overrides it.",
        pattern=r"/.*",
    )
    runtime_dir: str = setting(
        "/run/hashbay",
        "Runtime files (control socket). `--runtime-dir` overrides it.",
        pattern=r"/.*",
    )
    log_level: str = setting(
        "info", "Lowest level logged.", choices=("debug", "info", "warning", "error")
    )
    poll_interval_s: float = setting(
        1.0, "Period of the hardware poll (sensors, rails, fans).", unit="s", min=0.05, max=10
    )
    shutdown_timeout_s: float = setting(
        5.0,
        "Bound on the ordered shutdown; the safe state is applied first, within it.",
        unit="s",
        min=0.5,
        max=30,
    )
    stall_timeout_s: float = setting(
        5.0,
        "If the event loop or the hardware poll makes no progress for this long, a guard "
        "thread puts the hardware in its safe state and the watchdog pings stop.",
        unit="s",
        min=0.5,
        max=60,
    )


@dataclass(frozen=True, kw_only=True)
class HardwareSection:
    i2c_bus: str = setting(
        SIM,
        "I2C bus of the EEPROMs, sensors and PMBus devices: `sim` or a device path.",
        pattern=r"sim|/dev/i2c-[0-9]{1,3}",
    )
    pin_factory: str = setting(
        SIM,
        "gpiozero pin factory: `sim` (MockFactory driven by the simulated rig) or a real one.",
        choices=(SIM, "lgpio", "rpigpio"),
    )


@dataclass(frozen=True, kw_only=True)
class LimitsSection:
    fan_duty_min: float = setting(
        0.2,
        "Lowest fan PWM duty (0 = stopped, 1 = full speed) any controller may set.",
        min=0,
        max=1,
    )
    fan_duty_max: float = setting(
        1.0, "Highest fan PWM duty any controller may set.", min=0.3, max=1
    )
    safe_fan_duty: float = setting(
        1.0,
        "Fan duty applied in the safe state (shutdown, stall, fault); within min..max.",
        min=0.5,
        max=1,
    )


@dataclass(frozen=True, kw_only=True)
class FanSection:
    pwm_pin: int = pin("BCM pin driving the fan's PWM input.")
    tach_pin: int = pin("BCM pin reading the fan's tachometer.")


@dataclass(frozen=True, kw_only=True)
class SlotSection:
    uart: str = setting(
        REQUIRED,
        "Serial device of the slot's ASIC chain: `sim` or a device path.",
        pattern=r"sim|/dev/[A-Za-z0-9_/-]{1,64}",
    )
    presence_pin: int = pin("BCM pin reading module presence (low = present).")
    power_pin: int = pin("BCM pin enabling the slot's hot-swap controller.")
    reset_pin: int = pin("BCM pin holding the ASIC chain in reset (low = reset).")
    led_pin: int = pin("BCM pin of the slot's locate LED.")


@dataclass(frozen=True, kw_only=True)
class Config:
    agent: AgentSection = table(AgentSection, "The daemon itself.")
    hardware: HardwareSection = table(HardwareSection, "Buses and how they are reached.")
    limits: LimitsSection = table(
        LimitsSection, "The safe envelope: hard limits below every caller."
    )
    fan: tuple[FanSection, ...] = array("One entry per fan.", min_items=1, max_items=8)
    slot: tuple[SlotSection, ...] = array(
        "One entry per hashboard slot, in slot order.", min_items=1, max_items=8
    )

    def with_dirs(self, state_dir: str | None, runtime_dir: str | None) -> Config:
        """The same config with the directories given on the command line, if any."""
        agent = self.agent
        if state_dir is not None:
            agent = replace(agent, state_dir=state_dir)
        if runtime_dir is not None:
            agent = replace(agent, runtime_dir=runtime_dir)
        return replace(self, agent=agent)

    @property
    def simulated(self) -> bool:
        """Whether the buses come from the simulated rig (checked consistent at load)."""
        return self.hardware.i2c_bus == SIM


def default_config_path() -> Path:
    """The packaged default config: the simulated rig."""
    return Path(str(resources.files("hashbay.agent").joinpath("default.toml")))


def load_config(path: Path) -> Config:
    """Read and validate a config file; ConfigError messages start with the file's path."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, str(path))


def parse_config(raw: dict[str, Any], source: str) -> Config:
    try:
        config = parse_table(Config, raw, "")
        check_relations(config)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def check_relations(config: Config) -> None:
    """Checks that span keys: limits ordered, no pin wired twice, sim for all buses or none."""
    limits = config.limits
    if limits.fan_duty_min > limits.fan_duty_max:
        raise ConfigError("limits.fan_duty_min: must not exceed limits.fan_duty_max")
    if not limits.fan_duty_min <= limits.safe_fan_duty <= limits.fan_duty_max:
        raise ConfigError("limits.safe_fan_duty: must lie within limits.fan_duty_min..max")
    owners: dict[int, str] = {}
    wired = [(f"fan[{i}].{k}", getattr(f, k)) for i, f in enumerate(config.fan) for k in _FAN_PINS]
    wired += [
        (f"slot[{i}].{k}", getattr(s, k)) for i, s in enumerate(config.slot) for k in _SLOT_PINS
    ]
    for key, pin in wired:
        if pin in owners:
            raise ConfigError(f"{key}: pin {pin} is already used by {owners[pin]}")
        owners[pin] = key
    sim_flags = {
        "hardware.i2c_bus": config.hardware.i2c_bus == SIM,
        "hardware.pin_factory": config.hardware.pin_factory == SIM,
    } | {f"slot[{i}].uart": s.uart == SIM for i, s in enumerate(config.slot)}
    if len(set(sim_flags.values())) > 1:
        simulated = [k for k, v in sim_flags.items() if v]
        raise ConfigError(
            f"{simulated[0]}: 'sim' must be used for every bus or none "
            f"(simulated: {', '.join(simulated)})"
        )


_FAN_PINS = ("pwm_pin", "tach_pin")
_SLOT_PINS = ("presence_pin", "power_pin", "reset_pin", "led_pin")
