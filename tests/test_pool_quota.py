"""Quota split between pools: the scheduler alone, the work lanes, and the pool manager
against real test pools on loopback (all quota pools connected, work split by quota,
the observed split reported, a pool list replaced without disturbing the pools that stay)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hashbay.agent.mining.pool_quota import SmoothRoundRobin, split_percent
from hashbay.agent.mining.pool_settings import PoolSettings
from hashbay.agent.mining.pool_work import PoolWork
from hashbay.agent.mining.pools import PoolManager, PoolState
from hashbay.agent.mining.stratum_protocol import target_of
from hashbay.drivers.bm13xx.chain import DEFAULT_VERSION_MASK
from hashbay.drivers.bm13xx.frames import NonceReply
from hashbay.drivers.bm13xx.work import rolled_version
from hashbay.tools.pool import SIM_DIFFICULTY, TestPool, solve

from .test_pool_failover import SETTINGS, Rig, until

# -- the scheduler ------------------------------------------------------------------------


def test_seventy_thirty_interleaves_and_is_exact_every_ten_picks() -> None:
    picker: SmoothRoundRobin[str] = SmoothRoundRobin()
    picks = "".join(picker.pick({"a": 70, "b": 30}) for _ in range(100))
    assert picks[:10].count("a") == 7 and "aaaa" not in picks  # never 4 in a row
    assert all(picks[n : n + 10].count("a") == 7 for n in range(0, 100, 10))


@given(
    weights=st.dictionaries(st.integers(0, 7), st.integers(1, 1000), min_size=1, max_size=8),
    picks=st.integers(1, 300),
)
def test_every_key_stays_within_its_exact_share(weights: dict[int, int], picks: int) -> None:
    picker: SmoothRoundRobin[int] = SmoothRoundRobin()
    counts = dict.fromkeys(weights, 0)
    total = sum(weights.values())
    for n in range(1, picks + 1):
        counts[picker.pick(weights)] += 1
        for key, weight in weights.items():
            assert abs(counts[key] - n * weight / total) <= max(1, len(weights) - 1)


def test_a_key_that_leaves_gets_no_more_picks_and_one_that_joins_gets_its_share() -> None:
    picker: SmoothRoundRobin[str] = SmoothRoundRobin()
    for _ in range(5):
        picker.pick({"a": 1, "b": 1})
    assert {picker.pick({"a": 1}) for _ in range(5)} == {"a"}
    picks = [picker.pick({"a": 1, "c": 3}) for _ in range(40)]
    assert picks.count("c") == 30


def test_weights_of_zero_are_left_out_and_none_left_is_an_error() -> None:
    picker: SmoothRoundRobin[str] = SmoothRoundRobin()
    assert {picker.pick({"a": 0, "b": 2}) for _ in range(4)} == {"b"}
    with pytest.raises(ValueError, match="positive"):
        picker.pick({"a": 0})


def test_the_split_is_each_pools_part_of_the_accepted_shares_and_zero_before_any() -> None:
    assert split_percent({"a": 0, "b": 0}) == {"a": 0.0, "b": 0.0}
    assert split_percent({"a": 7, "b": 3}) == {"a": 70.0, "b": 30.0}
    assert split_percent({"a": 1, "b": 2}) == {"a": 33.33, "b": 66.67}


# -- the manager with real test pools -------------------------------------------------------


@asynccontextmanager
async def quota_pools(*quotas: int, failback_delay_s: float = 0.5) -> AsyncIterator[Rig]:
    async with AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(TestPool()) for _ in quotas]
        work = PoolWork()
        configured = tuple(
            PoolSettings(url=p.url, user=f"acct.q{i}", quota=q)
            for i, (p, q) in enumerate(zip(servers, quotas, strict=True))
        )
        settings = replace(SETTINGS, failback_delay_s=failback_delay_s)
        manager = PoolManager(configured, settings, work)
        task = asyncio.create_task(manager.run())
        try:
            yield Rig(servers, manager, work, [])
        finally:
            task.cancel()
            await asyncio.wait({task}, timeout=5)


def mine_jobs(work: PoolWork, count: int) -> None:
    """One share per chip job, as a chip would find it (slot 0, chip 3)."""
    for n in range(count):
        job = work.next_job(0, n % 16)
        version = rolled_version(job, 1, DEFAULT_VERSION_MASK)
        nonce = solve(job, target_of(SIM_DIFFICULTY), version)
        work.on_nonce(0, 3, NonceReply(nonce, 6, 0, 0, job.job_id, 1, 0), DEFAULT_VERSION_MASK)


def all_alive(rig: Rig) -> bool:
    return all(s.state is PoolState.ALIVE and s.active for s in rig.manager.status())


async def test_pools_with_quotas_all_stay_connected_and_split_the_jobs_by_quota() -> None:
    async with quota_pools(70, 30) as rig:
        await until(lambda: all_alive(rig), what="both pools mining")
        mine_jobs(rig.work, 1000)
        await until(lambda: rig.pools[0].accepted + rig.pools[1].accepted == 1000)
        assert (rig.pools[0].accepted, rig.pools[1].accepted) == (700, 300)
        assert [p.clients for p in rig.pools] == [1, 1]
        await until(lambda: rig.manager.status()[1].counters.accepted == 300)
        statuses = rig.manager.status()
        assert [(s.quota, s.split_percent) for s in statuses] == [(70, 70.0), (30, 30.0)]
        assert statuses[0].to_json()["split_percent"] == 70.0
        assert rig.manager.active == 0


async def test_a_dead_quota_pool_leaves_its_work_to_the_others_until_it_proves_itself() -> None:
    async with quota_pools(50, 50, failback_delay_s=1.0) as rig:
        await until(lambda: all_alive(rig), what="both pools mining")
        await rig.pools[1].stop()
        await until(lambda: not rig.manager.status()[1].active, what="the dead pool left out")
        mine_jobs(rig.work, 20)
        await until(lambda: rig.pools[0].accepted == 20, what="all work on the live pool")
        await rig.pools[1].start()
        await until(lambda: rig.manager.status()[1].state is PoolState.ALIVE, what="back")
        assert not rig.manager.status()[1].active  # it failed once: it has to stay up first
        await until(lambda: all_alive(rig), what="rejoined the split after the delay")
        mine_jobs(rig.work, 20)
        await until(lambda: rig.pools[1].accepted == 10, what="half the work again")


async def test_failover_pools_wait_while_a_quota_pool_mines_and_take_over_when_none_does() -> None:
    async with quota_pools(1, 0) as rig:
        await until(lambda: rig.manager.active == 0, what="the quota pool mining")
        await asyncio.sleep(0.2)
        assert rig.manager.status()[1].state is PoolState.STANDBY
        assert rig.pools[1].clients == 0
        await rig.pools[0].stop()
        await until(lambda: rig.manager.active == 1, what="failover to the backup")
        mine_jobs(rig.work, 5)
        await until(lambda: rig.pools[1].accepted == 5, what="mining on the backup")


async def test_a_new_list_keeps_the_pools_that_stay_and_forces_no_clean_job_on_them() -> None:
    async with AsyncExitStack() as stack:
        first, second, third = [await stack.enter_async_context(TestPool()) for _ in range(3)]
        work = PoolWork()
        fresh: list[None] = []
        work.on_fresh = lambda: fresh.append(None)
        keep = PoolSettings(url=first.url, user="acct.a")
        manager = PoolManager((keep, PoolSettings(url=second.url, user="acct.b")), SETTINGS, work)
        task = asyncio.create_task(manager.run())
        try:
            await until(lambda: manager.active == 0, what="mining on the first")
            mine_jobs(work, 3)
            await until(lambda: first.accepted == 3)
            fresh.clear()
            manager.replace((keep, PoolSettings(url=third.url, user="acct.c")))
            await asyncio.sleep(0.2)
            assert fresh == []  # the chips' work on the first pool is still good
            status = manager.status()
            assert (status[0].counters.connects, status[0].counters.accepted) == (1, 3)
            assert [s.url for s in status] == [first.url, third.url]
            mine_jobs(work, 3)
            await until(lambda: first.accepted == 6, what="still mining on the kept pool")

            manager.replace((PoolSettings(url=third.url, user="acct.c", quota=1),))
            await until(lambda: first.clients == 0, what="the removed pool let go")
            await until(lambda: manager.active == 0 and third.clients == 1, what="the new one")
            mine_jobs(work, 3)
            await until(lambda: third.accepted == 3, what="mining on the new list")

            manager.replace(
                (
                    PoolSettings(url=third.url, user="acct.c", quota=1, enabled=False),
                    PoolSettings(url=second.url, user="acct.b"),
                )
            )
            await until(lambda: manager.status()[0].state is PoolState.DISABLED, what="off")
            await until(lambda: third.clients == 0 and manager.active == 1, what="the other")
        finally:
            task.cancel()
            await asyncio.wait({task}, timeout=5)


def test_the_work_lanes_make_only_their_own_work_stale() -> None:
    """A clean job on one pool retires that pool's work, not the other's."""

    class Sink:
        def __init__(self) -> None:
            self.sent = 0
            self.stale_seen = 0

        @property
        def target(self) -> int:
            return target_of(SIM_DIFFICULTY)

        def submit(self, share: object) -> bool:
            self.sent += 1
            return True

        def stale(self) -> None:
            self.stale_seen += 1

    from hashbay.agent.mining.pool_work import Template
    from hashbay.tools.pool import PoolJob

    def template(sink: Sink, seed: int) -> Template:
        job = PoolJob(
            f"j{seed}", bytes([seed]) * 32, b"\x01" * 40, b"\x02" * 20, (), 0x2000_0000, 0x1D00FFFF,
            1_700_000_000,
        )  # fmt: skip
        return Template(job.notify(True), b"\x00" * 4, 4, DEFAULT_VERSION_MASK, sink.target, sink)

    a, b = Sink(), Sink()
    work = PoolWork()
    work.use(template(a, 1), clean=True, lane=1)
    work.use(template(b, 2), clean=True, lane=2)
    work.weigh({1: 1, 2: 1})
    jobs = [work.next_job(0, n) for n in range(4)]
    assert work.jobs == {1: 2, 2: 2}
    work.use(template(a, 3), clean=True, lane=1)  # a new block on pool a
    for job in jobs:
        version = rolled_version(job, 1, DEFAULT_VERSION_MASK)
        nonce = solve(job, target_of(SIM_DIFFICULTY), version)
        work.on_nonce(0, 3, NonceReply(nonce, 6, 0, 0, job.job_id, 1, 0), DEFAULT_VERSION_MASK)
    assert (a.sent, a.stale_seen, b.sent, b.stale_seen) == (0, 2, 2, 0)
