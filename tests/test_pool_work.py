"""The pool work source: unique work per chain, and every verified nonce judged against the
pool's target before it becomes a share. Real pool, real session, real manager; only the
nonces are made here, the way a chip would find them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from hashbay.agent.mining.pool_settings import PoolSettings
from hashbay.agent.mining.pool_work import PoolWork
from hashbay.agent.mining.pools import PoolManager, PoolState
from hashbay.agent.mining.stratum_protocol import target_of
from hashbay.agent.mining.stratum_settings import StratumSettings
from hashbay.drivers.bm13xx.chain import DEFAULT_VERSION_MASK
from hashbay.drivers.bm13xx.frames import Job, NonceReply
from hashbay.drivers.bm13xx.work import rolled_version
from hashbay.tools.pool import TestPool, solve

SETTINGS = StratumSettings(connect_timeout_s=5, response_timeout_s=5, backoff_min_s=0.05)
CHIP = 3


async def until(check: Callable[[], object], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        await asyncio.sleep(0.01)


@dataclass
class Mining:
    pool: TestPool
    manager: PoolManager
    work: PoolWork

    def nonce(self, job: Job, *, version_bits: int = 1, target: int | None = None) -> NonceReply:
        """What a chip would report for this job: a nonce meeting `target` (the pool's)."""
        version = rolled_version(job, version_bits, DEFAULT_VERSION_MASK)
        goal = target if target is not None else self.manager_target()
        nonce = solve(job, goal, version)
        return NonceReply(nonce, CHIP * 2, 0, 0, job.job_id, version_bits, 0)

    def manager_target(self) -> int:
        difficulty = self.manager.status()[0].difficulty
        assert difficulty is not None
        return target_of(difficulty)

    def submitted(self) -> int:
        return self.pool.accepted + self.pool.rejected


def manager_ready_for(manager: PoolManager) -> bool:
    return manager.status()[0].state is PoolState.ALIVE


@asynccontextmanager
async def mining_on(pool: TestPool | None = None) -> AsyncIterator[Mining]:
    async with pool or TestPool() as live:
        work = PoolWork()
        manager = PoolManager((PoolSettings(url=live.url, user="acct.rig1"),), SETTINGS, work)
        task = asyncio.create_task(manager.run())
        try:
            await until(lambda: manager_ready_for(manager) and manager.active == 0)
            yield Mining(live, manager, work)
        finally:
            task.cancel()
            await asyncio.wait({task}, timeout=5)


async def test_every_chain_and_every_job_gets_its_own_extranonce2_and_merkle_root() -> None:
    async with mining_on() as m:
        jobs = [m.work.next_job(slot, job_id) for slot in range(3) for job_id in range(16)]
        assert len({job.merkle_root for job in jobs}) == len(jobs)
        assert {job.prev_hash for job in jobs} == {m.pool.current.prev_hash}
        assert {job.ntime for job in jobs} == {m.pool.current.ntime}


async def test_a_verified_nonce_becomes_a_share_the_pool_accepts() -> None:
    async with mining_on() as m:
        job = m.work.next_job(0, 5)
        m.work.on_nonce(0, CHIP, m.nonce(job, version_bits=0x1234), DEFAULT_VERSION_MASK)
        await until(lambda: m.pool.accepted == 1)
        result = m.pool.results[-1]
        assert (result.user, result.job_id) == ("acct.rig1", m.pool.current.job_id)
        assert m.work.counters.submitted == 1
        assert len(m.work.share_path_s) == 1
        assert m.manager.status()[0].counters.accepted == 1


async def test_a_nonce_below_the_pools_difficulty_is_not_sent() -> None:
    async with mining_on() as m:
        m.pool.set_difficulty(64.0)
        await until(lambda: m.manager_target() < 2**230)
        job = m.work.next_job(0, 1)
        easy = m.nonce(job, target=(1 << 248) - 1)  # the simulated chips' ticket
        m.work.on_nonce(0, CHIP, easy, DEFAULT_VERSION_MASK)
        assert m.work.counters.below_target == 1
        assert m.work.counters.submitted == 0


async def test_the_same_nonce_twice_is_sent_once() -> None:
    async with mining_on() as m:
        job = m.work.next_job(1, 2)
        reply = m.nonce(job)
        m.work.on_nonce(1, CHIP, reply, DEFAULT_VERSION_MASK)
        m.work.on_nonce(1, CHIP, reply, DEFAULT_VERSION_MASK)
        await until(lambda: m.pool.accepted == 1)
        assert m.work.counters.duplicates == 1
        assert m.submitted() == 1


async def test_after_clean_jobs_old_work_is_stale_and_slots_are_told_to_refresh() -> None:
    async with mining_on() as m:
        refreshed: list[bool] = []
        m.work.on_fresh = lambda: refreshed.append(True)
        job = m.work.next_job(2, 7)
        reply = m.nonce(job)
        assert not m.work.fresh(2)
        m.pool.new_job(clean=True)
        await until(lambda: refreshed)
        assert m.work.fresh(2)
        m.work.on_nonce(2, CHIP, reply, DEFAULT_VERSION_MASK)
        assert m.work.counters.stale == 1
        assert m.manager.status()[0].counters.stale == 1
        new = m.work.next_job(2, 8)
        assert not m.work.fresh(2)
        m.work.on_nonce(2, CHIP, m.nonce(new), DEFAULT_VERSION_MASK)
        await until(lambda: m.pool.accepted == 1)
        assert m.submitted() == 1


async def test_new_jobs_without_clean_keep_older_work_valid() -> None:
    async with mining_on() as m:
        job = m.work.next_job(0, 3)
        newer = m.pool.new_job(clean=False)
        await until(lambda: m.work.pool_job == newer.job_id)
        assert not m.work.fresh(0)
        m.work.on_nonce(0, CHIP, m.nonce(job), DEFAULT_VERSION_MASK)
        await until(lambda: m.pool.accepted == 1)


async def test_chips_roll_only_the_bits_the_pool_granted() -> None:
    async with mining_on(TestPool(version_mask=0x0000_6000)) as m:
        assert m.work.version_mask == 0x6000
        job = m.work.next_job(0, 4)
        outside = m.nonce(job, version_bits=0x4)  # bit 15: the chips' mask, not the pool's
        m.work.on_nonce(0, CHIP, outside, DEFAULT_VERSION_MASK)
        assert m.work.counters.outside_mask == 1
        inside = m.nonce(job, version_bits=0x3)  # bits 13 and 14
        m.work.on_nonce(0, CHIP, inside, 0x6000)
        await until(lambda: m.pool.accepted == 1)


async def test_without_a_pool_chains_get_stand_in_work_and_nothing_is_sent() -> None:
    work = PoolWork()
    job = work.next_job(0, 1)
    assert work.version_mask == DEFAULT_VERSION_MASK
    work.on_nonce(0, CHIP, NonceReply(1, 6, 0, 0, 1, 0, 0), DEFAULT_VERSION_MASK)
    work.on_nonce(0, CHIP, NonceReply(1, 6, 0, 0, 9, 0, 0), DEFAULT_VERSION_MASK)
    assert work.counters.no_pool == 2
    assert work.counters.submitted == 0
    assert len(job.merkle_root) == 32
    assert work.available
