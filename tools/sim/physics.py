"""The simulated rig's physics: chip power, timing margin, errors, heat, conversion, noise.

No real miner is attached, so the agent's fan control, power targets, autotuner and health
model can only learn something if the simulator has the same trade-offs as real silicon:
power grows with V²·f and with temperature, the highest clean frequency grows with voltage
and shrinks with heat and age, and every chip on a board is a little different. The numbers
are calibrated to public figures for S19 XP / S21 / S21 Pro class hashboards.

Everything here is a pure function of its arguments, or a small model advanced by an
explicit `dt_s`: no wall clock, no global random state, so a seeded run replays exactly and
runs as fast as the host allows.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# -- chips -----------------------------------------------------------------------------

REF_TEMP_C = 65.0
"""Junction temperature at which the per-chip constants below are calibrated."""

STATIC_DOUBLING_C = 50.0
"""Leakage doubles every this many degrees: hot boards waste power on top of the heat."""

STATIC_E_FOLD_V = 0.30
"""Leakage grows by e for every this many volts (drain-induced barrier lowering)."""

FREQ_DERATE_PER_C = 0.0015
"""Fractional loss of timing margin per degree above REF_TEMP_C (gain below it)."""

STABLE_ERROR = 1e-3
"""A chip's stable frequency is where its timing errors reach this share of nonces."""

HEALTHY_ERROR_FLOOR = 1e-6
"""Errors a sound chip makes at any frequency (supply noise, marginal cores)."""

DEGRADED_FREQ_LOSS = 0.25
"""Share of the stable frequency an aging chip has lost when its degradation reaches 1."""

DEFAULT_DOMAINS = 42
"""Series voltage domains on the reference board: 126 chips, 3 per domain."""


@dataclass(frozen=True)
class ChipSpec:
    """One ASIC model: its identity and the electrical constants of a typical die.

    Dynamic power is `c_eff_nf`·V²·f; static power is `static_w` at `nominal_chip_v` and
    REF_TEMP_C; the stable frequency is proportional to the overdrive V - `threshold_v`.
    """

    name: str
    chip_id: int
    small_cores: int
    nominal_freq_mhz: float
    nominal_chip_v: float
    nominal_power_w: float
    c_eff_nf: float
    static_w: float
    threshold_v: float
    stable_freq_mhz: float


def _calibrated(
    name: str,
    chip_id: int,
    small_cores: int,
    *,
    freq_mhz: float,
    chip_v: float,
    power_w: float,
    static_share: float,
    threshold_v: float,
    stable_freq_mhz: float,
) -> ChipSpec:
    """A spec whose typical chip draws `power_w` at the stock point, `static_share` of it static.

    Calibrating from an operating point keeps the published figures (clock, volts, J/TH)
    visible in the table instead of derived capacitances nobody can check.
    """
    static_w = power_w * static_share
    c_eff_nf = (power_w - static_w) / (chip_v**2 * freq_mhz * 1e-3)
    return ChipSpec(
        name=name,
        chip_id=chip_id,
        small_cores=small_cores,
        nominal_freq_mhz=freq_mhz,
        nominal_chip_v=chip_v,
        nominal_power_w=power_w,
        c_eff_nf=c_eff_nf,
        static_w=static_w,
        threshold_v=threshold_v,
        stable_freq_mhz=stable_freq_mhz,
    )


CHIP_SPECS: dict[str, ChipSpec] = {
    spec.name: spec
    for spec in (
        # S19 XP class: ~19 J/TH at the chip (21.5 J/TH at the wall).
        _calibrated(
            "BM1366", 0x1366, 894, freq_mhz=485.0, chip_v=0.34, power_w=8.3,
            static_share=0.30, threshold_v=0.23, stable_freq_mhz=520.0,
        ),
        # S21 class: ~16.5 J/TH at the chip (17.5 J/TH at the wall).
        _calibrated(
            "BM1368", 0x1368, 1276, freq_mhz=490.0, chip_v=0.32, power_w=10.3,
            static_share=0.30, threshold_v=0.22, stable_freq_mhz=530.0,
        ),
        # S21 Pro class: ~13.5 J/TH at the chip (15 J/TH at the wall).
        _calibrated(
            "BM1370", 0x1370, 2040, freq_mhz=560.0, chip_v=0.31, power_w=15.4,
            static_share=0.30, threshold_v=0.22, stable_freq_mhz=600.0,
        ),
    )
}  # fmt: skip


def spec_for_chip_id(chip_id: int) -> ChipSpec:
    """The spec for the id a chip reports in register 0x00 (e.g. 0x1368)."""
    for spec in CHIP_SPECS.values():
        if spec.chip_id == chip_id:
            return spec
    known = ", ".join(f"0x{spec.chip_id:04x}" for spec in CHIP_SPECS.values())
    raise KeyError(f"unknown chip id 0x{chip_id:04x}; the simulator models {known}")


def hashrate_hs(spec: ChipSpec, freq_mhz: float) -> float:
    """Hashes per second: every small core tries one nonce per clock."""
    return freq_mhz * 1e6 * spec.small_cores


SPEED_SIGMA = 0.02
"""Spread of stable frequencies between dies: about ±5 % at 2.5 sigma."""

STATIC_SIGMA = 0.25
"""Spread of leakage, log-normal: the widest of the process parameters."""

SPEED_STATIC_CORRELATION = 0.6
"""Fast dies leak more: both follow from a lower threshold voltage."""

HOTSPOT_RISE_C = (5.0, 11.0)
"""Junction above the board at the stock point: heat-sink contact and position vary."""

ERROR_WIDTH_MHZ = (3.0, 8.0)
"""How many MHz past its stable frequency a die's errors grow e-fold, lowest to highest."""


@dataclass(frozen=True)
class SiliconSample:
    """What makes one die differ from its neighbours (process spread, mounting).

    `ref_stable_freq_mhz` is its stable frequency at the spec's nominal voltage and
    REF_TEMP_C; `static_scale` multiplies the spec's leakage; `hotspot_c_per_w` is how
    far its junction runs above the board per watt it draws; `error_width_mhz` is how
    gradually its errors rise past the stable frequency.
    """

    ref_stable_freq_mhz: float
    static_scale: float
    hotspot_c_per_w: float
    error_width_mhz: float

    @classmethod
    def typical(cls, spec: ChipSpec) -> SiliconSample:
        """The median die: the one the spec is calibrated on."""
        rise_c = sum(HOTSPOT_RISE_C) / 2
        width_mhz = sum(ERROR_WIDTH_MHZ) / 2
        return cls(spec.stable_freq_mhz, 1.0, rise_c / spec.nominal_power_w, width_mhz)


def make_silicon(spec: ChipSpec, count: int, rng: random.Random) -> list[SiliconSample]:
    """`count` dies drawn from the process spread, reproducibly from `rng`.

    Speed and leakage are drawn correlated, so the fastest chip is not automatically the
    most efficient one: that is what makes per-chip tuning worth doing.
    """
    independent = math.sqrt(1.0 - SPEED_STATIC_CORRELATION**2)
    samples = []
    for _ in range(count):
        speed_z = _clip_sigma(rng.gauss(0.0, 1.0))
        static_z = SPEED_STATIC_CORRELATION * speed_z + independent * _clip_sigma(
            rng.gauss(0.0, 1.0)
        )
        samples.append(
            SiliconSample(
                ref_stable_freq_mhz=spec.stable_freq_mhz * (1.0 + SPEED_SIGMA * speed_z),
                static_scale=math.exp(STATIC_SIGMA * static_z),
                hotspot_c_per_w=rng.uniform(*HOTSPOT_RISE_C) / spec.nominal_power_w,
                error_width_mhz=rng.uniform(*ERROR_WIDTH_MHZ),
            )
        )
    return samples


def _clip_sigma(z: float) -> float:
    """No die beyond three sigma: those are binned out at the factory."""
    return max(-3.0, min(3.0, z))


_STATIC_E_FOLD_C = STATIC_DOUBLING_C / math.log(2.0)


def static_power_w(spec: ChipSpec, sample: SiliconSample, chip_v: float, temp_c: float) -> float:
    """Leakage: drawn whatever the clock, exponential in temperature and in voltage.

    One exponential for both: the rig evaluates this for every chip at every step.
    """
    return (
        spec.static_w
        * sample.static_scale
        * math.exp(
            (chip_v - spec.nominal_chip_v) / STATIC_E_FOLD_V
            + (temp_c - REF_TEMP_C) / _STATIC_E_FOLD_C
        )
    )


def chip_power_w(
    spec: ChipSpec, sample: SiliconSample, freq_mhz: float, chip_v: float, temp_c: float
) -> float:
    """Core power of one chip: switching (C·V²·f) plus leakage."""
    if freq_mhz < 0 or chip_v < 0:
        raise ValueError(f"frequency {freq_mhz} MHz and voltage {chip_v} V must be >= 0")
    dynamic_w = spec.c_eff_nf * 1e-9 * chip_v**2 * freq_mhz * 1e6
    return dynamic_w + static_power_w(spec, sample, chip_v, temp_c)


def stable_freq_mhz(
    spec: ChipSpec,
    sample: SiliconSample,
    chip_v: float,
    temp_c: float,
    degradation: float = 0.0,
) -> float:
    """The highest clock at which this die errs on only STABLE_ERROR of its nonces.

    Gate delay shrinks with overdrive (V - threshold), so the clean clock grows about
    linearly with it; heat slows the gates; an aging die loses margin.
    """
    _check_degradation(degradation)
    overdrive = max(0.0, chip_v - spec.threshold_v) / (spec.nominal_chip_v - spec.threshold_v)
    thermal = max(0.0, 1.0 - FREQ_DERATE_PER_C * (temp_c - REF_TEMP_C))
    aging = 1.0 - DEGRADED_FREQ_LOSS * degradation
    return sample.ref_stable_freq_mhz * overdrive * thermal * aging


def error_floor(degradation: float) -> float:
    """Errors at any clock: 1e-6 when healthy, rising tenfold per sixth of the way to dead.

    Log-linear on purpose: a degradation that grows steadily over hours shows up as an
    error rate that grows exponentially, the trend predictive maintenance looks for.
    """
    _check_degradation(degradation)
    return math.pow(HEALTHY_ERROR_FLOOR, 1.0 - degradation)


_STABLE_LOGIT = math.log(STABLE_ERROR / (1.0 - STABLE_ERROR))


def error_probability(
    spec: ChipSpec,
    sample: SiliconSample,
    freq_mhz: float,
    chip_v: float,
    temp_c: float,
    *,
    degradation: float = 0.0,
) -> float:
    """Share of this chip's nonces that are wrong (hardware errors), in [0, 1].

    Past the stable frequency more and more paths miss timing, so the share follows a
    logistic curve `error_width_mhz` wide: STABLE_ERROR at the stable frequency, below
    1e-4 a few widths under it, one half about seven widths over it, near 1 beyond.
    """
    floor = error_floor(degradation)
    stable = stable_freq_mhz(spec, sample, chip_v, temp_c, degradation=degradation)
    z = (freq_mhz - stable) / sample.error_width_mhz + _STABLE_LOGIT
    timing = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
    return min(1.0, max(0.0, floor + (1.0 - floor) * timing))


def max_freq_mhz(
    spec: ChipSpec,
    sample: SiliconSample,
    chip_v: float,
    temp_c: float,
    max_error: float,
    *,
    degradation: float = 0.0,
) -> float:
    """The highest clock whose error_probability is at most `max_error` (0 if none is).

    The exact inverse of error_probability, so the oracle needs no search.
    """
    if not 0.0 <= max_error <= 1.0:
        raise ValueError(f"max_error {max_error} must be a share of nonces in [0, 1]")
    floor = error_floor(degradation)
    if max_error >= 1.0:
        return math.inf
    if max_error <= floor:
        return 0.0
    timing = (max_error - floor) / (1.0 - floor)
    z = math.log(timing / (1.0 - timing))
    stable = stable_freq_mhz(spec, sample, chip_v, temp_c, degradation=degradation)
    return max(0.0, stable + sample.error_width_mhz * (z - _STABLE_LOGIT))


def chip_temp_c(board_temp_c: float, sample: SiliconSample, chip_power_w: float) -> float:
    """Junction temperature: the board's plus this die's rise for the power it draws."""
    return board_temp_c + sample.hotspot_c_per_w * chip_power_w


def _check_degradation(degradation: float) -> None:
    if not 0.0 <= degradation <= 1.0:
        raise ValueError(f"degradation {degradation} must be in [0, 1] (0 healthy, 1 dead)")


# -- what a board can do: the oracle the autotuner is scored against ----------------------


JUNCTION_MAX_C = 125.0
"""Above this a die is outside its rating: the oracle does not count on such settings."""


@dataclass(frozen=True)
class OraclePoint:
    """One board setting and what it yields: good hashes only, power at the chips."""

    board_v: float
    chip_v: float
    freqs_mhz: tuple[float, ...]
    error_rates: tuple[float, ...]
    good_hashrate_hs: float
    power_w: float
    hottest_junction_c: float

    @property
    def hashes_per_j(self) -> float:
        return self.good_hashrate_hs / self.power_w if self.power_w > 0 else 0.0

    @property
    def j_per_th(self) -> float:
        if self.good_hashrate_hs <= 0:
            return math.inf
        return self.power_w / (self.good_hashrate_hs * 1e-12)


@dataclass(frozen=True)
class _ChipState:
    freq_mhz: float
    power_w: float
    junction_c: float
    degradation: float


_SELF_HEATING_ROUNDS = 12
_SELF_HEATING_TOLERANCE_C = 1e-9
_CLOCK_MARGIN = 1e-7


def _settle_chip(
    spec: ChipSpec,
    sample: SiliconSample,
    freq_mhz: float,
    chip_v: float,
    board_temp_c: float,
) -> tuple[float, float]:
    """(power_w, junction temp_c) of a chip heating itself at a fixed clock.

    Stops early past JUNCTION_MAX_C: beyond it leakage may run away, with no fixed point.
    """
    junction_c = board_temp_c
    for _ in range(_SELF_HEATING_ROUNDS):
        power_w = chip_power_w(spec, sample, freq_mhz, chip_v, junction_c)
        settled_c = chip_temp_c(board_temp_c, sample, power_w)
        converged = abs(settled_c - junction_c) < _SELF_HEATING_TOLERANCE_C
        junction_c = settled_c
        if converged or junction_c > JUNCTION_MAX_C:
            break
    return chip_power_w(spec, sample, freq_mhz, chip_v, junction_c), junction_c


def board_point(
    spec: ChipSpec,
    samples: Sequence[SiliconSample],
    freqs_mhz: Sequence[float],
    board_v: float,
    temp_c: float,
    *,
    domains: int = DEFAULT_DOMAINS,
    degradation: Sequence[float] | None = None,
) -> OraclePoint:
    """What a board yields at the given per-chip clocks, on the same terms as the oracle.

    This is how an autotuner's result is scored. `temp_c` is the board temperature; each
    junction runs hotter by its own hotspot.
    """
    if len(freqs_mhz) != len(samples):
        raise ValueError(f"{len(freqs_mhz)} frequencies for {len(samples)} chips")
    aging = _aging(samples, degradation)
    chip_v = board_v / domains
    chips = []
    for sample, freq, wear in zip(samples, freqs_mhz, aging, strict=True):
        power_w, junction_c = _settle_chip(spec, sample, freq, chip_v, temp_c)
        chips.append(_ChipState(freq, power_w, junction_c, wear))
    return _tally(spec, samples, board_v, chip_v, chips)


def _tally(
    spec: ChipSpec,
    samples: Sequence[SiliconSample],
    board_v: float,
    chip_v: float,
    chips: Sequence[_ChipState],
) -> OraclePoint:
    errors = [
        error_probability(
            spec, sample, chip.freq_mhz, chip_v, chip.junction_c, degradation=chip.degradation
        )
        for sample, chip in zip(samples, chips, strict=True)
    ]
    good_hs = sum(
        hashrate_hs(spec, chip.freq_mhz) * (1.0 - error)
        for chip, error in zip(chips, errors, strict=True)
    )
    return OraclePoint(
        board_v=board_v,
        chip_v=chip_v,
        freqs_mhz=tuple(chip.freq_mhz for chip in chips),
        error_rates=tuple(errors),
        good_hashrate_hs=good_hs,
        power_w=sum(chip.power_w for chip in chips),
        hottest_junction_c=max((chip.junction_c for chip in chips), default=math.nan),
    )


def efficiency_oracle(
    spec: ChipSpec,
    samples: Sequence[SiliconSample],
    board_v_choices: Iterable[float],
    temp_c: float,
    max_error: float,
    *,
    domains: int = DEFAULT_DOMAINS,
    degradation: Sequence[float] | None = None,
    freq_min_mhz: float = 0.0,
    freq_max_mhz: float = math.inf,
) -> OraclePoint:
    """The most good hashes per joule this board can give: the autotuner's upper bound.

    For each board voltage every chip runs at its highest clock with errors at most
    `max_error` (a chip that cannot reach `freq_min_mhz` idles and only leaks); the best
    voltage wins. At a fixed voltage a higher clock always spreads the leakage over more
    hashes, so the highest clean clock is also the most efficient one. `temp_c` is the
    board temperature; junctions self-heat, which the clock choice accounts for. A
    voltage at which some chip's junction would pass JUNCTION_MAX_C is not considered.
    """
    aging = _aging(samples, degradation)
    best: OraclePoint | None = None
    for board_v in board_v_choices:
        chip_v = board_v / domains
        chips = []
        for sample, wear in zip(samples, aging, strict=True):
            freq, junction_c = _best_clock(
                spec,
                sample,
                chip_v,
                temp_c,
                max_error=max_error,
                degradation=wear,
                freq_min_mhz=freq_min_mhz,
                freq_max_mhz=freq_max_mhz,
            )
            if junction_c > JUNCTION_MAX_C:
                break
            power_w = chip_power_w(spec, sample, freq, chip_v, junction_c)
            chips.append(_ChipState(freq, power_w, junction_c, wear))
        else:
            point = _tally(spec, samples, board_v, chip_v, chips)
            if best is None or point.hashes_per_j > best.hashes_per_j:
                best = point
    if best is None:
        raise ValueError(
            "efficiency_oracle found no usable board voltage: none given, or every one "
            f"would push a junction past {JUNCTION_MAX_C} °C"
        )
    return best


def _best_clock(
    spec: ChipSpec,
    sample: SiliconSample,
    chip_v: float,
    board_temp_c: float,
    *,
    max_error: float,
    degradation: float,
    freq_min_mhz: float,
    freq_max_mhz: float,
) -> tuple[float, float]:
    """(freq_mhz, junction temp_c): one chip's highest clean clock, with its self-heating.

    A faster clock heats the junction, which lowers the clean clock a little: iterate
    to the fixed point (the loop gain is a few per cent, so it converges in a few rounds)
    and keep a hair of margin so the settled chip really stays within `max_error`.
    """
    junction_c = board_temp_c
    freq = 0.0
    for _ in range(_SELF_HEATING_ROUNDS):
        limit = max_freq_mhz(spec, sample, chip_v, junction_c, max_error, degradation=degradation)
        freq = min(freq_max_mhz, limit * (1.0 - _CLOCK_MARGIN))
        if freq < freq_min_mhz:
            freq = 0.0
        power_w = chip_power_w(spec, sample, freq, chip_v, junction_c)
        settled_c = chip_temp_c(board_temp_c, sample, power_w)
        converged = abs(settled_c - junction_c) < _SELF_HEATING_TOLERANCE_C
        junction_c = settled_c
        if converged or junction_c > JUNCTION_MAX_C:
            break
    return freq, junction_c


def _aging(samples: Sequence[SiliconSample], degradation: Sequence[float] | None) -> list[float]:
    if degradation is None:
        return [0.0] * len(samples)
    if len(degradation) != len(samples):
        raise ValueError(f"{len(degradation)} degradation values for {len(samples)} chips")
    return list(degradation)


# -- heat ------------------------------------------------------------------------------

SPREADING_C_PER_W = 0.005
"""Chips to heat-sink fins: paid whatever the airflow."""

NATURAL_W_PER_C = 2.5
"""Fins to air with the fans stopped: a 1.3 kW board would settle above 500 °C."""

FORCED_W_PER_C = 36.3
"""Extra fins-to-air conductance at full fan speed."""

AIRFLOW_EXPONENT = 0.8
"""Forced-convection conductance grows as air speed^0.8 (turbulent flow over fins)."""

BOARD_HEAT_CAPACITY_J_PER_C = 1500.0
"""PCB plus aluminium heat sinks (about 1.7 kg): 46 s time constant at full airflow."""


def thermal_resistance_c_per_w(airflow: float) -> float:
    """Board-to-ambient thermal resistance at `airflow` (share of full fan speed, >= 0).

    Calibrated so a 1.3 kW board in 25 °C air settles at 65 °C with the fans at full
    speed and at 87 °C at half speed.
    """
    if airflow < 0:
        raise ValueError(f"airflow {airflow} must be >= 0 (share of full fan speed)")
    conductance = NATURAL_W_PER_C + FORCED_W_PER_C * math.pow(airflow, AIRFLOW_EXPONENT)
    return SPREADING_C_PER_W + 1.0 / conductance


class BoardThermal:
    """A hashboard as one lumped heat capacity cooled through thermal_resistance_c_per_w."""

    def __init__(
        self,
        temp_c: float = 25.0,
        *,
        heat_capacity_j_per_c: float = BOARD_HEAT_CAPACITY_J_PER_C,
    ) -> None:
        self.temp_c = temp_c
        self.heat_capacity_j_per_c = heat_capacity_j_per_c

    @staticmethod
    def steady_state_c(power_w: float, airflow: float, ambient_c: float) -> float:
        return ambient_c + power_w * thermal_resistance_c_per_w(airflow)

    def time_constant_s(self, airflow: float) -> float:
        return self.heat_capacity_j_per_c * thermal_resistance_c_per_w(airflow)

    def step(self, dt_s: float, power_w: float, airflow: float, ambient_c: float) -> float:
        """Advance `dt_s` with the inputs held constant; returns the new temperature.

        The first-order response is integrated exactly, so one long step lands where
        many short ones do and a coarse simulation stays stable.
        """
        if dt_s < 0:
            raise ValueError(f"dt_s {dt_s} must be >= 0")
        target_c = self.steady_state_c(power_w, airflow, ambient_c)
        decay = math.exp(-dt_s / self.time_constant_s(airflow))
        self.temp_c = target_c + (self.temp_c - target_c) * decay
        return self.temp_c


# -- power conversion ------------------------------------------------------------------


@dataclass(frozen=True)
class ConverterLosses:
    """Losses of a power converter as shares of its rated output power.

    `load_fraction` is output power / rated output power. Loss = fixed (controller,
    magnetics core) + proportional (switching) · load + quadratic (I²R) · load², so the
    efficiency is poor at light load, peaks where fixed and I²R losses are equal
    (load = sqrt(fixed / quadratic)) and sags again towards full load.
    """

    fixed: float
    proportional: float
    quadratic: float

    def loss_w(self, output_w: float, rated_w: float) -> float:
        load = output_w / rated_w
        return rated_w * (self.fixed + self.proportional * load + self.quadratic * load**2)

    def input_w(self, output_w: float, rated_w: float) -> float:
        """Power drawn to deliver `output_w`; idle losses are paid even at zero output."""
        if output_w < 0 or rated_w <= 0:
            raise ValueError(f"output {output_w} W must be >= 0 and rating {rated_w} W > 0")
        return output_w + self.loss_w(output_w, rated_w)

    def efficiency(self, load_fraction: float) -> float:
        if load_fraction < 0:
            raise ValueError(f"load fraction {load_fraction} must be >= 0")
        return load_fraction / self.input_w(load_fraction, 1.0)


PSU_LOSSES = ConverterLosses(fixed=0.008, proportional=0.0206, quadratic=0.032)
"""Titanium-like: 85 % at 5 % load, 94 % at 20 %, 95 % peak at half load, 94 % at full."""

DCDC_LOSSES = ConverterLosses(fixed=0.003, proportional=0.0189, quadratic=0.012)
"""A board's PMBus converter: 95 % at 10 % load, 97 % peak at half load, 96.7 % at full."""


def psu_efficiency(load_fraction: float) -> float:
    """PSU output / input at `load_fraction` = DC output power / rated output power."""
    return PSU_LOSSES.efficiency(load_fraction)


def dcdc_efficiency(load_fraction: float) -> float:
    """Board converter output / input at `load_fraction` = output power / rated output."""
    return DCDC_LOSSES.efficiency(load_fraction)


# -- noise -----------------------------------------------------------------------------


def fan_noise_dba(rpm: float, rpm_max: float, dba_at_max: float) -> float:
    """A fan's sound level: sound power goes as speed^5, i.e. 50·log10(rpm/rpm_max) dB.

    A stopped fan is silent: -inf, which combine_dba treats as no contribution.
    """
    if rpm <= 0:
        return -math.inf
    return dba_at_max + 50.0 * math.log10(rpm / rpm_max)


def combine_dba(levels: Iterable[float]) -> float:
    """Level of several incoherent sources together: 10·log10(Σ 10^(L/10)).

    Summed relative to the loudest source, which cannot overflow and never rounds
    below it; no sources (or only silent ones) give -inf.
    """
    audible = [level for level in levels if level != -math.inf]
    if not audible:
        return -math.inf
    loudest = max(audible)
    total = sum(10.0 ** ((level - loudest) / 10.0) for level in audible)
    return loudest + 10.0 * math.log10(total)
