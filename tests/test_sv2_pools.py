"""Stratum V2 pools in the configuration and in the priority list: URLs with the authority
key, V1 and V2 mixed with the same failover, failback and idling, a V2 pool that fails
authentication refused (never downgraded), and the whole agent mining over V2."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.config import load_config
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.agent.mining.pool_settings import Endpoint, PoolSettings, authority_key, parse_url
from hashbay.agent.mining.pool_work import PoolWork
from hashbay.agent.mining.pools import PoolManager, PoolState
from hashbay.agent.mining.stratum_settings import StratumSettings
from hashbay.agent.mining.sv2 import messages as m
from hashbay.agent.mining.sv2.noise import xonly_of
from hashbay.drivers.errors import ConfigError
from hashbay.tools.pool import TestPool
from hashbay.tools.pool_sv2 import Sv2Misbehaviour, Sv2TestPool

from .support import write_config
from .test_mining_e2e import mining_config

KEY = "9bXiEd8boQVhq7WddEcERUL5tyyJVFYdU8th3HfbNXK3Yw6GRXh"  # the SV2 specification's example
SETTINGS = StratumSettings(
    connect_timeout_s=5,
    response_timeout_s=5,
    backoff_min_s=0.05,
    backoff_max_s=0.4,
    failback_delay_s=0.5,
    idle_after_s=0.5,
)


def check(tmp_path: Path, extra: str) -> str:
    try:
        load_config(write_config(tmp_path / "agent.toml", extra))
    except ConfigError as exc:
        return str(exc)
    return ""


def test_v1_and_v2_pools_mix_in_one_list(tmp_path: Path) -> None:
    error = check(
        tmp_path,
        f'[[pool]]\nurl = "stratum2+tcp://v2.example.com:34254/{KEY}"\nuser = "acct.rig1"\n'
        '[[pool]]\nurl = "stratum+tcp://v1.example.com:3333"\nuser = "acct.rig1"\n',
    )
    assert error == ""


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("stratum2+tcp://v2.example.com:34254", "must be a string matching"),
        (f"stratum2+tcp://v2.example.com:34254/{KEY[:-1]}k", "checksum does not match"),
        (f"stratum2+tcp://v2.example.com/{KEY}", "needs a port"),
        (f"stratum+tcp://v1.example.com:3333/{KEY}", "must be a string matching"),
        (f"stratum2+ssl://v2.example.com:3333/{KEY}", "must be a string matching"),
    ],
)
def test_a_bad_v2_url_is_a_config_error_saying_why(tmp_path: Path, url: str, message: str) -> None:
    assert message in check(tmp_path, f'[[pool]]\nurl = "{url}"\nuser = "acct.rig1"\n')


def test_a_ca_file_has_no_place_on_a_v2_pool(tmp_path: Path) -> None:
    error = check(
        tmp_path,
        f'[[pool]]\nurl = "stratum2+tcp://v2.example.com:1/{KEY}"\nuser = "a.b"\n'
        'ca_file = "/etc/passwd"\n',
    )
    assert "pool[0].ca_file: only used with stratum+ssl" in error


def test_a_v2_url_parses_to_its_endpoint_and_authority_key() -> None:
    url = f"stratum2+tcp://v2.example.com:34254/{KEY}"
    assert parse_url(url) == Endpoint("v2.example.com", 34254, tls=False)
    assert authority_key(url) == bytes.fromhex(
        "76637000979c1c11af0c300bcd8c7fe48610fce9b9c11e3daee35ae0b08a7455"
    )
    assert authority_key("stratum+tcp://v1.example.com:3333") is None
    with pytest.raises(ValueError, match="host:port only"):
        parse_url(f"stratum2+tcp://v2.example.com:1/{KEY}?query")


def test_the_v2_test_pool_command_prints_its_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "pool.url"
    pool = subprocess.Popen(
        [sys.executable, "-m", "hashbay.tools.pool_sv2", "--ready-file", str(ready)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert pool.stdout is not None
        first = pool.stdout.readline()
        assert first.startswith("listening on stratum2+tcp://127.0.0.1:")
        url = first.split()[-1]
        assert ready.read_text().strip() == url
        assert authority_key(url) is not None
    finally:
        pool.terminate()
        assert pool.wait(10) == 0


async def until(check: Callable[[], object], timeout_s: float = 10, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.01)


@dataclass
class Rig:
    v2: Sv2TestPool
    v1: TestPool
    manager: PoolManager
    work: PoolWork


@asynccontextmanager
async def mixed(*, v2_url: Callable[[Sv2TestPool], str] | None = None) -> AsyncIterator[Rig]:
    """A V2 pool first, a V1 pool as the operator's backup."""
    async with AsyncExitStack() as stack:
        v2 = await stack.enter_async_context(Sv2TestPool())
        v1 = await stack.enter_async_context(TestPool())
        work = PoolWork()
        configured = (
            PoolSettings(url=v2_url(v2) if v2_url else v2.url, user="acct.v2"),
            PoolSettings(url=v1.url, user="acct.v1"),
        )
        manager = PoolManager(configured, SETTINGS, work, hashrate=lambda: 42e12)
        task = asyncio.create_task(manager.run())
        try:
            yield Rig(v2, v1, manager, work)
        finally:
            task.cancel()
            await asyncio.wait({task}, timeout=5)


async def test_a_v2_pool_first_and_a_v1_backup_fail_over_and_back_like_any_pools() -> None:
    async with mixed() as rig:
        await until(lambda: rig.manager.active == 0, what="V2 active")
        assert rig.v2.users() == {"acct.v2"} and rig.v1.clients == 0
        assert rig.v2.hashrates == [pytest.approx(42e12, rel=1e-6)]
        assert rig.work.pool_job == str(rig.v2.current.job_id)
        await rig.v2.stop()
        await until(lambda: rig.manager.active == 1, what="failover to V1")
        assert rig.work.pool_job == rig.v1.current.job_id
        await rig.v2.start()
        await until(lambda: rig.manager.status()[0].state is PoolState.ALIVE, what="V2 back")
        assert rig.manager.active == 1  # failback waits for the delay
        await until(lambda: rig.manager.active == 0, what="failback to V2")
        assert rig.work.available


async def test_a_v2_pool_with_the_wrong_key_is_refused_and_only_the_listed_v1_pool_mines() -> None:
    def foreign_key(pool: Sv2TestPool) -> str:
        return pool.url.rsplit("/", 1)[0] + "/" + KEY

    async with mixed(v2_url=foreign_key) as rig:
        await until(lambda: rig.manager.active == 1, what="the V1 backup")
        refused = rig.manager.status()[0]
        assert refused.state in (PoolState.BACKOFF, PoolState.CONNECTING)
        await until(lambda: rig.manager.status()[0].last_error != "", what="the reason")
        assert rig.manager.status()[0].last_error.startswith(
            "pool refused: certificate is not signed by the authority key in the pool URL"
        )
        assert rig.v2.handshakes >= 1
        assert rig.v2.setup_flags == []  # not one mining message went to the impostor
        assert rig.v2.users() == set()


async def test_an_expired_certificate_with_nothing_else_listed_idles_the_rig() -> None:
    async with Sv2TestPool() as pool:
        pool.misbehave(Sv2Misbehaviour.EXPIRED_CERTIFICATE)
        work = PoolWork()
        manager = PoolManager((PoolSettings(url=pool.url, user="a.b"),), SETTINGS, work)
        task = asyncio.create_task(manager.run())
        try:
            await until(lambda: not work.available, what="idle")
            assert "certificate expired" in manager.status()[0].last_error
            assert manager.active is None
            assert pool.setup_flags == []
        finally:
            task.cancel()
            await asyncio.wait({task}, timeout=5)


async def test_a_v2_pool_refusing_version_rolling_is_retried_without_it() -> None:
    async with Sv2TestPool() as pool:
        pool.misbehave(Sv2Misbehaviour.NO_VERSION_ROLLING)
        work = PoolWork()
        manager = PoolManager((PoolSettings(url=pool.url, user="a.b"),), SETTINGS, work)
        task = asyncio.create_task(manager.run())
        try:
            await until(lambda: manager.active == 0, what="connected without the flag")
            assert pool.setup_flags == [m.REQUIRES_VERSION_ROLLING, 0]
        finally:
            task.cancel()
            await asyncio.wait({task}, timeout=5)


async def test_the_whole_agent_mines_over_stratum_v2(tmp_path: Path) -> None:
    async with Sv2TestPool() as pool:
        config = mining_config(tmp_path, [])
        config = dataclasses.replace(config, pool=(PoolSettings(url=pool.url, user="acct.rig0"),))
        agent = Agent(config, notifier=SystemdNotifier({}))
        task = asyncio.create_task(agent.run())
        try:
            await until(lambda: pool.accepted >= 20, timeout_s=30, what="20 accepted shares")
            assert pool.rejected == 0
            assert agent.pools is not None
            await until(
                lambda: agent.pools is not None and agent.pools.status()[0].counters.accepted >= 10,
                what="acknowledgements counted by the agent",
            )
            assert pool.users() == {"acct.rig0"}
            assert xonly_of(pool.authority) == authority_key(pool.url)
            miner = agent.state.miner_json()
            (shown,) = miner["pools"]
            assert (shown["state"], shown["active"], shown["url"]) == ("alive", True, pool.url)
            assert shown["version_mask"] == "1fffe000"
        finally:
            agent.supervisor.request_stop("test over")
            assert await asyncio.wait_for(task, 15) == 0
