"""A hashboard as the autotuner sees it, straight from the physics model: the tuner's test rig.

The emulated chain (SHA-256 nonces over a pty) is faithful but costs real time; tuning a
board takes an hour of hashing, so the tests and the benchmark use this statistical twin
instead. It has the same silicon draw (`physics.make_silicon`), the same error model at
each chip's self-heated junction, nonces arriving as a Poisson process at hashrate /
(ticket difficulty x 2^32) per chip with the wrong ones thinned out by the error
probability (two independent Poisson counts), and board power from `physics.board_point`
read with a little meter noise. Its clock is simulated: `wait` returns at once, so a
tuning run of an hour takes a fraction of a second.

Ramping a PLL and settling the rail take simulated time as they would on the rig, and the
board temperature is either held (to compare with the oracle at that temperature) or
follows `physics.BoardThermal` under the power drawn.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Sequence

from hashbay.drivers.errors import SafetyViolation
from hashbay.tools.sim import physics
from hashbay.tools.sim.chain import poisson

HASHES_PER_DIFF1 = 2.0**32
THERMAL_STEP_S = 10.0
"""Longest step of the thermal model: the board's time constant is about 46 s."""


class PhysicsTarget:
    """Implements `hashbay.agent.tuning.autotune.TuneTarget` over the physics model.

    `cpu_s` accumulates the CPU time spent inside this class, so a benchmark can tell the
    tuner's own cost from the simulation's.
    """

    def __init__(
        self,
        spec: physics.ChipSpec,
        silicon: Sequence[physics.SiliconSample],
        *,
        seed: int,
        domains: int,
        voltage_range_v: tuple[float, float],
        freq_range_mhz: tuple[float, float] = (50.0, 700.0),
        ticket_difficulty: int = 32,
        board_temp_c: float = 65.0,
        thermal: physics.BoardThermal | None = None,
        airflow: float = 1.0,
        ambient_c: float = 25.0,
        degradation: Sequence[float] | None = None,
        power_noise: float = 0.003,
        ramp_step_mhz: float = 6.25,
        ramp_step_delay_s: float = 0.1,
        settle_s: float = 2.0,
        power_average_s: float = 5.0,
    ) -> None:
        self.spec = spec
        self.silicon = list(silicon)
        self.domains = domains
        self.voltage_range_v = voltage_range_v
        self.freq_range_mhz = freq_range_mhz
        self.ticket_difficulty = ticket_difficulty
        self.board_temp_c = board_temp_c
        self.thermal = thermal
        self.airflow = airflow
        self.ambient_c = ambient_c
        self.degradation = list(degradation) if degradation is not None else None
        self.power_noise = power_noise
        self.ramp_step_mhz = ramp_step_mhz
        self.ramp_step_delay_s = ramp_step_delay_s
        self.settle_s = settle_s
        self.power_average_s = power_average_s
        self.board_v = voltage_range_v[0]
        self.freqs_mhz = [freq_range_mhz[0]] * len(self.silicon)
        self.counters = [(0, 0)] * len(self.silicon)
        self.cpu_s = 0.0
        self._rng = random.Random(seed)
        self._now_s = 0.0
        self._point: physics.OraclePoint | None = None
        if thermal is not None:
            self.board_temp_c = thermal.temp_c

    @classmethod
    def board(
        cls,
        seed: int,
        *,
        chip_model: str = "BM1368",
        chip_count: int = 126,
        chips_per_domain: int = 3,
        ticket_difficulty: int = 32,
        board_temp_c: float = 65.0,
        thermal: physics.BoardThermal | None = None,
        airflow: float = 1.0,
        degradation: Sequence[float] | None = None,
    ) -> PhysicsTarget:
        """A board as the simulator builds one, with the limits its EEPROM would declare."""
        spec = physics.CHIP_SPECS[chip_model]
        silicon = physics.make_silicon(spec, chip_count, random.Random(seed))
        domains = chip_count // chips_per_domain
        nominal_v = domains * spec.nominal_chip_v
        return cls(
            spec,
            silicon,
            seed=seed * 7919 + 17,
            domains=domains,
            voltage_range_v=(round(nominal_v * 0.85, 3), round(nominal_v * 1.12, 3)),
            ticket_difficulty=ticket_difficulty,
            board_temp_c=board_temp_c,
            thermal=thermal,
            airflow=airflow,
            degradation=degradation,
        )

    # -- the TuneTarget protocol ---------------------------------------------------------

    @property
    def chip_count(self) -> int:
        return len(self.silicon)

    @property
    def hashes_per_mhz(self) -> float:
        return physics.hashrate_hs(self.spec, 1.0)

    async def set_board_voltage(self, volts: float) -> float:
        low, high = self.voltage_range_v
        if not low <= volts <= high:
            raise SafetyViolation(f"board voltage {volts:.3f} V refused: allowed {low}..{high} V")
        with self._timed():
            self.board_v = volts
            self._point = None
        await self.wait(self.settle_s)
        return volts

    async def set_chip_freqs(self, freqs_mhz: Sequence[float]) -> list[float]:
        low, high = self.freq_range_mhz
        if len(freqs_mhz) != self.chip_count:
            raise ValueError(f"{len(freqs_mhz)} clocks for {self.chip_count} chips")
        for freq in freqs_mhz:
            if not low <= freq <= high:
                raise SafetyViolation(f"frequency {freq:.1f} MHz refused: allowed {low}..{high}")
        with self._timed():
            largest = max(
                (abs(a - b) for a, b in zip(freqs_mhz, self.freqs_mhz, strict=True)), default=0.0
            )
            changed = list(freqs_mhz) != self.freqs_mhz
            self.freqs_mhz = list(freqs_mhz)
            self._point = None
        if changed:  # every chip steps together, one pause per step
            await self.wait(math.ceil(largest / self.ramp_step_mhz) * self.ramp_step_delay_s)
        return list(self.freqs_mhz)

    def chip_counters(self) -> list[tuple[int, int]]:
        return list(self.counters)

    async def board_power_w(self) -> float | None:
        await self.wait(self.power_average_s)
        with self._timed():
            power_w = self._operating_point().power_w
            return power_w * (1.0 + self._rng.gauss(0.0, self.power_noise))

    def now_s(self) -> float:
        return self._now_s

    async def wait(self, seconds: float) -> None:
        with self._timed():
            left_s = max(0.0, seconds)
            while left_s > 0:
                step_s = min(left_s, THERMAL_STEP_S) if self.thermal is not None else left_s
                self._hash(step_s)
                left_s -= step_s
        await asyncio.sleep(0)

    # -- the model -----------------------------------------------------------------------

    def _operating_point(self) -> physics.OraclePoint:
        if self._point is None:
            self._point = physics.board_point(
                self.spec,
                self.silicon,
                self.freqs_mhz,
                self.board_v,
                self.board_temp_c,
                domains=self.domains,
                degradation=self.degradation,
            )
        return self._point

    def _hash(self, dt_s: float) -> None:
        point = self._operating_point()
        rng = self._rng
        per_nonce = self.ticket_difficulty * HASHES_PER_DIFF1
        counters = self.counters
        for chip, (freq, p_wrong) in enumerate(
            zip(point.freqs_mhz, point.error_rates, strict=True)
        ):
            mean = physics.hashrate_hs(self.spec, freq) * dt_s / per_nonce
            good, bad = counters[chip]
            counters[chip] = (
                good + poisson(rng, mean * (1.0 - p_wrong)),
                bad + poisson(rng, mean * p_wrong),
            )
        self._now_s += dt_s
        if self.thermal is not None:
            self.board_temp_c = self.thermal.step(dt_s, point.power_w, self.airflow, self.ambient_c)
            self._point = None

    def _timed(self) -> _CpuTimer:
        return _CpuTimer(self)


class _CpuTimer:
    def __init__(self, target: PhysicsTarget) -> None:
        self.target = target
        self.started = 0.0

    def __enter__(self) -> None:
        self.started = time.process_time()

    def __exit__(self, *_: object) -> None:
        self.target.cpu_s += time.process_time() - self.started
