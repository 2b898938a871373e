"""The hardware of one slot, seen from the agent: the backplane's pins and hot-swap
controller, and — while a module is seated — its EEPROM, sensors, DC-DC and ASIC chain.

Methods here are blocking bus I/O meant for the rig's hardware thread; the slot state
machine sequences them. Powering off is always allowed and tries every step even when
one fails, because it is the path out of trouble.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from hashbay.agent.daemon.config import SlotSection
from hashbay.drivers.eeprom import BoardIdentity, Eeprom24C02
from hashbay.drivers.envelope import SafetyEnvelope
from hashbay.drivers.errors import HardwareError, ProtocolError
from hashbay.drivers.i2c import BusErrors, DeviceCounts, I2CBus
from hashbay.drivers.lm75 import AlertLimits, TemperatureSensor
from hashbay.drivers.pmbus import DcDc, DcDcTelemetry, HotSwap, HotSwapTelemetry
from hashbay.drivers.slot_pins import SlotPins

log = structlog.get_logger("hashbay.slot_hw")


@dataclass(frozen=True)
class RailReading:
    """Module rails and temperatures from one poll; None where a device did not answer."""

    temps_c: tuple[float | None, ...]
    dcdc: DcDcTelemetry | None
    hotswap: HotSwapTelemetry | None
    fault: str | None  # latched DC-DC or hot-swap fault in words


class SlotHardware:
    def __init__(
        self,
        index: int,
        config: SlotSection,
        bus: I2CBus,
        pin_factory: Any,
        envelope: SafetyEnvelope,
        *,
        pec: bool,
        debounce_s: float,
        clock: Callable[[], float],
        on_presence_edge: Callable[[], None] | None = None,
        on_alert: Callable[[], None] | None = None,
        bus_errors: BusErrors | None = None,
    ) -> None:
        self.index = index
        self._bus_errors = bus_errors or BusErrors()
        self.uart = config.uart
        self.pins = SlotPins(
            config.presence_pin,
            config.power_pin,
            config.reset_pin,
            config.led_pin,
            pin_factory,
            debounce_s=debounce_s,
            clock=clock,
            on_presence_edge=on_presence_edge,
            alert_pin=config.alert_pin,
            on_alert=on_alert,
        )
        name = f"slot {index}"
        self.hotswap = HotSwap(bus, index, config.hotswap_address, envelope, pec=pec)
        self.dcdc = DcDc(bus, index, config.dcdc_address, envelope, pec=pec)
        self.eeprom = Eeprom24C02(bus, config.eeprom_address, f"{name} EEPROM")
        self.sensors = [
            TemperatureSensor(bus, address, f"{name} sensor {n}")
            for n, address in enumerate(config.temp_addresses)
        ]
        self._configured_sensors: set[int] = set()
        self._devices = [
            ("EEPROM", config.eeprom_address),
            *((f"sensor {n}", a) for n, a in enumerate(config.temp_addresses)),
            ("DC-DC", config.dcdc_address),
            ("hot-swap", config.hotswap_address),
        ]

    def bus_devices(self) -> list[tuple[str, int, DeviceCounts]]:
        """Each device of the slot with its transaction counts (no bus traffic)."""
        return [(name, a, self._bus_errors.counts(a)) for name, a in self._devices]

    # -- identity and power ------------------------------------------------------------

    def read_identity(self) -> BoardIdentity:
        return self.eeprom.read_identity()

    def clear_latched_faults(self) -> None:
        """CLEAR_FAULTS to the slot's hot-swap controller: its datasheet latches an
        over-current (and keeps the FET off) until the host clears it. Done before each
        power-up, so a latch from an earlier trip never keeps a module dead; a fault still
        present sets again at once and is caught as before. (The module's DC-DC is off
        the bus until powered; `rail_on` clears it.)"""
        self.hotswap.clear_faults()

    def arm_alerts(self, over_c: float, release_c: float, fault_queue: int) -> AlertLimits:
        """Program every sensor's OS/ALERT comparator (they share the slot's alert line)
        and prove each took it; returns what the first one holds (they all hold the same).
        Raises HardwareError or ProtocolError naming the sensor that did not."""
        armed = [sensor.arm_alert(over_c, release_c, fault_queue) for sensor in self.sensors]
        return armed[0]

    def hotswap_on(self) -> None:
        """Enable line first (the backplane's hard switch), then OPERATION on."""
        self.pins.hold_reset(True)
        self.pins.enable_power(True)
        self.hotswap.on()

    def power_good(self) -> bool:
        return self.hotswap.power_good()

    def rail_on(self, volts: float) -> float:
        """Program the module's rail and switch it on; the DC-DC answers once powered (and
        any fault it latched before is cleared first)."""
        self.dcdc.clear_faults()
        written = self.dcdc.set_vout(volts)
        self.dcdc.on()
        return written

    def set_rail_v(self, volts: float) -> float:
        """Move a running rail (the converter slews; the envelope checks the value)."""
        return self.dcdc.set_vout(volts)

    def rail_v(self) -> float:
        return self.dcdc.read_telemetry().vout_v

    def power_off(self) -> list[str]:
        """Chain into reset, DC-DC off, hot-swap off, enable low. Returns what failed."""
        problems = []
        self.pins.hold_reset(True)
        for what, step in (("DC-DC off", self.dcdc.off), ("hot-swap off", self.hotswap.off)):
            try:
                step()
            except (HardwareError, ProtocolError) as exc:
                problems.append(f"{what}: {exc}")
        self.pins.enable_power(False)
        self._configured_sensors.clear()
        return problems

    def output_off(self) -> bool:
        """Whether the slot's output is really off (what makes a module safe to pull)."""
        reading = self.hotswap.read_telemetry()
        return not self.pins.power_enabled and reading.vout_v < 5.0

    def safe(self) -> None:
        """The hard cut, from any thread: enable line low and chain in reset."""
        self.pins.safe()

    # -- sensors and rails -------------------------------------------------------------

    def read_temps(self) -> tuple[float | None, ...]:
        """Every sensor's reading; None for one that did not answer (protection decides)."""
        temps: list[float | None] = []
        for n, sensor in enumerate(self.sensors):
            try:
                if n not in self._configured_sensors:
                    sensor.configure()
                    self._configured_sensors.add(n)
                temps.append(sensor.read_c())
            except (HardwareError, ProtocolError) as exc:
                if _not_acknowledged(exc):  # it may have lost power: configure it again
                    self._configured_sensors.discard(n)
                temps.append(None)
        return tuple(temps)

    def read_rails(self) -> RailReading:
        temps = self.read_temps()
        dcdc = hotswap = None
        faults = []
        with contextlib.suppress(HardwareError, ProtocolError):
            dcdc = self.dcdc.read_telemetry()
            faults += [f"DC-DC {words}" for words in self.dcdc.status().faults()]
        with contextlib.suppress(HardwareError, ProtocolError):
            hotswap = self.hotswap.read_telemetry()
            faults += [f"hot-swap {words}" for words in self.hotswap.status().faults()]
        return RailReading(temps, dcdc, hotswap, "; ".join(faults) or None)

    def rail_faults(self) -> str | None:
        """Latched DC-DC and hot-swap faults in words (status words only: two reads)."""
        faults = []
        with contextlib.suppress(HardwareError, ProtocolError):
            faults += [f"DC-DC {words}" for words in self.dcdc.status().faults()]
        with contextlib.suppress(HardwareError, ProtocolError):
            faults += [f"hot-swap {words}" for words in self.hotswap.status().faults()]
        return "; ".join(faults) or None

    def close(self) -> None:
        self.pins.close()


def _not_acknowledged(exc: Exception) -> bool:
    """A device that did not answer at all (absent, unpowered), rather than a garbled
    transaction on a noisy bus."""
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno in (errno.EREMOTEIO, errno.ENXIO)
