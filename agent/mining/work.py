"""Where chains get their work from.

Until a pool is configured the agent hashes on locally generated headers: the hashrate
and the chips' health are real and measurable, nobody pays for the shares. With pools
configured, agent/mining/pool_work.py provides the same interface with real jobs.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from typing import Protocol

from hashbay.drivers.bm13xx.chain import DEFAULT_VERSION_MASK
from hashbay.drivers.bm13xx.frames import Job, NonceReply

BASE_VERSION = 0x2000_0000
LOCAL_NBITS = 0x1703_0ECD


class WorkSource(Protocol):
    def next_job(self, slot: int, job_id: int) -> Job: ...

    def on_nonce(self, slot: int, chip: int, reply: NonceReply, version_mask: int) -> None:
        """A nonce the slot's chain verified (chip = index in the chain); never raises."""

    def fresh(self, slot: int) -> bool:
        """True when the slot's current job is obsolete (clean_jobs): send a new one now."""

    @property
    def version_mask(self) -> int:
        """Version bits the chips should roll for the next job."""

    @property
    def available(self) -> bool:
        """False when there is no work worth hashing (every pool unreachable)."""


class LocalWork:
    """Fresh random block headers; each job differs, so no two chains repeat work."""

    version_mask = DEFAULT_VERSION_MASK
    available = True

    def __init__(self) -> None:
        self._counter = itertools.count()

    def on_nonce(self, slot: int, chip: int, reply: NonceReply, version_mask: int) -> None:
        """Nobody takes shares of local work."""

    def fresh(self, slot: int) -> bool:
        return False

    def next_job(self, slot: int, job_id: int) -> Job:
        seed = os.urandom(16) + next(self._counter).to_bytes(8, "big") + bytes((slot,))
        return Job(
            job_id=job_id,
            version=BASE_VERSION,
            prev_hash=hashlib.sha256(seed + b"prev").digest(),
            merkle_root=hashlib.sha256(seed + b"merkle").digest(),
            ntime=int(time.time()),
            nbits=LOCAL_NBITS,
        )
