"""The whole agent on the simulated rig mining on real test pools over loopback: shares
accepted and counted the same on both sides, clean jobs pushed to the chips at once with
no stale share sent after, failover and failback, bad pool input survived, and the boards
idling while no pool is reachable."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from hashbay.agent.core.status import SlotState
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.config import Config, default_config_path, load_config
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.agent.mining.pool_settings import PoolSettings
from hashbay.agent.mining.pool_work import PoolWork
from hashbay.agent.mining.pools import PoolManager, PoolState, pool_views
from hashbay.agent.mining.stratum_settings import StratumSettings
from hashbay.agent.power.governor import Mode
from hashbay.tools.broker import HOST, Broker, mosquitto_available
from hashbay.tools.pool import Misbehaviour, TestPool

FAST_POOLS = StratumSettings(
    connect_timeout_s=5,
    response_timeout_s=5,
    backoff_min_s=0.05,
    backoff_max_s=0.2,
    failback_delay_s=1.0,
    idle_after_s=0.5,
)


def mining_config(tmp_path: Path, pools: list[TestPool], broker: Broker | None = None) -> Config:
    """The packaged simulated rig with short boards, fast timings and these pools."""
    config = load_config(default_config_path())
    config = config.with_dirs(str(tmp_path / "state"), str(tmp_path / "run"))
    for directory in (config.agent.state_dir, config.agent.runtime_dir):
        Path(directory).mkdir(parents=True, exist_ok=True)
    mqtt = dataclasses.replace(config.mqtt, enabled=False)
    if broker is not None:
        mqtt = dataclasses.replace(
            config.mqtt, host=broker.host, port=broker.port, topic_prefix="hb", discovery=False
        )
    return dataclasses.replace(
        config,
        agent=dataclasses.replace(config.agent, poll_interval_s=0.2),
        chain=dataclasses.replace(
            config.chain,
            sample_interval_s=0.2,
            chip_poll_interval_s=600,  # chip polls are the health model's business, not ours
            ramp_step_mhz=50,
            ramp_step_delay_s=0,
        ),
        power=dataclasses.replace(config.power, ramp_w_per_s=100_000),
        sim=dataclasses.replace(
            config.sim, chips_per_board=42, chips_per_domain=1, control_socket=False
        ),
        mqtt=mqtt,
        api=dataclasses.replace(config.api, enabled=False),
        control=dataclasses.replace(config.control, enabled=False),
        pool=tuple(PoolSettings(url=p.url, user=f"acct.rig{i}") for i, p in enumerate(pools)),
        stratum=FAST_POOLS,
    )


async def until(check: Callable[[], object], timeout_s: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)


class Mining:
    def __init__(self, agent: Agent, pools: list[TestPool]) -> None:
        self.agent = agent
        self.pools = pools
        assert agent.pools is not None and isinstance(agent.work, PoolWork)
        self.manager: PoolManager = agent.pools
        self.work: PoolWork = agent.work

    def accepted_by_agent(self, index: int = 0) -> int:
        return self.manager.status()[index].counters.accepted

    def hashing(self) -> bool:
        return all(c.state is SlotState.HASHING for c in self.agent.controllers)


@asynccontextmanager
async def following(broker: Broker) -> AsyncIterator[list[dict[str, Any]]]:
    """The miner state messages the agent publishes, as a subscriber receives them."""
    states: list[dict[str, Any]] = []

    async def follow() -> None:
        async with aiomqtt.Client(HOST, broker.port) as client:
            await client.subscribe("hb/sim-rig-01/state")
            async for message in client.messages:
                if isinstance(message.payload, bytes) and message.payload:
                    states.append(json.loads(message.payload))

    watcher = asyncio.create_task(follow())
    try:
        yield states
    finally:
        watcher.cancel()
        with suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await watcher


@asynccontextmanager
async def mining(
    tmp_path: Path, count: int = 1, broker: Broker | None = None
) -> AsyncIterator[Mining]:
    async with AsyncExitStack() as stack:
        pools = [await stack.enter_async_context(TestPool()) for _ in range(count)]
        agent = Agent(mining_config(tmp_path, pools, broker), notifier=SystemdNotifier({}))
        task = asyncio.create_task(agent.run())
        try:
            yield Mining(agent, pools)
            assert not task.done(), "the agent stopped by itself"
        finally:
            agent.supervisor.request_stop("test over")
            assert await asyncio.wait_for(task, 15) == 0


@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed")
async def test_the_rig_mines_on_the_pool_and_every_side_counts_the_same_shares(
    tmp_path: Path, broker: Broker
) -> None:
    async with following(broker) as published, mining(tmp_path, broker=broker) as m:
        pool = m.pools[0]
        await until(lambda: pool.accepted >= 40 and m.hashing(), what="40 accepted shares")
        assert pool.rejected == 0
        assert pool.users() == {"acct.rig0"}
        assert {r.connection for r in pool.results} == {1}

        def five_shares_for(job_id: str) -> Callable[[], bool]:
            return lambda: pool.accepted_for(job_id) >= 5

        for _ in range(3):  # clean jobs: new work at once, nothing stale sent after
            job = pool.new_job_with_barrier()
            # Jobs go out every 30 s otherwise: shares this soon prove the push.
            await until(five_shares_for(job.job_id), timeout_s=10, what="shares for the new job")
        assert pool.late_stale == 0

        pool.set_difficulty(1e12)  # nothing the rig finds meets this: the flow settles
        await until(lambda: m.work.counters.below_target > 0, what="shares stop")
        await until(lambda: m.accepted_by_agent() == pool.accepted, what="counts agree")
        counters = m.work.counters
        assert counters.submitted == pool.accepted + pool.rejected
        assert counters.errors == counters.outside_mask == counters.no_pool == 0
        chain = m.agent.controllers[0].chain
        assert chain is not None and chain.counters.nonces > 0

        miner = m.agent.state.miner_json()
        assert miner["work"] == {"source": "pool", "available": True, "active_pool": 0}
        (shown,) = miner["pools"]
        assert (shown["state"], shown["active"], shown["url"]) == ("alive", True, pool.url)
        assert shown["accepted"] == pool.accepted
        (view,) = pool_views(m.manager.status())  # what the miner API's POOLS shows
        assert (view.alive, view.stratum_active, view.accepted) == (True, True, pool.accepted)

        def on_mqtt() -> bool:
            return any(
                s.get("pools", [{}])[0].get("state") == "alive"
                and s["pools"][0]["accepted"] > 0
                and s["work"]["available"]
                for s in published
            )

        await until(on_mqtt, what="pool state on MQTT")


async def test_pools_fail_over_fail_back_survive_bad_input_and_idle_the_boards_when_all_die(
    tmp_path: Path,
) -> None:
    async with mining(tmp_path, count=2) as m:
        first, second = m.pools
        await until(lambda: first.accepted >= 5 and m.hashing(), what="mining on the first")
        first.misbehave(Misbehaviour.GARBAGE)
        await until(lambda: second.accepted >= 5, what="failover to the second pool")
        assert m.manager.status()[0].counters.protocol_errors == 1
        await until(lambda: m.manager.active == 0, what="failback once the first proves itself")
        mark = first.accepted
        await until(lambda: first.accepted >= mark + 5, what="mining on the first pool again")
        await until(lambda: second.clients == 0, what="the second pool let go")

        await first.stop()
        await until(lambda: m.manager.active == 1, what="failover when the first dies")
        mark = second.accepted
        await until(lambda: second.accepted >= mark + 5, what="mining on the second again")

        await second.stop()  # now nothing is reachable
        await until(lambda: not m.work.available, what="work unavailable")
        await until(lambda: m.agent.power.decision.mode is Mode.MIN, what="governor idles")
        await until(
            lambda: all(c.status.point == "minimum power" for c in m.agent.controllers),
            what="boards at minimum power",
        )
        assert {s.state for s in m.manager.status()} <= {PoolState.BACKOFF, PoolState.CONNECTING}

        await second.start()
        await until(lambda: m.work.available, what="work available again")
        await until(lambda: m.agent.power.decision.mode is Mode.RUN, what="governor runs")
        mark = second.accepted
        await until(lambda: second.accepted >= mark + 5, what="shares again")
        assert m.hashing()
