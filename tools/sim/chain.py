"""A chain of emulated BM13xx chips: what a hashboard's UART line would say back.

It understands the real command set (chain inactive and set-address enumeration, register
reads and writes to one chip or all, PLL, ticket mask, version rolling, baud switch, job
frames) and ignores frames with a bad CRC, as chips do. Working chips answer jobs with
real nonces: SHA256d of the header they build from the job, the rolled version and the
nonce is at or below the simulator's ticket target (easy, so it stays cheap: by default
one hash in 256 qualifies). Each reported nonce stands for `ticket difficulty * 2^32`
hashes, the same work a real chip's nonce stands for, so hashrate computed from nonces
matches the physical model. Pushed past its stable frequency a chip returns a growing
share of wrong nonces, and a degrading chip does so more and more over time.

No I/O and no clock: `receive` takes host bytes, `step(dt)` advances time, `take_output`
hands back the bytes to send.
"""

from __future__ import annotations

import hashlib
import math
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from hashbay.drivers.bm13xx import frames, registers
from hashbay.drivers.bm13xx.frames import Cmd, Command, Job
from hashbay.drivers.bm13xx.registers import Reg
from hashbay.drivers.bm13xx.work import zero_bits_target
from hashbay.tools.sim import physics
from hashbay.tools.sim.physics import ChipSpec, SiliconSample

DEFAULT_FREQ_MHZ = 50.0
BIG_CORES = {0x1366: 112, 0x1368: 80, 0x1370: 128}
NONCE_SEARCH_LIMIT = 1 << 17  # the nonce bits left to a chip once address and core are fixed
MIN_CHIP_V = 0.22  # below this the chips' logic does not run at all


@dataclass
class SimChip:
    index: int
    spec: ChipSpec
    silicon: SiliconSample
    address: int | None = 0
    freq_mhz: float = DEFAULT_FREQ_MHZ
    ticket_difficulty: int = 1
    version_mask: int = 0
    registers: dict[int, int] = field(default_factory=dict)
    dead: bool = False  # fault: stopped answering (UART relay still forwards)
    hung: bool = False  # crashed by an abrupt PLL jump; needs a chain reset
    degradation: float = 0.0  # 0 healthy .. 1 failed
    degradation_per_s: float = 0.0
    nonces: int = 0
    wrong_nonces: int = 0

    @property
    def answering(self) -> bool:
        return not (self.dead or self.hung)

    def reset(self) -> None:
        self.address = 0
        self.freq_mhz = DEFAULT_FREQ_MHZ
        self.ticket_difficulty = 1
        self.version_mask = 0
        self.registers.clear()
        self.hung = False


@dataclass
class ChainStats:
    commands: int = 0
    jobs: int = 0
    replies: int = 0
    nonces: int = 0
    wrong_nonces: int = 0


class SimChain:
    """The chips of one board, in chain order (index 0 is nearest the controller)."""

    def __init__(
        self,
        spec: ChipSpec,
        silicon: list[SiliconSample],
        rng: random.Random,
        *,
        sim_zero_bits: int = 8,
        pll_jump_limit_mhz: float = 100.0,
    ) -> None:
        self.spec = spec
        self.chips = [SimChip(i, spec, s) for i, s in enumerate(silicon)]
        self._rng = rng
        self.target = zero_bits_target(sim_zero_bits)
        self.pll_jump_limit_mhz = pll_jump_limit_mhz
        self.decoder = frames.CommandDecoder()
        self.baud = registers.DEFAULT_BAUD
        self.powered = False
        self.jobs: dict[int, Job] = {}
        self.current_job: int | None = None
        self.stats = ChainStats()
        self._out = bytearray()
        self._big_cores = BIG_CORES.get(spec.chip_id, 64)

    # -- power and reset ----------------------------------------------------------------

    def set_powered(self, powered: bool) -> None:
        """Rail up and reset released. Losing either resets every chip."""
        if powered != self.powered:
            self.powered = powered
            self.reset()

    def reset(self) -> None:
        for chip in self.chips:
            chip.reset()
        self.baud = registers.DEFAULT_BAUD
        self.jobs.clear()
        self.current_job = None
        self.decoder = frames.CommandDecoder()
        self._out.clear()

    # -- host → chips ------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        if not self.powered:
            return
        for item in self.decoder.feed(data):
            if isinstance(item, Job):
                self.stats.jobs += 1
                self.jobs[item.job_id] = item
                self.current_job = item.job_id
            else:
                self.stats.commands += 1
                self._command(item)

    def _command(self, command: Command) -> None:
        if command.cmd is Cmd.CHAIN_INACTIVE:
            for chip in self.chips:
                chip.address = None
        elif command.cmd is Cmd.SET_ADDRESS:
            for chip in self.chips:  # a chip that does not answer takes no address either
                if chip.address is None and chip.answering:
                    chip.address = command.chip
                    break
        elif command.cmd is Cmd.READ_REGISTER:
            for chip in self._targets(command):
                if chip.answering and chip.address is not None:
                    value = self._read(chip, command.register)
                    self._out += frames.register_reply(value, chip.address, command.register)
                    self.stats.replies += 1
        elif command.cmd is Cmd.WRITE_REGISTER and command.value is not None:
            for chip in self._targets(command):
                self._write(chip, command.register, command.value)
            if command.register == Reg.FAST_UART:
                baud = registers.baud_of(command.value)
                if baud is not None:
                    self.baud = baud

    def _targets(self, command: Command) -> list[SimChip]:
        if command.broadcast:
            return self.chips
        return [chip for chip in self.chips if chip.address == command.chip]

    def _read(self, chip: SimChip, register: int) -> int:
        if register == Reg.CHIP_ID:
            return registers.chip_id_value(self.spec.chip_id)
        if register == Reg.PLL0 and register not in chip.registers:
            return registers.pll_for(DEFAULT_FREQ_MHZ).register_value()
        return chip.registers.get(register, 0)

    def _write(self, chip: SimChip, register: int, value: int) -> None:
        if not chip.answering:
            return
        chip.registers[register] = value
        if register == Reg.PLL0:
            try:
                freq = registers.decode_pll(value).freq_mhz
            except Exception:
                return
            if abs(freq - chip.freq_mhz) > self.pll_jump_limit_mhz:
                chip.hung = True  # the PLL lost lock under load; only a reset recovers it
            chip.freq_mhz = freq
        elif register == Reg.TICKET_MASK:
            try:
                chip.ticket_difficulty = registers.ticket_difficulty(value)
            except Exception:
                return
        elif register == Reg.VERSION_MASK:
            chip.version_mask = registers.version_mask_of(value)

    # -- chips → host ------------------------------------------------------------------

    def take_output(self, limit: int | None = None) -> bytes:
        """Up to `limit` bytes of pending replies (the UART's speed is the caller's job)."""
        count = len(self._out) if limit is None else min(limit, len(self._out))
        data = bytes(self._out[:count])
        del self._out[:count]
        return data

    @property
    def pending_output(self) -> int:
        return len(self._out)

    # -- hashing -----------------------------------------------------------------------

    def hashrate_hs(self, chip: SimChip) -> float:
        if not (self.powered and chip.answering):
            return 0.0
        return chip.freq_mhz * 1e6 * self.spec.small_cores

    def step(
        self,
        dt_s: float,
        chip_v: float,
        chip_temp_c: Callable[[SimChip], float],
    ) -> None:
        """Advance dt seconds of hashing: each chip finds its Poisson share of nonces."""
        for chip in self.chips:
            if chip.degradation_per_s:
                chip.degradation = min(1.0, chip.degradation + chip.degradation_per_s * dt_s)
        job = self.jobs.get(self.current_job) if self.current_job is not None else None
        if job is None or not self.powered or chip_v < MIN_CHIP_V:
            return
        for chip in self.chips:
            if not chip.answering or chip.address is None:
                continue
            work = self.hashrate_hs(chip) * dt_s / (chip.ticket_difficulty * 2**32)
            for _ in range(poisson(self._rng, work)):
                p_wrong = physics.error_probability(
                    self.spec,
                    chip.silicon,
                    chip.freq_mhz,
                    chip_v,
                    chip_temp_c(chip),
                    degradation=chip.degradation,
                )
                self._emit_nonce(chip, job, wrong=self._rng.random() < p_wrong)

    def _emit_nonce(self, chip: SimChip, job: Job, *, wrong: bool) -> None:
        assert chip.address is not None and self.current_job is not None
        core = self._rng.randrange(self._big_cores)
        prefix = (core << 25) | (chip.address << 17)
        version_bits = self._rng.getrandbits(16) if chip.version_mask else 0
        version = (job.version & ~chip.version_mask) | ((version_bits << 13) & chip.version_mask)
        nonce = self._search(job, version, prefix, wrong=wrong)
        if nonce is None:
            return
        self._out += frames.nonce_reply(
            nonce, self.current_job, self._rng.randrange(16), version_bits
        )
        chip.nonces += 1
        self.stats.nonces += 1
        if wrong:
            chip.wrong_nonces += 1
            self.stats.wrong_nonces += 1

    def _search(self, job: Job, version: int, prefix: int, *, wrong: bool) -> int | None:
        """A nonce (little-endian value) carrying prefix in its top wire bits that meets the
        target — or, for a hardware error, one that does not."""
        head = struct.pack("<I", version) + job.prev_hash + job.merkle_root
        midstate = hashlib.sha256(head[:64])
        tail = head[64:] + struct.pack("<II", job.ntime, job.nbits)
        start = self._rng.randrange(NONCE_SEARCH_LIMIT)
        sha256 = hashlib.sha256
        target = self.target
        for offset in range(NONCE_SEARCH_LIMIT):
            wire = prefix | ((start + offset) % NONCE_SEARCH_LIMIT)
            nonce_bytes = wire.to_bytes(4, "big")
            inner = midstate.copy()
            inner.update(tail + nonce_bytes)
            good = int.from_bytes(sha256(inner.digest()).digest(), "little") <= target
            if good != wrong:
                return int.from_bytes(nonce_bytes, "little")
        return None


def poisson(rng: random.Random, mean: float) -> int:
    """Poisson draw; Knuth's method is fine for the small means of one step."""
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count
