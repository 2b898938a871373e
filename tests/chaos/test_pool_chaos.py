"""A Stratum pool that misbehaves in every way it can, with a sound backup: the miner leaves
it for the backup (with a `pool_failed` event and the reason), or rides a flood out, and
the boards hash on throughout; once the pool behaves, work returns after the delay."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

import pytest
import pytest_asyncio

from hashbay.agent.core.events import EventKind
from hashbay.agent.core.status import SlotState
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.agent.mining.pools import PoolManager
from hashbay.tools.pool import Misbehaviour, TestPool

from ..test_mining_e2e import FAST_POOLS, mining_config
from .rig import until

pytestmark = [pytest.mark.chaos, pytest.mark.asyncio(loop_scope="module")]
STRATUM = dataclasses.replace(
    FAST_POOLS,
    response_timeout_s=2.0,
    silence_timeout_s=5.0,
    failback_delay_s=2.0,
    backoff_max_s=1.0,
    idle_after_s=30.0,
    reject_window_shares=20,
)


def flood_clean_jobs(pool: TestPool) -> None:
    for _ in range(200):
        pool.new_job(clean=True)


def doing(*kinds: Misbehaviour) -> Callable[[TestPool], None]:
    def act(pool: TestPool) -> None:
        for kind in kinds:
            pool.misbehave(kind)

    return act


# (what the pool does, the reason the miner must give, whether it is left at all)
MISDEEDS: dict[str, tuple[Callable[[TestPool], None], str, bool]] = {
    "garbage": (doing(Misbehaviour.GARBAGE), "not JSON", True),
    "1 MB line": (doing(Misbehaviour.HUGE_LINE), "longer than", True),
    "wrong types": (doing(Misbehaviour.WRONG_TYPES), "mining.notify", True),
    "absurd difficulty": (lambda p: p.set_difficulty(1e300), "difficulty", True),
    "silence after connect": (
        doing(Misbehaviour.SILENT, Misbehaviour.DISCONNECT),
        "no answer",
        True,
    ),
    "reject all": (doing(Misbehaviour.REJECT_ALL), "rejected", True),
    "reconnect loop": (
        doing(Misbehaviour.RECONNECT_LOOP, Misbehaviour.RECONNECT),
        "asked to reconnect",
        True,
    ),
    "clean_jobs flood": (flood_clean_jobs, "", False),
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mining(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Agent]:
    async with AsyncExitStack() as stack:
        pools = [await stack.enter_async_context(TestPool()) for _ in range(2)]
        config = mining_config(tmp_path_factory.mktemp("pools"), pools)
        config = dataclasses.replace(
            config,
            stratum=STRATUM,
            alarms=dataclasses.replace(config.alarms, repeat_s=0),  # every event, to check it
        )
        agent = Agent(config, notifier=SystemdNotifier({}))
        agent.chaos_pools = pools  # type: ignore[attr-defined]
        task = asyncio.create_task(agent.run())
        try:
            yield agent
        finally:
            agent.supervisor.request_stop("chaos over")
            assert await asyncio.wait_for(task, 15) == 0


def hashing(agent: Agent) -> bool:
    return all(c.state is SlotState.HASHING for c in agent.controllers)


@pytest.mark.parametrize("misdeed", list(MISDEEDS))
async def test_a_misbehaving_pool(mining: Agent, misdeed: str) -> None:
    agent = mining
    primary: TestPool = agent.chaos_pools[0]  # type: ignore[attr-defined]
    assert agent.pools is not None
    manager: PoolManager = agent.pools
    primary.behave()
    primary.set_difficulty(2.0**-24)
    await until(lambda: manager.active == 0 and hashing(agent), 30, "mining on the primary")
    await until(lambda: manager.status()[0].counters.accepted > 0, 10, "shares accepted")
    before = len(agent.events.recent(1000))
    rejected = manager.status()[0].counters.rejected
    act, reason, left = MISDEEDS[misdeed]
    act(primary)
    if left:
        await until(lambda: manager.active == 1, 20, f"{misdeed}: the backup takes over")

        def told() -> str:
            status = manager.status()[0]
            return f"{status.failover_reason} {status.last_error}"

        await until(lambda: reason in told(), 10, f"{misdeed}: {reason!r} in {told()!r}")
        events = agent.events.recent(1000)[before:]
        failed = [e for e in events if e.kind is EventKind.POOL_FAILED]
        assert failed and failed[0].details["pool"] == 0
    else:
        await asyncio.sleep(3.0)
        assert manager.active == 0
        assert manager.status()[0].counters.rejected - rejected < 5  # stale, not rejected
    faults = [e for e in agent.events.recent(1000)[before:] if e.kind is EventKind.FAULT]
    assert faults == []
    assert hashing(agent)
    primary.behave()
    primary.set_difficulty(2.0**-24)
    await until(lambda: manager.active == 0, 30, f"{misdeed}: failback once it behaves")
