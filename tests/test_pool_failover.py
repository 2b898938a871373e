"""Pools in priority order against real test pools on loopback: immediate failover,
failback only after the delay, backoff, idle when nothing is reachable, and a pool that
misbehaves is dropped, counted and replaced without anything else noticing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace

import pytest

from hashbay.agent.core.alarms import AlarmGate
from hashbay.agent.core.events import EventBus, EventKind
from hashbay.agent.mining.pool_settings import PoolSettings
from hashbay.agent.mining.pool_work import PoolWork
from hashbay.agent.mining.pools import PoolManager, PoolState, PoolStatus
from hashbay.agent.mining.stratum_protocol import target_of
from hashbay.agent.mining.stratum_settings import StratumSettings
from hashbay.drivers.bm13xx.chain import DEFAULT_VERSION_MASK
from hashbay.drivers.bm13xx.frames import NonceReply
from hashbay.drivers.bm13xx.work import rolled_version
from hashbay.tools.pool import Misbehaviour, TestPool, solve

SETTINGS = StratumSettings(
    connect_timeout_s=5,
    response_timeout_s=5,
    backoff_min_s=0.05,
    backoff_max_s=0.4,
    failback_delay_s=0.5,
    idle_after_s=0.5,
)


async def until(check: Callable[[], object], timeout_s: float = 10, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.01)


@dataclass
class Rig:
    pools: list[TestPool]
    manager: PoolManager
    work: PoolWork
    availability: list[bool]

    def state(self, index: int) -> PoolStatus:
        return self.manager.status()[index]


@asynccontextmanager
async def pools(count: int = 2, settings: StratumSettings = SETTINGS) -> AsyncIterator[Rig]:
    async with AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(TestPool()) for _ in range(count)]
        work = PoolWork()
        availability: list[bool] = []
        work.on_availability = availability.append
        configured = tuple(
            PoolSettings(url=p.url, user=f"acct.w{i}") for i, p in enumerate(servers)
        )
        manager = PoolManager(configured, settings, work)
        task = asyncio.create_task(manager.run())
        try:
            yield Rig(servers, manager, work, availability)
        finally:
            task.cancel()
            await asyncio.wait({task}, timeout=5)


async def test_the_first_pool_is_used_and_the_others_stay_unconnected() -> None:
    async with pools(3) as rig:
        await until(lambda: rig.manager.active == 0)
        assert [s.state for s in rig.manager.status()] == [
            PoolState.ALIVE,
            PoolState.STANDBY,
            PoolState.STANDBY,
        ]
        assert [p.clients for p in rig.pools] == [1, 0, 0]
        assert rig.manager.work_json() == {"source": "pool", "available": True, "active_pool": 0}


async def test_failover_is_immediate_and_failback_waits_for_the_delay() -> None:
    async with pools() as rig:
        first, second = rig.pools
        await until(lambda: rig.manager.active == 0)
        await first.stop()
        await until(lambda: rig.manager.active == 1, what="failover to the second pool")
        assert second.clients == 1
        down = rig.state(0)
        assert down.state in (PoolState.BACKOFF, PoolState.CONNECTING)
        assert down.counters.failures >= 1
        assert down.last_error
        assert rig.work.available

        await first.start()  # the same port: the pool is back
        await until(lambda: rig.state(0).state is PoolState.ALIVE, what="first pool back")
        back_since = rig.state(0).since
        if time.time() - back_since < SETTINGS.failback_delay_s / 2:
            assert rig.manager.active == 1  # not yet: it has to stay up for the delay first
        await until(lambda: rig.manager.active == 0, what="failback")
        assert time.time() - back_since >= SETTINGS.failback_delay_s
        await until(lambda: second.clients == 0, what="the second pool let go")
        assert rig.state(1).state is PoolState.STANDBY
        assert rig.state(0).last_error == ""


async def test_a_failing_pool_is_retried_with_a_doubling_delay_up_to_the_maximum() -> None:
    async with pools(1) as rig:
        await rig.pools[0].stop()
        waits: dict[int, float] = {}  # failure count -> the wait that followed it

        def record() -> bool:
            status = rig.state(0)
            if status.state is PoolState.BACKOFF:
                waits.setdefault(status.counters.failures, status.backoff_s)
            return max(waits, default=0) >= 6

        await until(record, what="six retries")
        low, high = SETTINGS.backoff_min_s, SETTINGS.backoff_max_s
        assert waits == {n: pytest.approx(min(high, low * 2 ** (n - 1))) for n in waits}
        assert len(waits) >= 2
        assert "cannot connect" in rig.state(0).last_error


async def test_with_every_pool_down_work_becomes_unavailable_until_one_returns() -> None:
    async with pools() as rig:
        await until(lambda: rig.manager.active == 0)
        rig.availability.clear()  # a slow start may have idled before the first pool came up
        for pool in rig.pools:
            await pool.stop()
        await until(lambda: not rig.work.available, what="work unavailable")
        assert rig.availability == [False]
        assert rig.manager.active is None
        assert rig.manager.work_json()["available"] is False

        await rig.pools[1].start()
        await until(lambda: rig.work.available, what="work available again")
        assert rig.availability == [False, True]
        assert rig.manager.active == 1


@pytest.mark.parametrize(
    "kind", [Misbehaviour.GARBAGE, Misbehaviour.HUGE_LINE, Misbehaviour.WRONG_TYPES]
)
async def test_a_pool_sending_bad_input_is_dropped_counted_and_failed_over(
    kind: Misbehaviour,
) -> None:
    settings = StratumSettings(
        backoff_min_s=0.05, backoff_max_s=0.4, failback_delay_s=60, max_line_bytes=4096
    )
    async with pools(settings=settings) as rig:
        await until(lambda: rig.manager.active == 0)
        rig.pools[0].misbehave(kind)
        await until(lambda: rig.manager.active == 1, what="failover")
        status = rig.state(0)
        assert status.counters.protocol_errors == 1
        assert status.counters.failures == 1
        await until(lambda: rig.state(0).state is PoolState.ALIVE, what="first pool retried")
        assert rig.manager.active == 1  # it must prove itself for a minute before failback


async def test_a_reconnect_request_comes_back_to_the_same_pool() -> None:
    async with pools(1) as rig:
        await until(lambda: rig.manager.active == 0)
        rig.pools[0].misbehave(Misbehaviour.RECONNECT)
        await until(lambda: rig.pools[0].connections_made == 2, what="reconnected")
        await until(lambda: rig.manager.active == 0)
        status = rig.state(0)
        assert status.counters.failures == 0
        assert status.counters.connects == 2


async def test_a_pool_that_hangs_up_on_configure_is_mined_without_version_rolling() -> None:
    async with TestPool() as old_pool:
        old_pool.misbehave(Misbehaviour.HANG_UP_ON_CONFIGURE)
        work = PoolWork()
        manager = PoolManager((PoolSettings(url=old_pool.url, user="a.b"),), SETTINGS, work)
        task = asyncio.create_task(manager.run())
        try:
            await until(lambda: manager.active == 0, what="mining without configure")
            status = manager.status()[0]
            assert (status.counters.failures, status.counters.connects) == (1, 1)
            assert status.version_mask == 0
            assert work.version_mask == 0
        finally:
            task.cancel()
            await asyncio.wait({task}, timeout=5)


def mine(rig: Rig, count: int) -> None:
    """Hand `count` shares to the work source as chips would find them (slot 0, chip 3)."""
    active = rig.manager.active
    assert active is not None
    difficulty = rig.state(active).difficulty
    assert difficulty is not None
    for n in range(count):
        job = rig.work.next_job(0, n % 16)
        version = rolled_version(job, 1, DEFAULT_VERSION_MASK)
        nonce = solve(job, target_of(difficulty), version)
        rig.work.on_nonce(0, 3, NonceReply(nonce, 6, 0, 0, job.job_id, 1, 0), DEFAULT_VERSION_MASK)


@asynccontextmanager
async def judged_pools(settings: StratumSettings) -> AsyncIterator[tuple[Rig, EventBus]]:
    """Two pools whose manager raises its events through an alarm gate."""
    async with AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(TestPool()) for _ in range(2)]
        work, bus = PoolWork(), EventBus()
        configured = tuple(
            PoolSettings(url=p.url, user=f"acct.w{i}") for i, p in enumerate(servers)
        )
        manager = PoolManager(
            configured, settings, work, alarms=AlarmGate(bus, time.monotonic, repeat_s=300)
        )
        task = asyncio.create_task(manager.run())
        try:
            yield Rig(servers, manager, work, []), bus
        finally:
            task.cancel()
            await asyncio.wait({task}, timeout=5)


async def test_a_pool_rejecting_nearly_every_share_is_left_for_the_backup() -> None:
    settings = replace(SETTINGS, failback_delay_s=60, reject_window_shares=10)
    async with judged_pools(settings) as (rig, bus):
        await until(lambda: rig.manager.active == 0)
        mine(rig, 5)
        await until(lambda: rig.pools[0].accepted == 5, what="accepted at first")
        rig.pools[0].misbehave(Misbehaviour.REJECT_ALL)
        mine(rig, 10)
        await until(lambda: rig.manager.active == 1, what="failover to the backup")
        status = rig.state(0)
        # The window still held one accepted share: 9 of 10 is the 90 % that gives up.
        assert status.failover_reason == (
            "given up: rejected 9 of the last 10 shares (rejected by the pool (test) (20): 9)"
        )
        assert status.failover_at is not None and status.counters.failures == 1
        failed = [e for e in bus.recent(10) if e.kind is EventKind.POOL_FAILED]
        assert len(failed) == 1 and failed[0].details["pool"] == 0
        assert "failing over" in failed[0].message
        await until(lambda: rig.state(0).state is PoolState.ALIVE, what="retried")
        await asyncio.sleep(0.5)
        assert rig.manager.active == 1  # failback still waits for its delay


async def test_a_pool_accepting_nothing_for_too_long_is_left() -> None:
    settings = replace(SETTINGS, failback_delay_s=60, accept_timeout_s=1.0, response_timeout_s=0.5)
    async with judged_pools(settings) as (rig, _):
        await until(lambda: rig.manager.active == 0)
        rig.pools[0].misbehave(Misbehaviour.SILENT)  # shares go out, nothing comes back
        mine(rig, 3)
        await until(lambda: rig.manager.active == 1, timeout_s=10, what="failover")
        assert "no share accepted for" in rig.state(0).failover_reason


async def test_a_pool_looping_on_reconnect_is_left_for_the_backup() -> None:
    async with judged_pools(replace(SETTINGS, failback_delay_s=60)) as (rig, bus):
        await until(lambda: rig.manager.active == 0)
        rig.pools[0].misbehave(Misbehaviour.RECONNECT_LOOP)
        rig.pools[0].misbehave(Misbehaviour.RECONNECT)
        await until(lambda: rig.manager.active == 1, what="the backup tried")
        status = rig.state(0)
        assert "asked to reconnect 3 times" in status.failover_reason
        assert status.counters.failures >= 1
        assert [e.kind for e in bus.recent(10)] == [EventKind.POOL_FAILED]
        await asyncio.sleep(1.0)  # it keeps looping; the miner stays on the backup
        assert rig.manager.active == 1


async def test_version_rolling_is_asked_for_again_after_a_connection_without_it() -> None:
    async with TestPool() as pool:
        pool.misbehave(Misbehaviour.HANG_UP_ON_CONFIGURE)
        work = PoolWork()
        manager = PoolManager((PoolSettings(url=pool.url, user="a.b"),), SETTINGS, work)
        task = asyncio.create_task(manager.run())
        try:
            await until(lambda: manager.active == 0, what="mining without configure")
            assert manager.status()[0].version_mask == 0
            pool.behave()
            pool.misbehave(Misbehaviour.DISCONNECT)
            await until(lambda: manager.status()[0].counters.connects == 2, what="reconnected")
            await until(lambda: manager.status()[0].version_mask != 0, what="rolling again")
            assert work.version_mask == DEFAULT_VERSION_MASK
        finally:
            task.cancel()
            await asyncio.wait({task}, timeout=5)
