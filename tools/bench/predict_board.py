"""A hashboard's counters in simulated time, for the predictive-maintenance bench and tests.

The boards here are statistical twins of the emulated chains: the same silicon draw
(`physics.make_silicon`), the same error model (`physics.error_probability` at each chip's
self-heated junction, with a degradation that grows linearly, as `hashbay-sim inject
chip-degrade` makes it), and nonces arriving as a Poisson process at hashrate / (ticket
difficulty · 2^32), each wrong with the error probability. What is skipped is SHA-256 and
the UART: the health model and the predictor only ever see counters, so days of
simulated time run in seconds.

The board can do what a real one does in operation: move its clocks and rail (throttling,
power targets, a tuned profile), warm and cool, sleep (powered off: its counters restart
when it is enumerated again), and be autotuned, which runs the real `Autotuner` on the
same silicon while the counters keep running, as they do on a chain being tuned.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hashbay.agent.core.status import ChipSample, ModuleSample
from hashbay.agent.tuning.autotune import Autotuner, BoardProfile
from hashbay.agent.tuning.tune_settings import TuneSettings
from hashbay.tools.sim import physics
from hashbay.tools.sim.chain import poisson
from hashbay.tools.sim.tune_target import PhysicsTarget

HOUR_S = 3600.0
DAY_S = 86400.0
SENSOR_OFFSETS_C = (-3.0, 4.0, 0.0, 2.0)  # as tools/sim/module.py places its sensors
HASHES_PER_DIFF1 = 2.0**32


@dataclass(frozen=True)
class BoardConditions:
    """The operating point the board starts at: an S21-class board at stock settings."""

    chip_model: str = "BM1368"
    chip_count: int = 126
    freq_mhz: float = 490.0
    chip_v: float = 0.32
    board_temp_c: float = 65.0
    ticket_difficulty: int = 256
    domains: int = physics.DEFAULT_DOMAINS


class StatisticalBoard:
    """One hashboard's counters advanced in steps of simulated time.

    Per step each chip reports Poisson(rate·dt) nonces, each wrong with the physics'
    error probability. By Poisson thinning the good and the wrong ones are two
    independent Poisson counts, which is what is drawn (same distribution, two draws).
    `error_p` may be set by hand for a chip (a test's fixed rate); it holds until the
    operating point or the temperature changes. `fixed_error_p` holds across those.
    """

    def __init__(
        self,
        seed: int,
        *,
        degrading: Mapping[int, float] | None = None,
        conditions: BoardConditions | None = None,
    ) -> None:
        self.seed = seed
        self.conditions = cond = conditions or BoardConditions()
        self.spec = physics.CHIP_SPECS[cond.chip_model]
        self.silicon = physics.make_silicon(self.spec, cond.chip_count, random.Random(seed))
        self._rng = random.Random(seed * 7919 + 1)
        self.degradation_per_s = {chip: per_h / HOUR_S for chip, per_h in (degrading or {}).items()}
        self.degradation = [0.0] * cond.chip_count
        self.fixed_error_p: dict[int, float] = {}
        self.ticket_difficulty = cond.ticket_difficulty
        self.board_v = cond.chip_v * cond.domains
        self.board_temp_c = cond.board_temp_c
        self.freqs_mhz = [cond.freq_mhz] * cond.chip_count
        self.nonces = [0] * cond.chip_count
        self.errors = [0] * cond.chip_count
        self.now_s = 0.0
        self.hashing_since_s = 0.0
        self.tunes = 0
        self.ambient_c: float | None = None  # None: the board temperature is held
        self._settle()

    # -- operating point ---------------------------------------------------------------

    @property
    def chip_v(self) -> float:
        return self.board_v / self.conditions.domains

    def set_point(self, board_v: float, freqs_mhz: Sequence[float]) -> None:
        """Move the rail and the clocks (a throttle, a power target, a tuned profile)."""
        self.board_v = board_v
        self.freqs_mhz = list(freqs_mhz)
        self._settle()

    def set_board_temp(self, temp_c: float) -> None:
        self.board_temp_c = temp_c
        self._settle()

    def cooled_by_air(self) -> None:
        """From now on the board temperature follows its power (fans at full speed, the
        air as warm as makes the present point's temperature): throttled, it cools."""
        resistance = physics.thermal_resistance_c_per_w(1.0)
        self.ambient_c = self.board_temp_c - resistance * self.board_v * self.board_a

    def _settle(self) -> None:
        """Junctions, error rates, nonce rates and power for the present point."""
        spec = self.spec
        powers = self._powers()
        if self.ambient_c is not None:  # settle the board's heat balance (converges fast)
            resistance = physics.thermal_resistance_c_per_w(1.0)
            for _ in range(3):
                self.board_temp_c = self.ambient_c + resistance * sum(powers)
                powers = self._powers()
        board_c = self.board_temp_c
        self.junction_c = [
            physics.chip_temp_c(board_c, s, w) for s, w in zip(self.silicon, powers, strict=True)
        ]
        self.board_a = sum(powers) / self.board_v
        self.hashes_per_nonce = self.ticket_difficulty * HASHES_PER_DIFF1
        self.chip_hs = [physics.hashrate_hs(spec, f) for f in self.freqs_mhz]
        self.nonce_rate_per_s = [hs / self.hashes_per_nonce for hs in self.chip_hs]
        self.expected_hs = sum(self.chip_hs)
        self.error_p = [self._error_p(chip) for chip in range(len(self.silicon))]
        self.temps_c = tuple(round((board_c + offset) * 2) / 2 for offset in SENSOR_OFFSETS_C)

    def _powers(self) -> list[float]:
        return [
            physics.chip_power_w(self.spec, s, f, self.chip_v, self.board_temp_c)
            for s, f in zip(self.silicon, self.freqs_mhz, strict=True)
        ]

    def _error_p(self, chip: int) -> float:
        fixed = self.fixed_error_p.get(chip)
        if fixed is not None:
            return fixed
        return physics.error_probability(
            self.spec,
            self.silicon[chip],
            self.freqs_mhz[chip],
            self.chip_v,
            self.junction_c[chip],
            degradation=self.degradation[chip],
        )

    def refresh_error_p(self) -> None:
        """Recompute every chip's error rate (after `fixed_error_p` changed)."""
        self.error_p = [self._error_p(chip) for chip in range(len(self.silicon))]

    # -- time --------------------------------------------------------------------------

    def step(self, dt_s: float) -> ModuleSample:
        """Advance `dt_s` of hashing and return the poll at its end."""
        self._hash(dt_s)
        return self.sample()

    def _hash(self, dt_s: float) -> None:
        for chip, per_s in self.degradation_per_s.items():
            self.degradation[chip] = min(1.0, self.degradation[chip] + per_s * dt_s)
            self.error_p[chip] = self._error_p(chip)
        rng, nonces, errors = self._rng, self.nonces, self.errors
        for chip, (p_wrong, rate) in enumerate(
            zip(self.error_p, self.nonce_rate_per_s, strict=True)
        ):
            mean = rate * dt_s
            nonces[chip] += poisson(rng, mean * (1.0 - p_wrong))
            if p_wrong > 0:
                errors[chip] += poisson(rng, mean * p_wrong)
        self.now_s += dt_s

    def sample(self) -> ModuleSample:
        per_nonce = self.hashes_per_nonce
        return ModuleSample(
            at_s=self.now_s,
            chips=tuple(
                ChipSample(n, e, 0, n * per_nonce, f)
                for n, e, f in zip(self.nonces, self.errors, self.freqs_mhz, strict=True)
            ),
            expected_hs=self.expected_hs,
            temps_c=self.temps_c,
            board_v=self.board_v,
            board_a=self.board_a,
            dcdc_temp_c=self.board_temp_c + 8.0 + self.board_v * self.board_a / 200,
            rail_fault=None,
            fans_stalled=0,
            hashing_for_s=self.now_s - self.hashing_since_s,
        )

    def sleep(self, seconds: float) -> None:
        """Powered off (curtailed, unplugged, the agent restarting): no hashing, no aging;
        the chain is enumerated again on waking, so its counters restart at zero."""
        self.now_s += seconds
        self.nonces = [0] * len(self.silicon)
        self.errors = [0] * len(self.silicon)
        self.hashing_since_s = self.now_s

    # -- autotuning --------------------------------------------------------------------

    def tune(
        self, settings: TuneSettings | None = None, *, sample_every_s: float = 60.0
    ) -> tuple[BoardProfile, list[ModuleSample]]:
        """Autotune this board now and move to its most efficient point.

        The real tuner runs on the same silicon, aging and temperature; while it works the
        chain's counters keep counting its probes (at its own ticket difficulty), which is
        what the samples taken during the run show. Aging goes on meanwhile.
        """
        settings = settings or TuneSettings()
        self.tunes += 1
        cond = self.conditions
        target = PhysicsTarget(
            self.spec,
            self.silicon,
            seed=self.seed * 104729 + self.tunes,
            domains=cond.domains,
            voltage_range_v=(
                round(cond.domains * self.spec.nominal_chip_v * 0.85, 3),
                round(cond.domains * self.spec.nominal_chip_v * 1.12, 3),
            ),
            ticket_difficulty=settings.ticket_difficulty,
            board_temp_c=self.board_temp_c,
            degradation=self.degradation,
        )
        profile = asyncio.run(Autotuner(settings).run(target))
        samples = self._tuning_samples(target, profile.duration_s, sample_every_s)
        best = profile.best()
        if best is None:
            raise RuntimeError(f"board {self.seed}: the tuner produced no point")
        self.set_point(best.board_v, best.freqs_mhz)
        return profile, samples

    def _tuning_samples(
        self, target: PhysicsTarget, duration_s: float, every_s: float
    ) -> list[ModuleSample]:
        """The tuning run's counts spread evenly over its duration, one poll per `every_s`."""
        start_n, start_e = list(self.nonces), list(self.errors)
        good = [g for g, _ in target.counters]
        bad = [b for _, b in target.counters]
        steps = max(1, round(duration_s / every_s))
        step_s = duration_s / steps
        samples = []
        for step in range(1, steps + 1):
            share = step / steps
            self.nonces = [n + round(g * share) for n, g in zip(start_n, good, strict=True)]
            self.errors = [e + round(b * share) for e, b in zip(start_e, bad, strict=True)]
            for chip, per_s in self.degradation_per_s.items():
                self.degradation[chip] = min(1.0, self.degradation[chip] + per_s * step_s)
            self.now_s += step_s
            samples.append(self.sample())
        return samples
