"""From a Stratum job to the header a chip hashes, and from a chip's nonce back to a share.

Pure arithmetic, shared by the agent's work source and the test pool (which rebuilds the
header from what was submitted): coinbase = coinb1 + extranonce1 + extranonce2 + coinb2,
merkle root = the coinbase hash folded with each branch, header = version, previous
hash, merkle root, ntime, nbits, nonce. Byte orders follow Bitcoin's header; the Stratum
text forms are decoded in stratum_protocol.
"""

from __future__ import annotations

from hashbay.agent.mining.stratum_protocol import Notify
from hashbay.drivers.bm13xx.frames import Job
from hashbay.drivers.bm13xx.work import hash_value, header, sha256d


def coinbase(notify: Notify, extranonce1: bytes, extranonce2: bytes) -> bytes:
    return notify.coinb1 + extranonce1 + extranonce2 + notify.coinb2


def merkle_root(coinbase_tx: bytes, branches: tuple[bytes, ...]) -> bytes:
    """The block's merkle root (header order) for this coinbase and the pool's branches."""
    root = sha256d(coinbase_tx)
    for branch in branches:
        root = sha256d(root + branch)
    return root


def chip_job(notify: Notify, extranonce1: bytes, extranonce2: bytes, job_id: int) -> Job:
    """The work a chain gets: a header template whose extranonce2 makes it unique."""
    return Job(
        job_id=job_id,
        version=notify.version,
        prev_hash=notify.prev_hash,
        merkle_root=merkle_root(coinbase(notify, extranonce1, extranonce2), notify.merkle_branches),
        ntime=notify.ntime,
        nbits=notify.nbits,
    )


def share_hash(job: Job, version: int, nonce: int) -> int:
    """SHA256d of the header as a number, the way it is compared with a target."""
    return hash_value(sha256d(header(job, version, nonce)))
