"""One hashboard's BM13xx chain over a serial port: enumerate, configure, send work, and
turn the chips' replies into verified nonces and per-chip counters.

The port is injected (pyserial's Serial on /dev/ttyAMA0 or on the simulator's pty), and
the driver never loops by itself: inside `async with chain.attached()` the event loop
calls it back when bytes arrive. Every frequency it sets passes the safe envelope first.
Every nonce is checked (SHA256d of the rebuilt header against the check target) before it
counts: a nonce that does not verify is that chip's hardware error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import serial

from hashbay.drivers.bm13xx import frames, registers
from hashbay.drivers.bm13xx.frames import Job, NonceReply, RegisterReply
from hashbay.drivers.bm13xx.registers import Reg
from hashbay.drivers.bm13xx.work import (
    HASHES_PER_DIFF1,
    hash_value,
    header,
    rolled_version,
    sha256d,
    zero_bits_target,
)
from hashbay.drivers.envelope import SafetyEnvelope
from hashbay.drivers.errors import DeviceMissingError, HardwareError, ProtocolError

DEFAULT_VERSION_MASK = 0x1FFF_E000


class SerialLink(Protocol):
    """The part of pyserial's Serial this driver uses."""

    baudrate: int

    def write(self, data: bytes, /) -> int | None: ...
    def read(self, size: int = 1, /) -> bytes: ...
    @property
    def in_waiting(self) -> int: ...
    def fileno(self) -> int: ...
    def flush(self) -> None: ...
    def reset_input_buffer(self) -> None: ...
    def close(self) -> None: ...


def open_serial(path: str, baud: int = registers.DEFAULT_BAUD) -> serial.Serial:
    """Open a chain's UART, or DeviceMissingError naming the device."""
    try:
        return serial.Serial(path, baudrate=baud, timeout=0, write_timeout=1.0, exclusive=True)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise DeviceMissingError(
            f"serial port {path} cannot be opened ({exc}); check the slot's uart setting, "
            "that the UART is enabled, and that the user is in the dialout group"
        ) from exc


@dataclass
class ChipCounters:
    """What one chip has done since the chain was enumerated."""

    nonces: int = 0  # verified
    hw_errors: int = 0  # reported but did not verify (or for a job we never sent)
    timeouts: int = 0  # polls it did not answer
    work: float = 0.0  # hashes represented by its verified nonces
    last_nonce_at: float | None = None
    last_answer_at: float | None = None


@dataclass(frozen=True)
class ChainInfo:
    chip_count: int
    chip_id: int
    model: str
    interval: int

    def address(self, index: int) -> int:
        return index * self.interval

    def index(self, address: int) -> int | None:
        if address % self.interval or address // self.interval >= self.chip_count:
            return None
        return address // self.interval


@dataclass
class ChainCounters:
    nonces: int = 0
    hw_errors: int = 0
    stale: int = 0
    unknown_chip: int = 0
    chips: list[ChipCounters] = field(default_factory=list)


READ_BACKSTOP = 4.0  # real time, in timeouts, a read may wait if the bus clock stops


class Bm13xxChain:
    def __init__(
        self,
        port: SerialLink,
        *,
        slot: int,
        envelope: SafetyEnvelope,
        check_zero_bits: int = 32,
        clock: Callable[[], float] = time.monotonic,
        on_nonce: Callable[[int, NonceReply], None] | None = None,
    ) -> None:
        self.port = port
        self.slot = slot
        self._envelope = envelope
        self._check_target = zero_bits_target(check_zero_bits)
        self._clock = clock
        self._on_nonce = on_nonce
        self.decoder = frames.ReplyDecoder()
        self.info: ChainInfo | None = None
        self.counters = ChainCounters()
        self.ticket_difficulty = 1
        self.version_mask = 0
        self.freq_mhz: list[float] = []
        self._jobs: dict[int, Job] = {}
        self._register_waiters: list[tuple[int, list[RegisterReply], asyncio.Event]] = []

    # -- plumbing ----------------------------------------------------------------------

    @asynccontextmanager
    async def attached(self) -> AsyncIterator[Bm13xxChain]:
        """While inside, the event loop feeds the chain's replies to this driver."""
        loop = asyncio.get_running_loop()
        loop.add_reader(self.port.fileno(), self._readable)
        try:
            yield self
        finally:
            loop.remove_reader(self.port.fileno())

    def _readable(self) -> None:
        try:
            data = self.port.read(max(self.port.in_waiting, 1))
        except (serial.SerialException, OSError) as exc:
            raise HardwareError(f"slot {self.slot} chain UART read failed: {exc}") from exc
        if data:
            self.feed(data)

    def _drain_waiting(self) -> bool:
        """Read whatever the UART holds now; whether there was anything."""
        try:
            waiting = self.port.in_waiting
        except (serial.SerialException, OSError) as exc:
            raise HardwareError(f"slot {self.slot} chain UART read failed: {exc}") from exc
        if not waiting:
            return False
        self._readable()
        return True

    def send(self, frame: bytes) -> None:
        try:
            self.port.write(frame)
        except (serial.SerialException, OSError) as exc:
            raise HardwareError(f"slot {self.slot} chain UART write failed: {exc}") from exc

    def feed(self, data: bytes) -> None:
        """Decode bytes from the chain and account every reply."""
        for reply in self.decoder.feed(data):
            if isinstance(reply, NonceReply):
                self._nonce(reply)
            else:
                for register, replies, event in self._register_waiters:
                    if reply.register == register:
                        replies.append(reply)
                        event.set()

    # -- enumeration -------------------------------------------------------------------

    async def read_all(
        self, register: int, *, quiet_s: float = 0.05, timeout_s: float = 2.0
    ) -> list[RegisterReply]:
        """Broadcast a register read; collect replies until the line has been quiet.

        Quiet and the deadline are measured on the chain's clock (the bus clock: real
        time on a board, simulated time on the simulated rig), and quiet means nothing
        waiting in the UART, not merely no wake-up: a loop that ran late, or a simulator
        that ran slow, must not turn replies still on their way into silent chips. A real
        time backstop (READ_BACKSTOP x timeout_s) ends the wait if that clock stops."""
        replies: list[RegisterReply] = []
        event = asyncio.Event()
        waiter = (register, replies, event)
        self._register_waiters.append(waiter)
        try:
            self.send(frames.read_register(register))
            loop = asyncio.get_running_loop()
            backstop = loop.time() + timeout_s * READ_BACKSTOP
            deadline = self._clock() + timeout_s
            heard_at = self._clock()
            while (left := deadline - self._clock()) > 0 and loop.time() < backstop:
                event.clear()
                try:
                    async with asyncio.timeout(max(min(quiet_s, left), 0.001)):
                        await event.wait()
                    heard_at = self._clock()
                    continue
                except TimeoutError:
                    if self._drain_waiting():
                        heard_at = self._clock()
                        continue
                if replies and self._clock() - heard_at >= quiet_s:
                    break
            return replies
        finally:
            self._register_waiters.remove(waiter)

    async def enumerate(self, *, expected_chips: int | None = None) -> ChainInfo:
        """Count the chips, give them evenly spaced addresses, and check they took them."""
        found = await self.read_all(Reg.CHIP_ID, quiet_s=0.1, timeout_s=3.0)
        if not found:
            raise HardwareError(
                f"slot {self.slot}: no chip answered the chip-id read; check board power, "
                "chain reset and the UART wiring"
            )
        chip_ids = {registers.chip_id_of(r.value) for r in found}
        if len(chip_ids) != 1:
            ids = ", ".join(f"{c:#06x}" for c in sorted(chip_ids))
            raise ProtocolError(f"slot {self.slot}: chips disagree on their id ({ids})")
        chip_id = chip_ids.pop()
        model = registers.CHIP_IDS.get(chip_id)
        if model is None:
            raise ProtocolError(f"slot {self.slot}: unknown chip id {chip_id:#06x}")
        count = len(found)
        if expected_chips is not None and count != expected_chips:
            raise HardwareError(
                f"slot {self.slot}: {count} chips answered, the module declares "
                f"{expected_chips}; a chip or its UART relay has failed"
            )
        info = ChainInfo(count, chip_id, model, max(1, 256 // count))
        self.send(frames.chain_inactive())
        for index in range(count):
            self.send(frames.set_address(info.address(index)))
        check = await self.read_all(Reg.CHIP_ID, quiet_s=0.1, timeout_s=3.0)
        addresses = sorted(r.chip for r in check)
        if addresses != [info.address(i) for i in range(count)]:
            raise HardwareError(
                f"slot {self.slot}: addressing failed ({len(check)} of {count} chips "
                "answered at their new address)"
            )
        self.info = info
        self.counters = ChainCounters(chips=[ChipCounters() for _ in range(count)])
        self.freq_mhz = [0.0] * count
        self._jobs.clear()
        return info

    # -- configuration -----------------------------------------------------------------

    def _require_info(self) -> ChainInfo:
        if self.info is None:
            raise HardwareError(f"slot {self.slot}: chain not enumerated")
        return self.info

    def set_version_mask(self, mask: int = DEFAULT_VERSION_MASK) -> None:
        self.send(frames.write_register(Reg.VERSION_MASK, registers.version_mask_value(mask)))
        self.version_mask = mask

    def set_ticket_difficulty(self, difficulty: int) -> None:
        value = registers.ticket_mask_value(difficulty)
        self.send(frames.write_register(Reg.TICKET_MASK, value))
        self.ticket_difficulty = registers.ticket_difficulty(value)

    async def set_fast_baud(self) -> None:
        """Switch chips and port to the fast rate; the chips switch after the frame."""
        self.send(frames.write_register(Reg.FAST_UART, registers.FAST_UART_VALUE))
        self.port.flush()
        await asyncio.sleep(0.02)
        self.port.baudrate = registers.FAST_BAUD
        self.port.reset_input_buffer()

    async def ramp_frequency(
        self,
        target_mhz: float,
        *,
        chip: int | None = None,
        step_mhz: float = 6.25,
        step_delay_s: float = 0.05,
    ) -> float:
        """Move the PLL to target in small steps; each step passes the envelope first.

        Returns the frequency actually set (the nearest the PLL can make).
        """
        info = self._require_info()
        self._envelope.chip_frequency(self.slot, target_mhz)
        indices = range(info.chip_count) if chip is None else [chip]
        current = max((self.freq_mhz[i] for i in indices), default=0.0) or 50.0
        steps = max(1, int(abs(target_mhz - current) // step_mhz) + 1)
        actual = current
        for n in range(1, steps + 1):
            wanted = current + (target_mhz - current) * n / steps
            setting = self._pll(wanted)
            address = None if chip is None else info.address(chip)
            self.send(frames.write_register(Reg.PLL0, setting.register_value(), address))
            actual = setting.freq_mhz
            for i in indices:
                self.freq_mhz[i] = actual
            if n < steps:
                await asyncio.sleep(step_delay_s)
        return actual

    def _pll(self, wanted_mhz: float) -> registers.PllSetting:
        """The PLL setting for a clock the envelope accepts, never rounded above its limit
        (the nearest divider setting may lie a fraction of a MHz past it)."""
        ceiling = self._envelope.board(self.slot).freq_max_mhz
        asked = self._envelope.chip_frequency(self.slot, wanted_mhz)
        setting = registers.pll_for(asked)
        while setting.freq_mhz > ceiling and asked > 0:
            asked -= 0.5
            setting = registers.pll_for(asked)
        return setting

    async def ramp_chips(
        self,
        targets_mhz: Sequence[float],
        *,
        step_mhz: float = 6.25,
        step_delay_s: float = 0.05,
    ) -> list[float]:
        """Move every chip toward its own clock at once, at most `step_mhz` per round.

        Per-chip tuning gives each die its own clock; ramping them one after another would
        take one round per chip and step, so all move together and only the chips that change are
        written. Every value passes the envelope first. Returns the clocks now set.
        """
        info = self._require_info()
        if len(targets_mhz) != info.chip_count:
            raise ValueError(f"{len(targets_mhz)} clocks for {info.chip_count} chips")
        for target in targets_mhz:
            self._envelope.chip_frequency(self.slot, target)
        spans = [abs(t - (f or 50.0)) for t, f in zip(targets_mhz, self.freq_mhz, strict=True)]
        for _ in range(int(max(spans, default=0.0) // step_mhz) + 3):  # PLL rounding ends it
            moves: dict[int, registers.PllSetting] = {}
            for i, target in enumerate(targets_mhz):
                current = self.freq_mhz[i] or 50.0
                wanted = current + max(-step_mhz, min(step_mhz, target - current))
                setting = self._pll(wanted)
                if setting.freq_mhz != self.freq_mhz[i]:
                    moves[i] = setting
            if not moves:
                break
            settings = set(moves.values())
            if len(moves) == info.chip_count and len(settings) == 1:
                self.send(frames.write_register(Reg.PLL0, settings.pop().register_value(), None))
            else:
                for i, setting in moves.items():
                    frame = frames.write_register(
                        Reg.PLL0, setting.register_value(), info.address(i)
                    )
                    self.send(frame)
            for i, setting in moves.items():
                self.freq_mhz[i] = setting.freq_mhz
            await asyncio.sleep(step_delay_s)
        return list(self.freq_mhz)

    # -- work --------------------------------------------------------------------------

    def send_job(self, job: Job) -> None:
        """Send work to every chip; its id now refers to this job for verification."""
        self._require_info()
        self._jobs[job.job_id] = job
        self.send(frames.job_frame(job))

    def _nonce(self, reply: NonceReply) -> None:
        counters = self.counters
        info = self.info
        index = info.index(reply.chip) if info is not None else None
        if index is None:
            counters.unknown_chip += 1
            counters.hw_errors += 1
            return
        chip = counters.chips[index]
        job = self._jobs.get(reply.job_id)
        if job is None:
            counters.stale += 1
            chip.hw_errors += 1
            counters.hw_errors += 1
            return
        version = rolled_version(job, reply.version_bits, self.version_mask)
        digest = sha256d(header(job, version, reply.nonce))
        now = self._clock()
        chip.last_answer_at = now
        if hash_value(digest) > self._check_target:
            chip.hw_errors += 1
            counters.hw_errors += 1
            return
        chip.nonces += 1
        chip.work += self.ticket_difficulty * HASHES_PER_DIFF1
        chip.last_nonce_at = now
        counters.nonces += 1
        if self._on_nonce is not None:
            self._on_nonce(index, reply)

    async def poll_chips(self, *, timeout_s: float = 1.0) -> list[int]:
        """Read a register from every chip; returns the indices that did not answer."""
        info = self._require_info()
        replies = await self.read_all(Reg.CHIP_ID, quiet_s=0.1, timeout_s=timeout_s)
        now = self._clock()
        seen = {info.index(r.chip) for r in replies}
        missing = []
        for index, chip in enumerate(self.counters.chips):
            if index in seen:
                chip.last_answer_at = now
            else:
                chip.timeouts += 1
                missing.append(index)
        return missing
