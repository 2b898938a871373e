"""Where chains get their work from.

Until a pool is configured the agent hashes on locally generated headers: the hashrate
and the chips' health are real and measurable, nobody pays for the shares. A pool client
(a later issue) provides the same interface with real jobs.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from typing import Protocol

from hashbay.drivers.bm13xx.frames import Job

BASE_VERSION = 0x2000_0000
LOCAL_NBITS = 0x1703_0ECD


class WorkSource(Protocol):
    def next_job(self, slot: int, job_id: int) -> Job: ...


class LocalWork:
    """Fresh random block headers; each job differs, so no two chains repeat work."""

    def __init__(self) -> None:
        self._counter = itertools.count()

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
