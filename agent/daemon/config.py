"""The agent's configuration: one TOML file, checked completely before any hardware is touched."""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from hashbay.agent.core.alarm_settings import AlarmSettings
from hashbay.agent.core.quoting import clip
from hashbay.agent.core.schedule import parse_priced_window, parse_window
from hashbay.agent.core.settings import (
    REQUIRED,
    array,
    file_path,
    parse_table,
    scalars,
    setting,
    table,
)
from hashbay.agent.hardware.bus_backends import load_backend
from hashbay.agent.interfaces.api_settings import ApiSettings
from hashbay.agent.interfaces.control_settings import ControlSettings
from hashbay.agent.interfaces.metrics_settings import MetricsSettings
from hashbay.agent.mining.pool_settings import PoolSettings, check_pools
from hashbay.agent.mining.stratum_settings import StratumSettings
from hashbay.agent.modules.health_settings import HealthSettings
from hashbay.agent.modules.predict_settings import PredictSettings
from hashbay.agent.modules.protection_settings import ProtectionSettings
from hashbay.agent.power.power_settings import EconomicsSettings, PowerSettings
from hashbay.agent.selftest.settings import SelfTestSettings
from hashbay.agent.thermal.quiet import QuietSettings
from hashbay.agent.thermal.thermal_settings import ThermalSettings
from hashbay.agent.tuning.tune_settings import TuneSettings
from hashbay.drivers import emc2305
from hashbay.drivers.envelope import BoardLimits
from hashbay.drivers.errors import ConfigError

SIM = "sim"
GPIO_FANS = "gpio"
EMC2305 = "emc2305"
FAN_BACKENDS = (GPIO_FANS, EMC2305)


def i2c_address(default: Any, doc: str) -> Any:
    """A 7-bit I2C address outside the reserved ranges."""
    return setting(default, doc, min=0x08, max=0x77, hex=True)


def pin(doc: str) -> Any:
    """A required Broadcom (BCM) GPIO number, as gpiozero names pins."""
    return setting(REQUIRED, doc, min=0, max=27)


def optional_pin(doc: str) -> Any:
    """A BCM GPIO number that only some wirings have (None: not wired)."""
    return setting(None, doc, min=0, max=27)


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
    pmbus_pec: bool = setting(
        True, "Use SMBus packet error checking (PEC) with the PSU, hot-swap and DC-DC devices."
    )
    psu_address: int = i2c_address(0x58, "PMBus address of the PSU.")
    fan_backend: str = setting(
        GPIO_FANS,
        "How the fans are driven and measured: `gpio` (PWM and tachometer on controller "
        "pins, one callback per tach pulse) or `emc2305` (a Microchip EMC2305-family fan "
        "controller on the I2C bus drives them and measures the tachometers itself).",
        choices=FAN_BACKENDS,
    )
    fan_pwm_hz: int = setting(
        25_000,
        "PWM frequency of GPIO-driven fans (`gpio`): Intel's 4-wire fan specification asks "
        "for 25 kHz. The lgpio and RPi.GPIO pin factories make PWM in software and reach "
        "10 kHz at most; most fans run on it, some whine at low duty (or use `emc2305`).",
        unit="Hz",
        min=100,
        max=40_000,
    )
    fan_controller_address: int = i2c_address(
        0x2F,
        "I2C address of the fan controller (`emc2305`): what its ADDR_SEL resistor straps, "
        "one of 0x2c, 0x2d, 0x2e, 0x2f, 0x4c, 0x4d.",
    )
    presence_debounce_s: float = setting(
        0.03,
        "A presence contact must hold its level this long before a module counts as seated "
        "or gone (contact bounce lasts a few milliseconds).",
        unit="s",
        min=0.005,
        max=1.0,
    )
    nonce_check_bits: int = setting(
        32,
        "Leading zero bits a reported nonce's hash must have to count (32 = difficulty 1, "
        "as real chips report); a nonce below it is that chip's hardware error.",
        min=1,
        max=64,
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
    board_vout_min_v: float = setting(
        11.0, "Lowest board rail voltage any module may be set to.", unit="V", min=5, max=20
    )
    board_vout_max_v: float = setting(
        15.5, "Highest board rail voltage any module may be set to.", unit="V", min=5, max=20
    )
    chip_freq_min_mhz: float = setting(
        50, "Lowest ASIC frequency that may be set.", unit="MHz", min=25, max=1500
    )
    chip_freq_max_mhz: float = setting(
        800, "Highest ASIC frequency that may be set.", unit="MHz", min=25, max=1500
    )
    board_power_max_w: float = setting(
        1800, "Most a single module may draw.", unit="W", min=50, max=5000
    )
    psu_power_max_w: float = setting(
        5500,
        "Most the whole miner may draw at the PSU input (a module powers up only if its "
        "maximum fits beside what the others are promised).",
        unit="W",
        min=100,
        max=20000,
    )
    safe_fan_duty: float = setting(
        1.0,
        "Fan duty applied in the safe state (shutdown, stall, fault); within min..max.",
        min=0.5,
        max=1,
    )


@dataclass(frozen=True, kw_only=True)
class FanSection:
    pwm_pin: int | None = optional_pin(
        "BCM pin driving the fan's PWM input (`gpio` fans; required there)."
    )
    tach_pin: int | None = optional_pin(
        "BCM pin reading the fan's tachometer (`gpio` fans; required there)."
    )
    channel: int | None = setting(
        None,
        "Fan controller channel the fan is wired to, PWMn/TACHn of the chip (`emc2305` "
        "fans; required there).",
        min=1,
        max=5,
    )
    rpm_max: float = setting(6000.0, "Speed at full duty.", unit="rpm", min=500, max=30000)
    dba_at_max: float = setting(
        69.0,
        "Sound level at full speed, from the fan's datasheet (the noise model of quiet mode).",
        unit="dB(A)",
        min=10,
        max=120,
    )
    stop_duty: float = setting(
        0.1, "Below this duty the fan stands still; above it speed is proportional.", min=0, max=0.9
    )

    @property
    def pins(self) -> tuple[int, int]:
        """(PWM, tach) pins of a `gpio` fan (the config check makes sure it has both)."""
        if self.pwm_pin is None or self.tach_pin is None:
            raise ConfigError("fan: a gpio fan needs pwm_pin and tach_pin")
        return self.pwm_pin, self.tach_pin


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
    alert_pin: int | None = optional_pin(
        "BCM pin reading the module's temperature sensors' OS/ALERT line (open drain, shared "
        "by the sensors, pulled up; low = over protection.cutoff_c): the hardware cut, taken "
        "in the pin's callback without waiting for any loop. Not set: the software sweep "
        "alone watches the board."
    )
    eeprom_address: int = i2c_address(REQUIRED, "I2C address of the module's identity EEPROM.")
    temp_addresses: tuple[int, ...] = scalars(
        REQUIRED,
        "I2C addresses of the module's temperature sensors (LM75/TMP75-class).",
        min=0x08,
        max=0x77,
        min_items=1,
        max_items=4,
        hex=True,
    )
    dcdc_address: int = i2c_address(REQUIRED, "PMBus address of the module's DC-DC converter.")
    hotswap_address: int = i2c_address(
        REQUIRED, "PMBus address of the slot's hot-swap controller (on the backplane)."
    )


@dataclass(frozen=True, kw_only=True)
class ChainSection:
    ticket_difficulty: int = setting(
        256,
        "Chips report a nonce once its hash meets this difficulty (a power of two); "
        "higher means fewer, weightier nonces.",
        min=1,
        max=65536,
    )
    ramp_step_mhz: float = setting(
        6.25, "Frequency changes go in steps no larger than this.", unit="MHz", min=1, max=100
    )
    ramp_step_delay_s: float = setting(
        0.1, "Pause between frequency steps.", unit="s", min=0, max=5
    )
    job_interval_s: float = setting(
        30.0, "New work is sent to each chain at least this often.", unit="s", min=1, max=600
    )
    chip_poll_interval_s: float = setting(
        10.0,
        "Every chip is asked to answer this often (missing chips count as timeouts).",
        unit="s",
        min=1,
        max=600,
    )
    sample_interval_s: float = setting(
        1.0, "Health of each hashing module is assessed this often.", unit="s", min=0.1, max=60
    )
    fast_baud: bool = setting(True, "Switch chains from 115200 baud to 1 Mbaud after enumeration.")
    power_good_timeout_s: float = setting(
        2.0,
        "How long a slot may take to report power good, reach its rail voltage, or confirm "
        "its output off before that counts as a fault.",
        unit="s",
        min=0.1,
        max=30,
    )


@dataclass(frozen=True, kw_only=True)
class MqttSection:
    enabled: bool = setting(True, "Publish to an MQTT broker and take commands from it.")
    host: str = setting(
        "127.0.0.1", "Broker host name or address.", pattern=r"[A-Za-z0-9._:-]{1,253}"
    )
    port: int = setting(1883, "Broker port (8883 is usual with TLS).", min=1, max=65535)
    username: str = setting("", "User name; empty for an anonymous connection.")
    password_file: str = file_path(
        "File holding the password (first line), readable by the agent only; keeps the "
        "secret out of the config."
    )
    tls: bool = setting(False, "Connect with TLS.")
    ca_file: str = file_path("CA bundle to verify the broker with; empty for the system's.")
    cert_file: str = file_path("Client certificate for mutual TLS.")
    key_file: str = file_path("Key of the client certificate.")
    topic_prefix: str = setting(
        "hashbay", "First level of every topic.", pattern=r"[A-Za-z0-9_-]{1,64}"
    )
    client_id: str = setting(
        "",
        "MQTT client id; empty for hashbay-<agent.name> (stable per miner).",
        pattern=r"[A-Za-z0-9_-]{0,64}",
    )
    keepalive_s: int = setting(30, "MQTT keep-alive.", unit="s", min=5, max=600)
    state_interval_s: float = setting(
        30.0,
        "Retained state is republished at least this often (and on every change that matters).",
        unit="s",
        min=1,
        max=3600,
    )
    discovery: bool = setting(True, "Publish Home Assistant MQTT discovery.")
    discovery_prefix: str = setting(
        "homeassistant", "Home Assistant's discovery prefix.", pattern=r"[A-Za-z0-9_-]{1,64}"
    )
    spool_max_events: int = setting(
        10000,
        "Events kept on disk while the broker is unreachable; beyond it the oldest are "
        "dropped (and counted).",
        min=10,
        max=1_000_000,
    )
    commands_per_s: float = setting(
        20.0,
        "Commands taken per second on the command topic (a burst of as many is allowed); "
        "beyond it each is answered `busy` and not carried out.",
        unit="/s",
        min=1,
        max=10000,
    )
    reconnect_min_s: float = setting(1.0, "First reconnect delay.", unit="s", min=0.1, max=60)
    reconnect_max_s: float = setting(
        60.0, "Longest reconnect delay (doubling from the first).", unit="s", min=1, max=3600
    )


@dataclass(frozen=True, kw_only=True)
class SimSection:
    seed: int = setting(
        1,
        "Seed of every random choice in the simulated rig (silicon, line noise).",
        min=0,
        max=2**31 - 1,
    )
    chip_model: str = setting(
        "BM1368", "ASIC model on the simulated modules.", choices=("BM1366", "BM1368", "BM1370")
    )
    chips_per_board: int = setting(126, "ASICs on each simulated module.", min=1, max=130)
    chips_per_domain: int = setting(
        3,
        "Chips per series voltage domain: chip volts = board volts / (chips / this).",
        min=1,
        max=8,
    )
    modules: tuple[int, ...] = scalars(
        (0, 1, 2), "Slots that hold a module when the rig starts.", min=0, max=7, max_items=8
    )
    ambient_c: float = setting(
        25.0, "Air temperature at the fan inlet.", unit="°C", min=-20, max=60
    )
    time_scale: float = setting(
        1.0, "Simulated seconds per real second (physics, nonces, fans).", min=0.1, max=1000
    )
    ticket_zero_bits: int = setting(
        8,
        "Leading zero bits the simulated chips' nonces have (8: one hash in 256 qualifies); "
        "each nonce still stands for ticket difficulty x 2^32 hashes.",
        min=1,
        max=24,
    )
    scenario: str = file_path("Fault scenario file (TOML) played from the start; empty for none.")
    control_socket: bool = setting(
        True, "Accept live fault injection (`hashbay-sim inject`) on RUNTIME_DIR/sim.sock."
    )


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
    chain: ChainSection = table(ChainSection, "Bringing ASIC chains up and keeping them fed.")
    health: HealthSettings = table(HealthSettings, "What counts as a healthy module.")
    predict: PredictSettings = table(
        PredictSettings, "Predictive maintenance: when a rising error rate raises a warning."
    )
    mqtt: MqttSection = table(MqttSection, "Publishing and commands over MQTT.")
    pool: tuple[PoolSettings, ...] = array(
        "Mining pools in priority order (the first is preferred). With none, the chains "
        "hash on local work and nothing is submitted.",
        max_items=8,
    )
    stratum: StratumSettings = table(
        StratumSettings, "Pool connections: timeouts, backoff, failover and failback."
    )
    control: ControlSettings = table(ControlSettings, "The technician control socket (`hashbay`).")
    api: ApiSettings = table(ApiSettings, "The cgminer-compatible miner API for fleet tools.")
    metrics: MetricsSettings = table(
        MetricsSettings, "Prometheus / OpenMetrics series for the farm's monitoring."
    )
    thermal: ThermalSettings = table(ThermalSettings, "Fan control from board temperature.")
    quiet: QuietSettings = table(QuietSettings, "Quiet mode: a cap on the fans' noise.")
    protection: ProtectionSettings = table(
        ProtectionSettings, "Per-board over-temperature, sensor and power-fault protection."
    )
    alarms: AlarmSettings = table(
        AlarmSettings, "Alarm events, debounced and bounded; noisy bus devices."
    )
    power: PowerSettings = table(PowerSettings, "The power governor: a whole-miner power target.")
    economics: EconomicsSettings = table(
        EconomicsSettings, "Prices, tariff windows, profitability mode and scheduled curtailment."
    )
    autotune: TuneSettings = table(
        TuneSettings, "Autotuning: every chip's clock at each board voltage, stored per serial."
    )
    selftest: SelfTestSettings = table(
        SelfTestSettings, "`hashbay-agent --self-test`: how long its fan and LED checks take."
    )
    sim: SimSection = table(
        SimSection, "The simulated rig; used only when the buses are `sim`, ignored otherwise."
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
    def bus_backend(self) -> str:
        """The name of the back-end that opens the buses (`bus_backends`)."""
        return SIM if self.simulated else "hardware"

    @property
    def simulated(self) -> bool:
        """Whether the buses come from the simulated rig (checked consistent at load)."""
        return self.hardware.i2c_bus == SIM


def default_config_path() -> Path:
    """The packaged default config: the simulated rig."""
    return Path(str(resources.files("hashbay.agent.daemon").joinpath("default.toml")))


MAX_CONFIG_BYTES = 1 << 20  # a real config is a few KiB; more is a wrong file
MAX_ERROR_CHARS = 300  # one journal line an operator can read


def load_config(path: Path) -> Config:
    """Read and validate a config file; a ConfigError's message is one line of at most
    MAX_ERROR_CHARS, starting with the file's path, whatever the file holds."""
    try:
        raw = tomllib.loads(_read_config(path))
    except ConfigError as exc:
        raise ConfigError(clip(f"{path}: {exc}", MAX_ERROR_CHARS)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(clip(f"{path}: not valid TOML: {exc}", MAX_ERROR_CHARS)) from None
    except RecursionError:
        raise ConfigError(f"{clip(str(path), 200)}: not valid TOML: nested too deeply") from None
    except (ValueError, MemoryError) as exc:  # e.g. an integer of thousands of digits
        raise ConfigError(clip(f"{path}: not valid TOML: {exc}", MAX_ERROR_CHARS)) from None
    return parse_config(raw, str(path))


def _read_config(path: Path) -> str:
    """The file's text, refusing what cannot be a config: a device, a FIFO, megabytes."""
    try:
        # Non-blocking open: a FIFO without a writer must not hang the check.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfigError("not a regular file")
            data = file.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError("file not found") from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES} bytes; not a config file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read: not UTF-8 text (byte {exc.start})") from None


def parse_config(raw: dict[str, Any], source: str) -> Config:
    try:
        config = parse_table(Config, raw, "")
        check_relations(config)
    except ConfigError as exc:
        raise ConfigError(clip(f"{source}: {exc}", MAX_ERROR_CHARS)) from None
    except RecursionError:
        raise ConfigError(f"{clip(source, 200)}: nested too deeply") from None
    return config


def _check_windows(config: Config) -> None:
    economics = config.economics
    checks: list[tuple[str, str, Callable[[str], object]]] = [
        *(
            (f"economics.tariff[{n}]", t, parse_priced_window)
            for n, t in enumerate(economics.tariff)
        ),
        *(
            (f"economics.curtail_schedule[{n}]", t, parse_window)
            for n, t in enumerate(economics.curtail_schedule)
        ),
    ]
    for key, text, parse in checks:
        try:
            parse(text)
        except ConfigError as exc:
            raise ConfigError(f"{key}: {exc}") from None


def _check_thermal(config: Config) -> None:
    """Fan control must hold the boards below protection's thresholds, and never ask a fan
    for a duty at which it stands still (that reads as a stall)."""
    thermal, protection = config.thermal, config.protection
    if thermal.target_c + thermal.power_margin_c >= protection.warn_c:
        raise ConfigError(
            f"thermal.target_c: {thermal.target_c:g} °C plus thermal.power_margin_c "
            f"({thermal.power_margin_c:g} °C) must stay below protection.warn_c "
            f"({protection.warn_c:g} °C), or normal running would raise warnings"
        )
    for n, fan in enumerate(config.fan):
        if fan.stop_duty >= config.limits.fan_duty_min:
            raise ConfigError(
                f"fan[{n}].stop_duty: {fan.stop_duty:g} must be below limits.fan_duty_min "
                f"({config.limits.fan_duty_min:g}): a fan stopped by control would read as stalled"
            )


def check_relations(config: Config) -> None:
    """Checks that span keys: limits ordered, no pin wired twice, sim for all buses or none."""
    limits = config.limits
    if limits.fan_duty_min > limits.fan_duty_max:
        raise ConfigError("limits.fan_duty_min: must not exceed limits.fan_duty_max")
    if not limits.fan_duty_min <= limits.safe_fan_duty <= limits.fan_duty_max:
        raise ConfigError("limits.safe_fan_duty: must lie within limits.fan_duty_min..max")
    for low, high in (
        ("board_vout_min_v", "board_vout_max_v"),
        ("chip_freq_min_mhz", "chip_freq_max_mhz"),
    ):
        if getattr(limits, low) > getattr(limits, high):
            raise ConfigError(f"limits.{low}: must not exceed limits.{high}")
    owners: dict[int, str] = {}
    wired = [(f"fan[{i}].{k}", getattr(f, k)) for i, f in enumerate(config.fan) for k in _FAN_PINS]
    wired += [
        (f"slot[{i}].{k}", getattr(s, k)) for i, s in enumerate(config.slot) for k in _SLOT_PINS
    ]
    for key, pin in wired:
        if pin is None:  # an optional pin not wired (fan pins on a controller, alert lines)
            continue
        if pin in owners:
            raise ConfigError(f"{key}: pin {pin} is already used by {owners[pin]}")
        owners[pin] = key
    sim_flags = {
        "hardware.i2c_bus": config.hardware.i2c_bus == SIM,
        "hardware.pin_factory": config.hardware.pin_factory == SIM,
    } | {f"slot[{i}].uart": s.uart == SIM for i, s in enumerate(config.slot)}
    difficulty = config.chain.ticket_difficulty
    if difficulty & (difficulty - 1):
        raise ConfigError(f"chain.ticket_difficulty: must be a power of two, got {difficulty}")
    _check_fans(config)
    _check_addresses(config)
    check_pools(config.pool, config.stratum)
    _check_windows(config)
    _check_thermal(config)
    mqtt = config.mqtt
    if mqtt.password_file and not mqtt.username:
        raise ConfigError("mqtt.password_file: needs mqtt.username as well")
    if bool(mqtt.cert_file) != bool(mqtt.key_file):
        raise ConfigError("mqtt.cert_file: needs mqtt.key_file (and the other way round)")
    load_backend(config.bus_backend).check_config(config)
    if len(set(sim_flags.values())) > 1:
        simulated = [k for k, v in sim_flags.items() if v]
        raise ConfigError(
            f"{simulated[0]}: 'sim' must be used for every bus or none "
            f"(simulated: {', '.join(simulated)})"
        )


def _check_fans(config: Config) -> None:
    """Each fan wired the way the backend needs and no other: pins on GPIO, a channel of
    its own on a controller, which must be touched well within its watchdog period."""
    backend = config.hardware.fan_backend
    wanted, unwanted = (
        (_FAN_PINS, ("channel",)) if backend == GPIO_FANS else (("channel",), _FAN_PINS)
    )
    for n, fan in enumerate(config.fan):
        for key in wanted:
            if getattr(fan, key) is None:
                raise ConfigError(f"fan[{n}].{key}: missing; hardware.fan_backend is {backend!r}")
        for key in unwanted:
            if getattr(fan, key) is not None:
                raise ConfigError(
                    f"fan[{n}].{key}: not used when hardware.fan_backend is {backend!r}; remove it"
                )
    hardware = config.hardware
    software_pwm = backend == GPIO_FANS and hardware.pin_factory in SOFTWARE_PWM_FACTORIES
    if software_pwm and hardware.fan_pwm_hz > SOFTWARE_PWM_MAX_HZ:
        raise ConfigError(
            f"hardware.fan_pwm_hz: {hardware.fan_pwm_hz} Hz is beyond the "
            f"{SOFTWARE_PWM_MAX_HZ} Hz the {hardware.pin_factory!r} pin factory can make "
            "(its PWM is software); set it to 10000 or less, or drive the fans from a "
            'controller (fan_backend = "emc2305")'
        )
    if backend != EMC2305:
        return
    if hardware.fan_controller_address not in emc2305.ADDRESSES:
        straps = ", ".join(f"{a:#04x}" for a in emc2305.ADDRESSES)
        raise ConfigError(
            f"hardware.fan_controller_address: {hardware.fan_controller_address:#04x} is not "
            f"one an EMC2305 can be strapped to ({straps})"
        )
    seen: dict[int | None, int] = {}
    for n, fan in enumerate(config.fan):
        if fan.channel in seen:
            raise ConfigError(
                f"fan[{n}].channel: channel {fan.channel} is already fan[{seen[fan.channel]}]'s"
            )
        seen[fan.channel] = n
    if config.agent.poll_interval_s > EMC2305_POLL_MAX_S:
        raise ConfigError(
            f"agent.poll_interval_s: at most {EMC2305_POLL_MAX_S:g} s with the emc2305 fan "
            f"backend: the poll keeps the controller's {emc2305.WATCHDOG_S:g} s watchdog from "
            "taking the fans to full speed"
        )


def _check_addresses(config: Config) -> None:
    owners: dict[int, str] = {config.hardware.psu_address: "hardware.psu_address"}
    if config.hardware.fan_backend == EMC2305:
        address = config.hardware.fan_controller_address
        if address in owners:
            raise ConfigError(
                f"hardware.fan_controller_address: I2C address {address:#04x} is already "
                f"{owners[address]}"
            )
        owners[address] = "hardware.fan_controller_address"
    for i, slot in enumerate(config.slot):
        keys = [("eeprom_address", slot.eeprom_address), ("dcdc_address", slot.dcdc_address)]
        keys += [("hotswap_address", slot.hotswap_address)]
        keys += [(f"temp_addresses[{n}]", a) for n, a in enumerate(slot.temp_addresses)]
        for key, address in keys:
            where = f"slot[{i}].{key}"
            if address in owners:
                raise ConfigError(
                    f"{where}: I2C address {address:#04x} is already {owners[address]}"
                )
            owners[address] = where


def site_caps(config: Config) -> BoardLimits:
    """The site's caps on every module, from `[limits]` (the envelope intersects them with
    what each module declares)."""
    limits = config.limits
    return BoardLimits(
        vout_min_v=limits.board_vout_min_v,
        vout_max_v=limits.board_vout_max_v,
        freq_min_mhz=limits.chip_freq_min_mhz,
        freq_max_mhz=limits.chip_freq_max_mhz,
        power_max_w=limits.board_power_max_w,
    )


_FAN_PINS = ("pwm_pin", "tach_pin")
SOFTWARE_PWM_FACTORIES = ("lgpio", "rpigpio")
SOFTWARE_PWM_MAX_HZ = 10_000  # lgpio's tx_pwm and RPi.GPIO's software PWM
EMC2305_POLL_MAX_S = emc2305.WATCHDOG_S / 2  # a late poll or two still beats the watchdog
_SLOT_PINS = ("presence_pin", "power_pin", "reset_pin", "led_pin", "alert_pin")
