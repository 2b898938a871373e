"""Block headers and proof of work: the arithmetic shared by nonce checks and the simulator.

A chip reports a nonce when SHA256d of the 80-byte header (with its rolled version) is
below its ticket target. Hashes are compared as little-endian 256-bit integers, the way
Bitcoin compares them to a target; "zero bits" counts leading zeros of that integer.
"""

from __future__ import annotations

import hashlib
import struct

from hashbay.drivers.bm13xx.frames import Job

DIFF1_ZERO_BITS = 32  # difficulty 1: the hash's top 32 bits are zero
HASHES_PER_DIFF1 = 2**32


def header(job: Job, version: int, nonce: int) -> bytes:
    """The 80-byte block header a chip hashes for this job, version and nonce."""
    return (
        struct.pack("<I", version)
        + job.prev_hash
        + job.merkle_root
        + struct.pack("<III", job.ntime, job.nbits, nonce)
    )


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def hash_value(digest: bytes) -> int:
    return int.from_bytes(digest, "little")


def zero_bits_target(zero_bits: int) -> int:
    """The largest hash value (inclusive) that has at least this many leading zero bits."""
    return (1 << (256 - zero_bits)) - 1


def meets(job: Job, version: int, nonce: int, target: int) -> bool:
    return hash_value(sha256d(header(job, version, nonce))) <= target


def rolled_version(job: Job, version_bits: int, mask: int) -> int:
    """The version a chip hashed: the job's version with its rolled bits in the mask."""
    return (job.version & ~mask) | ((version_bits << 13) & mask)
