"""A pseudo-terminal standing in for a hashboard's UART.

The agent opens the slave side with pyserial exactly as it would open /dev/ttyAMA0; the
simulator owns the master side. The line behaves like a real one in the ways drivers
must cope with: bytes leave no faster than the baud rate allows, and when the host's
baud rate (read from the pty's termios) differs from the chips' the two sides hear
garbage. Noise can be injected: flipped bits and dropped bytes, in either direction.
"""

from __future__ import annotations

import contextlib
import os
import random
import termios
import tty
from dataclasses import dataclass

_SPEEDS = {
    getattr(termios, f"B{rate}"): rate
    for rate in (
        9600,
        19200,
        38400,
        57600,
        115200,
        230400,
        460800,
        500000,
        576000,
        921600,
        1000000,
        1152000,
        1500000,
        2000000,
        2500000,
        3000000,
    )
    if hasattr(termios, f"B{rate}")
}


@dataclass
class LineNoise:
    """Per-byte probabilities of a flipped bit and of a lost byte."""

    bit_flip: float = 0.0
    drop: float = 0.0

    @property
    def active(self) -> bool:
        return self.bit_flip > 0 or self.drop > 0


MAX_LINE_BURST_S = 0.05  # line time one service call may use (the clock's MAX_TICK_S)


class PtyLine:
    """Master side of one pty; `path` is what the agent opens."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.master_fd, self._slave_fd = os.openpty()
        tty.setraw(self._slave_fd)
        os.set_blocking(self.master_fd, False)
        self.path = os.ttyname(self._slave_fd)
        self.noise_in = LineNoise()
        self.noise_out = LineNoise()
        self._credit_bytes = 0.0

    def host_baud(self) -> int | None:
        """The baud rate the host configured on its side, or None if not a standard one."""
        try:
            speed = termios.tcgetattr(self.master_fd)[5]
        except termios.error:
            return None
        return _SPEEDS.get(speed)

    def read(self) -> bytes:
        """Whatever the host has written, after inbound noise."""
        chunks = []
        while True:
            try:
                chunk = os.read(self.master_fd, 4096)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return self._garble(b"".join(chunks), self.noise_in)

    def budget(self, dt_s: float, baud: int, *, sending: bool = True) -> int:
        """Bytes the line can carry in dt at this baud (8N1: 10 bits a byte).

        An idle line builds up no credit (a UART cannot send yesterday's silence), and a
        late service call is credited at most MAX_LINE_BURST_S of the line: like the
        simulator's clock, a starved line is a slower line, not a burst."""
        if not sending:
            self._credit_bytes = 0.0
            return 0
        credit = self._credit_bytes + min(dt_s, MAX_LINE_BURST_S) * baud / 10
        self._credit_bytes = min(credit, MAX_LINE_BURST_S * baud / 10)
        return int(self._credit_bytes)

    def write(self, data: bytes) -> int:
        """Send to the host (after outbound noise); returns bytes taken off the budget."""
        if not data:
            return 0
        self._credit_bytes -= len(data)
        payload = self._garble(data, self.noise_out)
        # Host not reading: a real UART would overrun, so drop like one.
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.master_fd, payload)
        return len(data)

    def _garble(self, data: bytes, noise: LineNoise) -> bytes:
        if not data or not noise.active:
            return data
        out = bytearray()
        for byte in data:
            if self._rng.random() < noise.drop:
                continue
            flip = 1 << self._rng.randrange(8) if self._rng.random() < noise.bit_flip else 0
            out.append(byte ^ flip)
        return bytes(out)

    def garbage(self, length: int) -> bytes:
        """What a receiver at the wrong baud rate makes of `length` bytes."""
        return bytes(self._rng.getrandbits(8) for _ in range(max(1, length // 2)))

    def close(self) -> None:
        for fd in (self.master_fd, self._slave_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
