"""PMBus device models: the PSU, a slot's hot-swap controller, a module's DC-DC converter.

Physical quantities are plain attributes that the rig's physics sets every step
(`vin_v`, `load_w`, `temp_c`, ...); these models turn them into register values with
their own register map and codecs (pmbus_wire.py: never the driver's, so a mistake on
either side shows as a disagreement), and model the control behaviour the agent has
to live with: soft start, power good, latched faults that only CLEAR_FAULTS releases,
a converter that vanishes from the bus when its input drops below UVLO. The physics
should step them while holding the bus lock, so no transaction sees half a step.

SMBus/PMBus conduct, as on the parts we model:
- A write carrying exactly one byte more than the command takes is checked as PEC; a
  mismatch drops the command and sets STATUS_CML PEC_FAILED (so STATUS_BYTE CML).
- Reads append the PEC byte after the data; a host reading one byte more gets it, and
  reading further gets 0xFF.
- An unsupported command code is NACKed at the command byte (the host sees EREMOTEIO)
  and sets STATUS_CML INVALID_COMMAND, as TI and ADI parts do. Writing a read-only
  command sets INVALID_COMMAND; reading a write-only one returns 0xFF.
- CLEAR_FAULTS clears the latched status bits; a condition still present sets its bit
  again at once. OFF and POWER_GOOD# are live, never latched.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from hashbay.tools.sim.i2c import nack
from hashbay.tools.sim.pmbus_wire import (
    HOTSWAP_DIRECT,
    OPERATION_ON,
    Cmd,
    Direct,
    StatusCml,
    StatusInput,
    StatusIout,
    StatusTemperature,
    StatusVout,
    StatusWord,
    direct_range,
    linear16_value,
    pec_of_read,
    pec_of_write,
    saturated,
    vout_mode,
)
from hashbay.tools.sim.pmbus_wire import direct as direct_word
from hashbay.tools.sim.pmbus_wire import linear11 as linear11_word
from hashbay.tools.sim.pmbus_wire import linear16 as linear16_word

BLOCK = -1  # Register.size of a block read (count byte first)
_LINEAR11_MAX = 1023 * 2**15
CAPABILITY_PEC_400KHZ_ALERT = 0xB0
PMBUS_REVISION_1_3 = 0x33


@dataclass(frozen=True)
class Register:
    """One command: how many data bytes it carries and what reading/writing does."""

    size: int  # 0 send byte, 1 byte, 2 word, BLOCK
    read: Callable[[], bytes] | None = None
    write: Callable[[bytes], None] | None = None


def word(value: int) -> bytes:
    return (value & 0xFFFF).to_bytes(2, "little")


def linear11(value: float) -> bytes:
    """A reading as its ADC would report it: saturating, never an exception."""
    return word(linear11_word(saturated(value, -_LINEAR11_MAX, _LINEAR11_MAX)))


def linear16(value: float, exponent: int) -> bytes:
    return word(linear16_word(saturated(value, 0.0, math.ldexp(0xFFFF, exponent)), exponent))


def direct(value: float, coefficients: Direct) -> bytes:
    return word(direct_word(saturated(value, *direct_range(coefficients)), coefficients))


SIM_MFR_ID = "HASHBAY-SIM"


class SimPMBusDevice:
    """What every PMBus part shares: the command table, PEC, status registers, faults."""

    def __init__(self, address: int, *, mfr_id: str, mfr_model: str) -> None:
        self.address = address
        self.lost = False  # fault injection: the part stops answering
        self.operation = OPERATION_ON
        self.status_vout = StatusVout(0)
        self.status_iout = StatusIout(0)
        self.status_input = StatusInput(0)
        self.status_temperature = StatusTemperature(0)
        self.status_cml = StatusCml(0)
        self._pending: bytes | None = None
        self.registers: dict[int, Register] = {
            Cmd.OPERATION: Register(1, self._read_operation, self._write_operation),
            Cmd.CLEAR_FAULTS: Register(0, write=lambda _: self.clear_faults()),
            Cmd.CAPABILITY: Register(1, lambda: bytes((CAPABILITY_PEC_400KHZ_ALERT,))),
            Cmd.PMBUS_REVISION: Register(1, lambda: bytes((PMBUS_REVISION_1_3,))),
            Cmd.STATUS_BYTE: Register(1, lambda: bytes((self.status_word() & 0xFF,))),
            Cmd.STATUS_WORD: Register(2, lambda: word(self.status_word())),
            Cmd.STATUS_VOUT: Register(1, lambda: bytes((self.status_vout,))),
            Cmd.STATUS_IOUT: Register(1, lambda: bytes((self.status_iout,))),
            Cmd.STATUS_INPUT: Register(1, lambda: bytes((self.status_input,))),
            Cmd.STATUS_TEMPERATURE: Register(1, lambda: bytes((self.status_temperature,))),
            Cmd.STATUS_CML: Register(1, lambda: bytes((self.status_cml,))),
            Cmd.MFR_ID: Register(BLOCK, lambda: mfr_id.encode("ascii")),
            Cmd.MFR_MODEL: Register(BLOCK, lambda: mfr_model.encode("ascii")),
        }

    # -- what subclasses model ---------------------------------------------------------

    @property
    def answering(self) -> bool:
        return not self.lost

    @property
    def output_on(self) -> bool:
        return bool(self.operation & OPERATION_ON)

    @property
    def power_good(self) -> bool:
        return self.output_on

    def _update(self) -> None:
        """Re-evaluate live conditions from the physical attributes (before any read)."""

    def step(self, dt_s: float) -> None:
        self._update()

    def _read_operation(self) -> bytes:
        return bytes((self.operation,))

    def _write_operation(self, data: bytes) -> None:
        self.operation = data[0]

    def clear_faults(self) -> None:
        self.status_vout = StatusVout(0)
        self.status_iout = StatusIout(0)
        self.status_input = StatusInput(0)
        self.status_temperature = StatusTemperature(0)
        self.status_cml = StatusCml(0)
        self._update()

    # -- status ------------------------------------------------------------------------

    def status_word(self) -> StatusWord:
        self._update()
        w = StatusWord(0)
        summary = (
            (self.status_vout, StatusWord.VOUT, StatusVout.OV_FAULT, StatusWord.VOUT_OV_FAULT),
            (self.status_iout, StatusWord.IOUT_POUT, StatusIout.OC_FAULT, StatusWord.IOUT_OC_FAULT),
            (
                self.status_input,
                StatusWord.INPUT,
                StatusInput.VIN_UV_FAULT,
                StatusWord.VIN_UV_FAULT,
            ),
        )
        for detail, high_bit, low_detail, low_bit in summary:
            if detail:
                w |= high_bit
            if detail & low_detail:
                w |= low_bit
            if int(detail) & ~int(low_detail):
                w |= StatusWord.NONE_OF_THE_ABOVE
        if self.status_temperature:
            w |= StatusWord.TEMPERATURE
        if self.status_cml:
            w |= StatusWord.CML
        if not self.output_on:
            w |= StatusWord.OFF
        if not self.power_good:
            w |= StatusWord.POWER_GOOD_N
        return w

    # -- the wire ------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.answering:
            raise nack()
        if not data:
            return
        if data[0] not in self.registers:
            self.status_cml |= StatusCml.INVALID_COMMAND
            raise nack()
        self._pending = data

    def read(self, length: int) -> bytes:
        if not self.answering:
            raise nack()
        pending, self._pending = self._pending, None
        if pending is None or len(pending) != 1:
            self.status_cml |= StatusCml.OTHER_COMMUNICATION_FAULT  # receive byte: unsupported
            return b"\xff" * length
        command = pending[0]
        register = self.registers[command]
        if register.read is None:
            self.status_cml |= StatusCml.INVALID_COMMAND
            return b"\xff" * length
        self._update()
        data = register.read()
        if register.size == BLOCK:
            data = bytes((len(data),)) + data
        data += bytes((pec_of_read(self.address, command, data),))
        return data[:length].ljust(length, b"\xff")

    def stop(self) -> None:
        """A write takes effect at STOP, as on real parts."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._execute(pending)

    def _execute(self, data: bytes) -> None:
        register = self.registers[data[0]]
        payload = data[1:]
        if register.write is None:
            if payload:
                self.status_cml |= StatusCml.INVALID_COMMAND
            return  # a bare command byte with no read after it: nothing to do
        if len(payload) == register.size + 1:
            if pec_of_write(self.address, data[:-1]) != data[-1]:
                self.status_cml |= StatusCml.PEC_FAILED
                return
            payload = payload[:-1]
        elif len(payload) != register.size:
            self.status_cml |= StatusCml.INVALID_DATA
            return
        register.write(payload)


def default_efficiency(load_fraction: float) -> float:
    """A titanium-class PSU curve: ~90 % idle, ~95 % at half load, ~94.5 % at full."""
    x = min(max(load_fraction, 0.0), 1.2)
    return 0.96 - 0.06 * (1.0 - min(x, 1.0)) ** 4 - 0.015 * x**2


class SimPsu(SimPMBusDevice):
    """The miner's PSU: AC in, regulated 54 V out, with brown-out behaviour.

    Input sag: below 200 V a UV warning; below 170 V the output shuts off (UV fault,
    unit off for low input) until the input is back above 180 V.
    """

    UV_WARN_V = 200.0
    UV_OFF_V = 170.0
    UV_RECOVER_V = 180.0

    def __init__(
        self,
        address: int,
        *,
        rated_w: float = 5000.0,
        nominal_vout_v: float = 54.0,
        efficiency: Callable[[float], float] = default_efficiency,
        standby_w: float = 6.0,
        vout_exponent: int = -10,
        mfr_id: str = SIM_MFR_ID,
        mfr_model: str = "PSU5000-54",
    ) -> None:
        super().__init__(address, mfr_id=mfr_id, mfr_model=mfr_model)
        self.vin_v = 230.0
        self.pout_w = 0.0
        self.temp_c = 30.0
        self.fan_rpm = 0.0
        self.rated_w = rated_w
        self.nominal_vout_v = nominal_vout_v
        self.efficiency = efficiency
        self.standby_w = standby_w
        self.vout_exponent = vout_exponent
        self._input_off = False
        mode = vout_mode(vout_exponent)
        self.registers.update(
            {
                Cmd.VOUT_MODE: Register(1, lambda: bytes((mode,))),
                Cmd.READ_VIN: Register(2, lambda: linear11(self.vin_v)),
                Cmd.READ_IIN: Register(2, lambda: linear11(self.iin_a)),
                Cmd.READ_PIN: Register(2, lambda: linear11(self.pin_w)),
                Cmd.READ_VOUT: Register(2, lambda: linear16(self.vout_v, vout_exponent)),
                Cmd.READ_IOUT: Register(2, lambda: linear11(self.iout_a)),
                Cmd.READ_POUT: Register(2, lambda: linear11(self.delivered_w)),
                Cmd.READ_TEMPERATURE_1: Register(2, lambda: linear11(self.temp_c)),
                Cmd.READ_FAN_SPEED_1: Register(2, lambda: linear11(self.fan_rpm)),
            }
        )

    def _update(self) -> None:
        if self.vin_v < self.UV_WARN_V:
            self.status_input |= StatusInput.VIN_UV_WARNING
        if self.vin_v < self.UV_OFF_V:
            self._input_off = True
            self.status_input |= StatusInput.VIN_UV_FAULT | StatusInput.UNIT_OFF_LOW_INPUT
        elif self._input_off and self.vin_v > self.UV_RECOVER_V:
            self._input_off = False

    @property
    def output_on(self) -> bool:
        return bool(self.operation & OPERATION_ON) and not self._input_off

    @property
    def vout_v(self) -> float:
        self._update()
        return self.nominal_vout_v if self.output_on else 0.0

    @property
    def delivered_w(self) -> float:
        """What the output really supplies: pout_w while on, nothing while off."""
        return self.pout_w if self.output_on else 0.0

    @property
    def iout_a(self) -> float:
        vout = self.vout_v
        return self.delivered_w / vout if vout > 0 else 0.0

    @property
    def pin_w(self) -> float:
        delivered = self.delivered_w
        if delivered <= 0:
            return self.standby_w
        return self.standby_w + delivered / self.efficiency(delivered / self.rated_w)

    @property
    def iin_a(self) -> float:
        return self.pin_w / self.vin_v if self.vin_v > 1.0 else 0.0


class SimHotSwap(SimPMBusDevice):
    """A slot's hot-swap controller (backplane side, powered from the standby rail).

    The FET conducts when the slot's GPIO enable is high, OPERATION is on (its power-up
    default, so the GPIO normally decides), the input is above UVLO and no fault is
    latched. Turning on ramps the output over `soft_start_s`, charging the module's
    input capacitance (inrush = C·dV/dt). `load_w` is what the module draws from the
    output; the physics reports 0 while the module's converter is below its UVLO.
    An output current above `oc_limit_a` latches a fault until CLEAR_FAULTS.
    """

    def __init__(
        self,
        address: int,
        *,
        soft_start_s: float = 0.05,
        input_capacitance_f: float = 2e-3,
        oc_limit_a: float = 45.0,
        uvlo_v: float = 36.0,
    ) -> None:
        super().__init__(address, mfr_id=SIM_MFR_ID, mfr_model="HSC60-54")
        self.enable_pin = False
        self.vin_v = 0.0
        self.load_w = 0.0
        self.temp_c = 30.0
        self.soft_start_s = soft_start_s
        self.input_capacitance_f = input_capacitance_f
        self.oc_limit_a = oc_limit_a
        self.uvlo_v = uvlo_v
        self._vout_v = 0.0
        self._inrush_a = 0.0
        self._tripped = False
        c = HOTSWAP_DIRECT
        self.registers.update(
            {
                Cmd.READ_VIN: Register(2, lambda: direct(self.vin_v, c[Cmd.READ_VIN])),
                Cmd.READ_VOUT: Register(2, lambda: direct(self.vout_v, c[Cmd.READ_VOUT])),
                Cmd.READ_IOUT: Register(2, lambda: direct(self.iout_a, c[Cmd.READ_IOUT])),
                Cmd.READ_PIN: Register(2, lambda: direct(self.pin_w, c[Cmd.READ_PIN])),
                Cmd.READ_TEMPERATURE_1: Register(2, lambda: linear11(self.temp_c)),
            }
        )

    @property
    def on(self) -> bool:
        """The FET is conducting."""
        return (
            self.enable_pin
            and bool(self.operation & OPERATION_ON)
            and not self._tripped
            and self.vin_v >= self.uvlo_v
        )

    @property
    def output_on(self) -> bool:
        return self.on

    @property
    def tripped(self) -> bool:
        return self._tripped

    @property
    def vout_v(self) -> float:
        self._update()
        return self._vout_v

    @property
    def inrush_a(self) -> float:
        return self._inrush_a

    @property
    def iout_a(self) -> float:
        vout = self.vout_v
        load_a = self.load_w / vout if vout > 1.0 else 0.0
        return load_a + self._inrush_a

    @property
    def pin_w(self) -> float:
        return self.vin_v * self.iout_a

    @property
    def power_good(self) -> bool:
        return self.on and self.vin_v > 0 and self._vout_v > 0.9 * self.vin_v

    def _update(self) -> None:
        if not self.on:
            self._vout_v = 0.0
            self._inrush_a = 0.0
        elif self._vout_v > self.vin_v:
            self._vout_v = self.vin_v

    def step(self, dt_s: float) -> None:
        self._update()
        if not self.on or dt_s <= 0:
            return
        rise_v = min(self.vin_v - self._vout_v, self.vin_v / self.soft_start_s * dt_s)
        self._vout_v += rise_v
        self._inrush_a = self.input_capacitance_f * rise_v / dt_s
        if self.iout_a > self.oc_limit_a:
            self._trip()

    def inject_overcurrent(self) -> None:
        self._trip()

    def _trip(self) -> None:
        self._tripped = True
        self.status_iout |= StatusIout.OC_FAULT
        self._update()

    def clear_faults(self) -> None:
        self._tripped = False
        super().clear_faults()


class SimDcDc(SimPMBusDevice):
    """A module's DC-DC converter making the board rail from the hot-swapped 54 V.

    It is powered from its own input, so below UVLO it is not on the bus at all and, like
    the real part, forgets its settings: power-up is OPERATION off and the default
    VOUT_COMMAND. Over-current (`oc_limit_a`) and over-temperature (`ot_fault_c`) turn
    the output off until CLEAR_FAULTS; commands above VOUT_MAX are clamped and flagged.
    """

    def __init__(
        self,
        address: int,
        *,
        uvlo_v: float = 40.0,
        oc_limit_a: float = 120.0,
        ot_fault_c: float = 125.0,
        ot_warn_c: float = 110.0,
        vout_max_v: float = 16.0,
        default_vout_v: float = 12.0,
        vout_exponent: int = -9,
    ) -> None:
        super().__init__(address, mfr_id=SIM_MFR_ID, mfr_model="DCDC120-16")
        self.vin_v = 0.0
        self.iout_a = 0.0
        self.temp_c = 30.0
        self.uvlo_v = uvlo_v
        self.oc_limit_a = oc_limit_a
        self.ot_fault_c = ot_fault_c
        self.ot_warn_c = ot_warn_c
        self.vout_max_v = vout_max_v
        self.default_vout_v = default_vout_v
        self.vout_exponent = vout_exponent
        self._tripped = False
        self._was_powered = False
        self.operation = 0x00
        self.vout_command = linear16_word(default_vout_v, vout_exponent)
        mode = vout_mode(vout_exponent)
        self.registers.update(
            {
                Cmd.VOUT_MODE: Register(1, lambda: bytes((mode,))),
                Cmd.VOUT_COMMAND: Register(2, lambda: word(self.vout_command), self._command),
                Cmd.READ_VIN: Register(2, lambda: linear11(self.vin_v)),
                Cmd.READ_VOUT: Register(2, lambda: linear16(self.vout_v, vout_exponent)),
                Cmd.READ_IOUT: Register(2, lambda: linear11(self.iout_a)),
                Cmd.READ_TEMPERATURE_1: Register(2, lambda: linear11(self.temp_c)),
            }
        )

    @property
    def powered(self) -> bool:
        return self.vin_v > self.uvlo_v

    @property
    def answering(self) -> bool:
        self._update()
        return self.powered and not self.lost

    @property
    def vout_command_v(self) -> float:
        return linear16_value(self.vout_command, self.vout_exponent)

    @property
    def output_on(self) -> bool:
        return self.powered and bool(self.operation & OPERATION_ON) and not self._tripped

    @property
    def tripped(self) -> bool:
        return self._tripped

    @property
    def vout_v(self) -> float:
        self._update()
        return self.vout_command_v if self.output_on else 0.0

    def _command(self, data: bytes) -> None:
        requested = int.from_bytes(data, "little")
        ceiling = linear16_word(self.vout_max_v, self.vout_exponent)
        if requested > ceiling:
            self.status_vout |= StatusVout.VOUT_MAX_MIN_WARNING
            requested = ceiling
        self.vout_command = requested

    def _power_up_state(self) -> None:
        self.operation = 0x00
        self.vout_command = linear16_word(self.default_vout_v, self.vout_exponent)
        self._tripped = False
        self._pending = None
        super().clear_faults()

    def _update(self) -> None:
        if not self.powered:
            if self._was_powered:
                self._was_powered = False
                self._power_up_state()
            return
        self._was_powered = True
        if self.iout_a > self.oc_limit_a:
            self._trip()
        if self.temp_c >= self.ot_warn_c:
            self.status_temperature |= StatusTemperature.OT_WARNING
        if self.temp_c >= self.ot_fault_c:
            self.status_temperature |= StatusTemperature.OT_FAULT
            self._tripped = True

    def inject_overcurrent(self) -> None:
        self._trip()

    def _trip(self) -> None:
        self._tripped = True
        self.status_iout |= StatusIout.OC_FAULT

    def clear_faults(self) -> None:
        self._tripped = False
        super().clear_faults()
