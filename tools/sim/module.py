"""One simulated hashboard module: identity EEPROM, temperature sensors, DC-DC converter,
ASIC chain and the board's thermal mass. It is a physical thing that can be pulled out
of one slot and put back later with the same serial and the same silicon.
"""

from __future__ import annotations

import datetime
import random
from dataclasses import dataclass

from hashbay.drivers.eeprom import BoardIdentity, encode_identity
from hashbay.tools.sim import physics
from hashbay.tools.sim.chain import MIN_CHIP_V, SimChain, SimChip
from hashbay.tools.sim.i2c_devices import SimEeprom, SimTemperatureSensor
from hashbay.tools.sim.pmbus_devices import SimDcDc

DCDC_RATED_W = 1800.0
SHORTED_INPUT_W = 50_000.0  # a shorted input: about 900 A at 54 V
IDLE_ACTIVITY = 0.2  # share of dynamic power a clocked chip burns with no job
SENSOR_OFFSETS_C = (-3.0, 4.0, 0.0, 2.0)  # inlet side cooler, outlet side hotter


@dataclass(frozen=True)
class ModuleSpec:
    chip_model: str
    chip_count: int
    chips_per_domain: int
    ticket_zero_bits: int


class SimModule:
    def __init__(
        self, spec: ModuleSpec, serial: str, rng: random.Random, *, sensors: int, ambient_c: float
    ) -> None:
        self.spec = spec
        self.chip = physics.CHIP_SPECS[spec.chip_model]
        self.identity = _identity(spec, self.chip, serial)
        self.eeprom = SimEeprom(encode_identity(self.identity))
        self.sensors = [SimTemperatureSensor(ambient_c) for _ in range(sensors)]
        self.dcdc = SimDcDc(0)  # address set when seated in a slot
        silicon = physics.make_silicon(self.chip, spec.chip_count, rng)
        self.chain = SimChain(self.chip, silicon, rng, sim_zero_bits=spec.ticket_zero_bits)
        self.thermal = physics.BoardThermal(temp_c=ambient_c)
        self.domains = self.identity.domains
        self.power_w = 0.0
        self.heat_c_per_s = 0.0
        self.shorted = False  # a fault: the module's input is shorted (it stays so, pulled or not)
        self._chip_power_w = [0.0] * spec.chip_count

    @property
    def serial(self) -> str:
        return self.identity.serial

    @property
    def board_v(self) -> float:
        return self.dcdc.vout_v

    @property
    def chip_v(self) -> float:
        return self.board_v / self.domains

    @property
    def temp_c(self) -> float:
        return self.thermal.temp_c

    def chip_temp_c(self, chip: SimChip) -> float:
        return physics.chip_temp_c(self.temp_c, chip.silicon, self._chip_power_w[chip.index])

    def step(self, dt_s: float, *, airflow: float, ambient_c: float, reset_released: bool) -> None:
        """Advance the board: chain power state, chip power, heat, sensors, hashing."""
        chip_v = self.chip_v
        chain, spec, board_c = self.chain, self.chip, self.thermal.temp_c
        chain.set_powered(reset_released and chip_v >= MIN_CHIP_V)
        hashing = chain.current_job is not None
        chip_power_w = self._chip_power_w
        total = 0.0
        for chip in chain.chips:
            silicon = chip.silicon
            if chip_v <= 0:
                watts = 0.0
            elif chain.powered and chip.answering:
                junction_c = physics.chip_temp_c(board_c, silicon, chip_power_w[chip.index])
                watts = physics.chip_power_w(spec, silicon, chip.freq_mhz, chip_v, junction_c)
                if not hashing:
                    static = physics.static_power_w(spec, silicon, chip_v, board_c)
                    watts = static + (watts - static) * IDLE_ACTIVITY
            else:
                watts = physics.static_power_w(spec, silicon, chip_v, board_c)
            chip_power_w[chip.index] = watts
            total += watts
        self.power_w = total
        self.dcdc.iout_a = total / self.board_v if self.board_v > 0 else 0.0
        self.thermal.step(dt_s, total, airflow, ambient_c)
        self.thermal.temp_c += self.heat_c_per_s * dt_s  # a fault: blocked heatsink, hot spot
        for sensor, offset in zip(self.sensors, SENSOR_OFFSETS_C, strict=False):
            sensor.temp_c = self.temp_c + offset
        self.dcdc.temp_c = self.temp_c + 8.0 + total / 200.0
        self.chain.step(dt_s, chip_v, self.chip_temp_c)

    def input_w(self) -> float:
        """What the module draws from the hot-swapped bus (zero while its DC-DC is off-line;
        far past any hot-swap controller's limit when its input is shorted)."""
        if self.shorted:
            return SHORTED_INPUT_W
        if not self.dcdc.powered:
            return 0.0
        return physics.DCDC_LOSSES.input_w(self.power_w, DCDC_RATED_W)


def module_identity(spec: ModuleSpec, serial: str = "HB0000000") -> BoardIdentity:
    """The identity a simulated module of this spec carries in its EEPROM."""
    return _identity(spec, physics.CHIP_SPECS[spec.chip_model], serial)


def _identity(spec: ModuleSpec, chip: physics.ChipSpec, serial: str) -> BoardIdentity:
    domains = spec.chip_count // spec.chips_per_domain
    nominal_mv = round(domains * chip.nominal_chip_v * 1000)
    return BoardIdentity(
        model=f"HB-{chip.name[2:]}-{spec.chip_count}",
        serial=serial,
        chip_model=chip.chip_id,
        chip_count=spec.chip_count,
        chips_per_domain=spec.chips_per_domain,
        manufactured=datetime.date(2026, 3, 2),
        hardware_revision=2,
        nominal_vout_mv=nominal_mv,
        nominal_freq_mhz=round(chip.nominal_freq_mhz),
        vout_min_mv=max(1000, round(nominal_mv * 0.85)),
        vout_max_mv=round(nominal_mv * 1.12),
        freq_min_mhz=50,
        freq_max_mhz=700,
        power_max_w=1800,
    )
