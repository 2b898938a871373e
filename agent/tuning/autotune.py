"""The autotuner: every chip's highest clean clock at each board voltage, and what it costs.

Chips from one wafer differ by several per cent in speed and leakage, so one clock for the
whole board either leaves hashes on the table or lets the slowest chips err. The tuner
walks the board voltages from the module's lowest to its highest and, at each one, finds
every chip's highest clock whose hardware-error share stays below `max_error`, all chips
at once, each on its own PLL. It then measures the board's power and good hashrate there,
so the power governor gets the whole curve: the most efficient point under a cap, and the
cheaper ones for curtailment.

Every decision is Wald's sequential probability ratio test on the chip's binomial error
count: a chip stepping far past its edge is rejected after a handful of nonces, a clean one
is accepted once enough nonces back it, and the chance of either verdict being wrong is
`decision_risk`. Quick probes (is the error share about half the budget, or `probe_factor`
times it?) bracket each chip's edge; the clock `margin_mhz` below it is then verified
against the budget itself, and the chip runs `backoff_mhz` below what passed. A voltage
whose edges are known predicts the next one's, so after the first two voltages most chips
need only a few probes.

The tuner never touches hardware: it drives a `TuneTarget`, which the slot controller
implements over the real chain (while jobs keep flowing) and the simulator implements
over the physics model. Time is the target's clock, so a simulated tuning reports
simulated seconds.
"""

from __future__ import annotations

import enum
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hashbay.agent.tuning.tune_settings import TuneSettings

PROBE_CLEAN_SHARE = 0.5
"""Probes take a clock erring on at most max_error x this for clean."""

VERIFY_CLEAN_SHARE = 0.25
"""A verified clock must look clean against max_error x this: the SPRT's null hypothesis."""

TRUNCATE_FACTOR = 2.5
"""A test still undecided after this many times the nonces a flawless chip needs is treated
as erring: a clock that cannot show it is clean is not clean enough."""

SILENT_AFTER_NONCES = 30.0
"""A chip with no nonce while it should have reported this many has stopped hashing."""

POWER_READ_ATTEMPTS = 3

_FIRST_SLICE_S = 5.0
_MIN_SLICE_S = 1.0
_MAX_SLICE_S = 120.0


class TuneTarget(Protocol):
    """What the tuner needs from a board; the slot controller implements it over the chain.

    The controller applies the tuning ticket difficulty before `run` and restores its own
    afterwards; it keeps sending jobs throughout. Every setter goes through the envelope.
    """

    @property
    def chip_count(self) -> int: ...
    @property
    def voltage_range_v(self) -> tuple[float, float]: ...
    @property
    def freq_range_mhz(self) -> tuple[float, float]: ...
    @property
    def hashes_per_mhz(self) -> float:
        """Hashes per second one chip does per MHz of clock (its small cores x 1e6)."""
        ...

    async def set_board_voltage(self, volts: float) -> float:
        """Set the rail and let it settle; returns the voltage applied."""
        ...

    async def set_chip_freqs(self, freqs_mhz: Sequence[float]) -> list[float]:
        """Ramp each chip to its clock (changed ones only); returns the clocks applied."""
        ...

    def chip_counters(self) -> list[tuple[int, int]]:
        """Cumulative (verified nonces, hardware errors) per chip."""
        ...

    async def board_power_w(self) -> float | None:
        """Board power (DC-DC vout x iout) averaged over a short while; None if unreadable."""
        ...

    def now_s(self) -> float:
        """The rig's clock: simulated seconds on the simulator."""
        ...

    async def wait(self, seconds: float) -> None:
        """Let the chips hash for this long."""
        ...


# -- results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TunePoint:
    """One board voltage with every chip's tuned clock and what the board did there.

    `hashrate_hs` counts good hashes only; `error_share` is the board's measured share of
    hardware errors at these clocks; `weak_chips` sit at a fallback clock (the lowest
    allowed, or the last one verified) because they could not be tuned here.
    """

    board_v: float
    freqs_mhz: tuple[float, ...]
    power_w: float
    hashrate_hs: float
    error_share: float
    weak_chips: tuple[int, ...] = ()

    @property
    def hashes_per_j(self) -> float:
        return self.hashrate_hs / self.power_w if self.power_w > 0 else 0.0

    @property
    def j_per_th(self) -> float:
        return self.power_w / (self.hashrate_hs * 1e-12) if self.hashrate_hs > 0 else math.inf


@dataclass(frozen=True)
class BoardProfile:
    """A board's tuned curve, lowest voltage first; `duration_s` is in the target's clock."""

    chip_count: int
    max_error: float
    points: tuple[TunePoint, ...]
    duration_s: float

    def best(self, power_cap_w: float | None = None) -> TunePoint | None:
        """The most efficient point drawing at most `power_cap_w`; None if none fits."""
        fitting = [p for p in self.points if power_cap_w is None or p.power_w <= power_cap_w]
        return max(fitting, key=lambda p: p.hashes_per_j, default=None)

    def fastest(self, power_cap_w: float | None = None) -> TunePoint | None:
        """The point with the most good hashes drawing at most `power_cap_w`."""
        fitting = [p for p in self.points if power_cap_w is None or p.power_w <= power_cap_w]
        return max(fitting, key=lambda p: p.hashrate_hs, default=None)

    def summary(self) -> str:
        """One line for status: the best point in words."""
        best = self.best()
        if best is None:
            return "tuned: no usable point"
        return (
            f"tuned: {len(self.points)} voltages, best {best.j_per_th:.2f} J/TH at "
            f"{best.board_v:.2f} V, {best.power_w:.0f} W, {best.hashrate_hs / 1e12:.1f} TH/s"
        )


@dataclass(frozen=True)
class TuneProgress:
    """Where a tuning run is: for the slot's status line."""

    voltage_index: int  # 1-based
    voltage_count: int
    board_v: float
    chips_settled: int
    chip_count: int
    elapsed_s: float
    phase: str  # "search", "measure", "skipped" (power unreadable: no point) or "done"

    def describe(self) -> str:
        return (
            f"tuning {self.voltage_index}/{self.voltage_count} at {self.board_v:.2f} V: "
            f"{self.chips_settled}/{self.chip_count} chips settled ({self.phase}, "
            f"{self.elapsed_s / 60:.0f} min)"
        )


def voltage_grid(settings: TuneSettings, voltage_range_v: tuple[float, float]) -> list[float]:
    """The board voltages a run tries, lowest first, rounded to the millivolt."""
    low, high = voltage_range_v
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
        raise ValueError(f"voltage range {voltage_range_v} is not an ordered pair of volts")
    if settings.voltage_step_v > 0:
        count = int((high - low) / settings.voltage_step_v + 1e-9) + 1
        volts = [low + i * settings.voltage_step_v for i in range(count)]
    else:
        count = settings.voltage_steps
        volts = [low + (high - low) * i / (count - 1) for i in range(count)]
    grid = sorted({min(high, max(low, round(v, 3))) for v in volts})
    return grid


# -- the sequential test ----------------------------------------------------------------


class Verdict(enum.Enum):
    CLEAN = "clean"
    ERRING = "erring"


@dataclass(frozen=True)
class Sprt:
    """Wald's test of one chip's error share: at most `p_clean`, or at least `p_erring`?

    Each nonce moves the log-likelihood ratio: up by ln(p1/p0) for an error, down by
    ln((1-p0)/(1-p1)) for a good one; the verdict falls when it leaves (ln B, ln A).
    """

    p_clean: float
    p_erring: float
    per_error: float
    per_good: float
    lower: float
    upper: float
    max_nonces: int

    @classmethod
    def between(cls, p_clean: float, p_erring: float, risk: float) -> Sprt:
        if not 0 < p_clean < p_erring < 1 or not 0 < risk < 0.5:
            raise ValueError(f"need 0 < {p_clean} < {p_erring} < 1 and 0 < risk {risk} < 0.5")
        per_good = math.log((1 - p_erring) / (1 - p_clean))
        lower = math.log(risk / (1 - risk))
        return cls(
            p_clean=p_clean,
            p_erring=p_erring,
            per_error=math.log(p_erring / p_clean),
            per_good=per_good,
            lower=lower,
            upper=math.log((1 - risk) / risk),
            max_nonces=math.ceil(TRUNCATE_FACTOR * lower / per_good),
        )

    def verdict(self, good: int, errors: int) -> Verdict | None:
        """The decision on these counts, or None while they do not yet tell."""
        llr = errors * self.per_error + good * self.per_good
        if llr >= self.upper:
            return Verdict.ERRING
        if llr <= self.lower:
            return Verdict.CLEAN
        if good + errors >= self.max_nonces:
            return Verdict.ERRING
        return None


# -- one chip's search ------------------------------------------------------------------


class _Phase(enum.Enum):
    PROBE = "probe"
    VERIFY = "verify"
    DONE = "done"


@dataclass(frozen=True)
class _Rules:
    """The settings a chip search needs, resolved against the target's limits."""

    freq_min: float
    freq_max: float
    coarse_step_mhz: float
    fine_step_mhz: float
    margin_mhz: float
    backoff_mhz: float
    probe: Sprt
    verify: Sprt

    def clamp(self, freq_mhz: float) -> float:
        return min(self.freq_max, max(self.freq_min, freq_mhz))

    def first_guess(
        self, edges: Sequence[tuple[float, float]], volts: float
    ) -> tuple[float, float]:
        """(first clock, first step) for a chip at `volts`, from its edges at lower voltages.

        A chip's edge grows about linearly with the voltage, so two earlier edges predict
        the next within a few MHz: start just under it and search with fine steps.
        """
        if not edges:
            return (self.freq_min + self.freq_max) / 2, self.coarse_step_mhz
        last_v, last_mhz = edges[-1]
        if len(edges) == 1 or last_v <= edges[-2][0]:
            return self.clamp(last_mhz + self.coarse_step_mhz), self.coarse_step_mhz
        before_v, before_mhz = edges[-2]
        slope = (last_mhz - before_mhz) / (last_v - before_v)
        predicted = last_mhz + max(0.0, slope) * (volts - last_v)
        return self.clamp(predicted - self.fine_step_mhz), 2 * self.fine_step_mhz


class _ChipSearch:
    """One chip's search at one voltage: a bracket [clean, erring], a trial, its counts.

    Probes expand from the first guess (doubling steps, up while clean, down while
    erring) until the edge is bracketed, then bisect it to `fine_step_mhz`. The clock
    `margin_mhz` under the highest clean probe is then verified against max_error
    itself, stepping down until it passes.
    """

    def __init__(self, rules: _Rules, guess_mhz: float, step_mhz: float) -> None:
        self.rules = rules
        self.lo: float | None = None  # highest clock seen clean here
        self.hi: float | None = None  # lowest clock seen erring here
        self.step = step_mhz
        self.phase = _Phase.PROBE
        self.verified: float | None = None
        self.weak = False
        self.final = rules.freq_min
        self.trial = rules.clamp(guess_mhz)
        self.since: tuple[int, int] = (0, 0)
        self.since_s = 0.0

    @property
    def done(self) -> bool:
        return self.phase is _Phase.DONE

    @property
    def clock(self) -> float:
        return self.final if self.done else self.trial

    @property
    def edge(self) -> float | None:
        """Where the errors start, as far as the probes tell (None if they never did)."""
        if self.weak or self.lo is None:
            return None
        return self.lo if self.hi is None else (self.lo + self.hi) / 2

    def take(self, applied_mhz: float) -> bool:
        """Adopt the clock the PLL made; False if it no longer splits the probe bracket."""
        if self.done:
            self.final = applied_mhz
            return True
        self.trial = applied_mhz
        if self.phase is _Phase.VERIFY or self.lo is None or self.hi is None:
            return True
        if self.lo < applied_mhz < self.hi:
            return True
        self._verify(self.lo - self.rules.margin_mhz)
        return False

    def restart(self, counters: tuple[int, int], now_s: float) -> None:
        self.since, self.since_s = counters, now_s

    def judge(self, counters: tuple[int, int]) -> Verdict | None:
        good = max(0, counters[0] - self.since[0])
        errors = max(0, counters[1] - self.since[1])
        test = self.rules.probe if self.phase is _Phase.PROBE else self.rules.verify
        return test.verdict(good, errors)

    def advance(self, verdict: Verdict) -> None:
        """Take a verdict on the trial clock and choose the next one (or finish)."""
        if self.phase is _Phase.VERIFY:
            if verdict is Verdict.CLEAN:
                self.verified = self.trial
                backoff = 0.0 if self.hi is None else self.rules.backoff_mhz  # edge never seen
                self.final = self.rules.clamp(self.trial - backoff)
                self.phase = _Phase.DONE
            else:
                self.hi = self.trial if self.hi is None else min(self.hi, self.trial)
                self._verify(self.trial - self.rules.fine_step_mhz)
            return
        if verdict is Verdict.CLEAN:
            self.lo = self.trial if self.lo is None else max(self.lo, self.trial)
        else:
            self.hi = self.trial if self.hi is None else min(self.hi, self.trial)
        self._next_probe()

    def give_up(self, fallback_mhz: float | None) -> None:
        """Out of time (or silent): a fallback clock, else the lowest allowed; weak."""
        rules = self.rules
        if fallback_mhz is not None:
            fallback_mhz -= rules.backoff_mhz
            if self.hi is not None:
                fallback_mhz = min(fallback_mhz, self.hi - rules.margin_mhz)
        self.final = rules.clamp(fallback_mhz) if fallback_mhz is not None else rules.freq_min
        self.weak = True
        self.phase = _Phase.DONE

    def _next_probe(self) -> None:
        rules, lo, hi = self.rules, self.lo, self.hi
        if hi is None:
            assert lo is not None  # a verdict was taken, and it was clean
            if lo >= rules.freq_max:
                self._verify(rules.freq_max)  # clean at the top: no edge to keep off
                return
            self.trial = min(rules.freq_max, lo + self.step)
            self.step *= 2
        elif lo is None or lo < hi - self.step:
            if hi <= rules.freq_min:
                self._verify(rules.freq_min)
                return
            self.trial = max(rules.freq_min, hi - self.step)
            if lo is not None:
                self.trial = max(self.trial, (lo + hi) / 2)
            self.step *= 2
        elif hi - lo <= rules.fine_step_mhz:
            self._verify(lo - rules.margin_mhz)
        else:
            self.trial = (lo + hi) / 2

    def _verify(self, freq_mhz: float) -> None:
        rules = self.rules
        if freq_mhz < rules.freq_min:
            if self.phase is _Phase.VERIFY and self.trial <= rules.freq_min:
                self.give_up(None)  # erring even at the lowest clock allowed
                return
            freq_mhz = rules.freq_min
        self.phase = _Phase.VERIFY
        self.trial = freq_mhz


# -- the tuner --------------------------------------------------------------------------


Progress = Callable[[TuneProgress], None]


class Autotuner:
    """Tunes one board per `run`; holds nothing between runs, so one serves every slot."""

    def __init__(self, settings: TuneSettings) -> None:
        self.settings = settings
        s = settings
        self._probe = Sprt.between(
            s.max_error * PROBE_CLEAN_SHARE,
            min(0.999, s.max_error * s.probe_factor),
            s.decision_risk,
        )
        self._verify = Sprt.between(s.max_error * VERIFY_CLEAN_SHARE, s.max_error, s.decision_risk)

    async def run(
        self,
        target: TuneTarget,
        *,
        power_cap_w: float | None = None,
        progress: Progress | None = None,
    ) -> BoardProfile:
        """Tune every voltage of the grid, lowest first; stop above `power_cap_w`.

        The board is left at the last voltage tried: the caller applies the point it wants.
        """
        freq_min, freq_max = target.freq_range_mhz
        if not (math.isfinite(freq_min) and math.isfinite(freq_max) and 0 < freq_min <= freq_max):
            raise ValueError(f"frequency range {target.freq_range_mhz} is not ordered MHz")
        s = self.settings
        rules = _Rules(
            freq_min=freq_min,
            freq_max=freq_max,
            coarse_step_mhz=s.coarse_step_mhz,
            fine_step_mhz=s.fine_step_mhz,
            margin_mhz=s.margin_mhz,
            backoff_mhz=s.backoff_mhz,
            probe=self._probe,
            verify=self._verify,
        )
        grid = voltage_grid(s, target.voltage_range_v)
        report = progress or (lambda _: None)
        run = _Run(target, rules, s, report, voltages=len(grid))
        edges: list[list[tuple[float, float]]] = [[] for _ in range(target.chip_count)]
        fallback: list[float | None] = [None] * target.chip_count
        points: list[TunePoint] = []
        for index, volts in enumerate(grid, 1):
            point, chips = await run.voltage(index, volts, edges, fallback)
            for i, chip in enumerate(chips):
                if chip.edge is not None:
                    edges[i].append((volts, chip.edge))
                if chip.verified is not None:
                    fallback[i] = chip.verified
            if point is not None:
                points.append(point)
                if power_cap_w is not None and point.power_w > power_cap_w:
                    break
        elapsed_s = target.now_s() - run.started_s
        last_v = points[-1].board_v if points else grid[0]
        n = target.chip_count
        report(TuneProgress(len(grid), len(grid), last_v, n, n, elapsed_s, "done"))
        return BoardProfile(n, s.max_error, tuple(points), elapsed_s)


class _Run:
    """One tuning run: the per-voltage search loop and its measurement slices."""

    def __init__(
        self,
        target: TuneTarget,
        rules: _Rules,
        settings: TuneSettings,
        report: Progress,
        *,
        voltages: int,
    ) -> None:
        self.target = target
        self.rules = rules
        self.settings = settings
        self.report = report
        self.started_s = target.now_s()
        self.voltages = voltages
        self.slice_s = _FIRST_SLICE_S

    async def voltage(
        self,
        index: int,
        volts: float,
        edges: Sequence[Sequence[tuple[float, float]]],
        fallback: Sequence[float | None],
    ) -> tuple[TunePoint | None, list[_ChipSearch]]:
        """Search every chip at this voltage, then measure the settled board.

        `fallback` holds each chip's clock verified at a lower voltage: still clean here
        (more voltage, more margin), so it is where a chip out of time is left.
        """
        target = self.target
        applied_v = await target.set_board_voltage(volts)
        chips = [_ChipSearch(self.rules, *self.rules.first_guess(e, volts)) for e in edges]
        begun_s = target.now_s()
        await self._apply(chips, set(range(len(chips))))
        while not all(c.done for c in chips):
            if target.now_s() - begun_s >= self.settings.voltage_time_max_s:
                for chip, last in zip(chips, fallback, strict=True):
                    if not chip.done:
                        chip.give_up(last)
                break
            await target.wait(self.slice_s)
            moved = self._judge(chips)
            self._progress(index, applied_v, chips, "search")
            if moved:
                await self._apply(chips, moved)
        self._progress(index, applied_v, chips, "measure")
        point = await self._measure(applied_v, chips)
        if point is None:
            self._progress(index, applied_v, chips, "skipped")
        return point, chips

    def _judge(self, chips: list[_ChipSearch]) -> set[int]:
        """Give every searching chip its verdict; returns the chips whose clock moves."""
        counters = self.target.chip_counters()
        now_s = self.target.now_s()
        moved = set()
        per_mhz_s = _nonce_rate_per_mhz_s(
            [c for c in chips if not c.done],
            [counters[i] for i, c in enumerate(chips) if not c.done],
            now_s,
        )
        for i, chip in enumerate(chips):
            if chip.done:
                continue
            verdict = chip.judge(counters[i])
            if verdict is not None:
                chip.advance(verdict)
                moved.add(i)
            elif self._silent(chip, counters[i], now_s, per_mhz_s):
                chip.give_up(None)
                moved.add(i)
        self._resize_slice(chips, per_mhz_s)
        return moved

    @staticmethod
    def _silent(
        chip: _ChipSearch, counters: tuple[int, int], now_s: float, per_mhz_s: float
    ) -> bool:
        seen = counters[0] + counters[1] - chip.since[0] - chip.since[1]
        expected = per_mhz_s * chip.clock * (now_s - chip.since_s)
        return seen <= 0 and expected >= SILENT_AFTER_NONCES

    def _resize_slice(self, chips: list[_ChipSearch], per_mhz_s: float) -> None:
        searching = [c.clock for c in chips if not c.done]
        if per_mhz_s <= 0 or not searching:
            return
        wanted_s = self.settings.slice_nonces / (per_mhz_s * statistics.median(searching))
        self.slice_s = min(_MAX_SLICE_S, max(_MIN_SLICE_S, wanted_s))

    async def _apply(self, chips: list[_ChipSearch], moved: set[int]) -> None:
        """Send every chip its clock; the moved ones start counting afresh once there.

        The PLL makes the nearest clock it can; a probe that lands on the edge of its
        bracket could not split it, so that chip goes on to verification instead.
        """
        for _ in range(3):
            applied = await self.target.set_chip_freqs([c.clock for c in chips])
            unsplit = {i for i in moved if not chips[i].take(applied[i])}
            if not unsplit:
                break
        counters = self.target.chip_counters()
        now_s = self.target.now_s()
        for i in moved:
            chips[i].restart(counters[i], now_s)

    async def _measure(self, board_v: float, chips: list[_ChipSearch]) -> TunePoint | None:
        target = self.target
        await self._apply(chips, set(range(len(chips))))
        before, began_s = target.chip_counters(), target.now_s()
        await target.wait(self.settings.measure_s)
        after, measured_s = target.chip_counters(), target.now_s() - began_s
        power_w = None
        for _ in range(POWER_READ_ATTEMPTS):
            power_w = await target.board_power_w()
            if power_w is not None and math.isfinite(power_w) and power_w > 0:
                break
            power_w = None
        if power_w is None:
            return None
        good = [max(0, a[0] - b[0]) for a, b in zip(after, before, strict=True)]
        bad = [max(0, a[1] - b[1]) for a, b in zip(after, before, strict=True)]
        total = sum(good) + sum(bad)
        share = sum(bad) / total if total else 0.0
        clock_mhz = sum(c.final for c in chips)
        per_mhz = total / (measured_s * clock_mhz) if clock_mhz and measured_s > 0 else 0.0
        hashrate_hs = 0.0
        for chip, g, e in zip(chips, good, bad, strict=True):
            if g + e:
                clean = g / (g + e)
            else:  # too few nonces to say, unless it should have reported plenty
                expected = per_mhz * chip.final * measured_s
                clean = 0.0 if expected >= SILENT_AFTER_NONCES else 1.0 - share
            hashrate_hs += chip.final * target.hashes_per_mhz * clean
        return TunePoint(
            board_v=board_v,
            freqs_mhz=tuple(c.final for c in chips),
            power_w=power_w,
            hashrate_hs=hashrate_hs,
            error_share=share,
            weak_chips=tuple(i for i, c in enumerate(chips) if c.weak),
        )

    def _progress(self, index: int, volts: float, chips: list[_ChipSearch], phase: str) -> None:
        settled = sum(c.done for c in chips)
        elapsed_s = self.target.now_s() - self.started_s
        self.report(
            TuneProgress(index, self.voltages, volts, settled, len(chips), elapsed_s, phase)
        )


def _nonce_rate_per_mhz_s(
    chips: Sequence[_ChipSearch], counters: Sequence[tuple[int, int]], now_s: float
) -> float:
    """The typical chip's nonces per second per MHz since its trial began (0 if unknown)."""
    rates = [
        (n + e - chip.since[0] - chip.since[1]) / (now_s - chip.since_s) / chip.clock
        for chip, (n, e) in zip(chips, counters, strict=True)
        if now_s > chip.since_s and chip.clock > 0
    ]
    return max(0.0, statistics.median(rates)) if rates else 0.0
