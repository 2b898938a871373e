"""Frames decoded per second by the BM13xx reply decoder, clean and on a noisy line."""

from __future__ import annotations

import random
import time

from hashbay.drivers.bm13xx.frames import ReplyDecoder, nonce_reply, register_reply
from hashbay.tools.bench import Figure

FRAMES = 200_000
CHUNK = 4096  # what one read from a busy UART returns


def stream(noise: float, rng: random.Random) -> bytes:
    """Nonce replies with a register reply now and then; `noise` = garbage bytes per frame."""
    parts = []
    for i in range(FRAMES):
        if i % 50 == 0:
            parts.append(register_reply(0x1368_0000, (i * 2) & 0xFF, 0))
        else:
            parts.append(nonce_reply(rng.getrandbits(32), i & 15, i & 15, rng.getrandbits(16)))
        if noise and rng.random() < noise:
            parts.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 6))))
    return b"".join(parts)


def decode_rate(data: bytes) -> tuple[float, int]:
    decoder = ReplyDecoder()
    started = time.perf_counter()
    frames = 0
    for offset in range(0, len(data), CHUNK):
        frames += len(decoder.feed(data[offset : offset + CHUNK]))
    return frames / (time.perf_counter() - started), frames


def run() -> list[Figure]:
    rng = random.Random(1)
    clean_rate = max(decode_rate(stream(0.0, rng))[0] for _ in range(3))
    noisy = stream(0.01, rng)
    noisy_rate, _ = max(decode_rate(noisy) for _ in range(3))
    return [
        Figure("bm13xx_decode_clean", clean_rate, "frames/s", ">= 400000"),
        Figure("bm13xx_decode_noisy_1pct", noisy_rate, "frames/s", ">= 400000"),
    ]
