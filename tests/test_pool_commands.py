"""The pools command from every side: the miner API's cgminer pool commands and poolset,
and hostile lists (bad URLs, too many pools, wrong types, NaN, files outside the allowed
ones) refused with a clear error and no change, on disk or in the pool manager."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyasic.config import MinerConfig
from pyasic.config.pools import Pool, PoolConfig, PoolGroup
from pyasic.errors import APIError

from hashbay.agent.core.state import AgentState
from hashbay.agent.interfaces.api_settings import ApiSettings
from hashbay.agent.interfaces.commands import (
    COMMANDS,
    CommandError,
    parse_command,
    parse_command_mapping,
)
from hashbay.agent.interfaces.dispatch import Dispatcher
from hashbay.agent.interfaces.miner_api import MinerApiServer
from hashbay.agent.interfaces.pool_commands import PoolCommands
from hashbay.agent.mining.pool_list_store import MAX_POOLS, PoolListStore
from hashbay.agent.mining.pool_settings import PoolSettings
from hashbay.agent.mining.pool_work import PoolWork
from hashbay.agent.mining.pools import PoolManager
from hashbay.agent.mining.stratum_settings import StratumSettings
from hashbay.agent.power.controls import ControlStore
from hashbay.tools.fleet.pyasic_hashbay import HashbayMiner

from .test_miner_api import command

A = PoolSettings(url="stratum+tcp://127.0.0.1:3333", user="acct.a")
WORD = "worker-word"
B = PoolSettings(url="stratum+tcp://127.0.0.2:3333", user="acct.b", password=WORD)


@dataclass
class Pools:
    store: PoolListStore
    manager: PoolManager
    dispatch: Dispatcher

    async def send(self, data: dict[str, Any]) -> dict[str, Any]:
        return await self.dispatch(parse_command_mapping(data, slots=3))

    def stored(self) -> bytes | None:
        return self.store.path.read_bytes() if self.store.path.exists() else None


def pools_on(tmp_path: Path, *configured: PoolSettings) -> Pools:
    store = PoolListStore(tmp_path / "pools.json", configured or (A, B), StratumSettings())
    manager = PoolManager(store.current, StratumSettings(), PoolWork())
    controls = ControlStore(tmp_path / "controls.json")
    return Pools(store, manager, Dispatcher([], controls, PoolCommands(store, manager)))


@contextlib.asynccontextmanager
async def api(pools: Pools, *, allow_changes: bool = True) -> AsyncIterator[MinerApiServer]:
    server = MinerApiServer(
        ApiSettings(port=0, timeout_s=2.0, allow_changes=allow_changes),
        state=AgentState("m1"),
        handle=pools.dispatch,
        slots=3,
        pool_list=lambda: pools.manager.listed,
    )
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.ready.wait(), 5)
    try:
        yield server
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def urls(pools: Pools) -> list[str]:
    return [p.url for p in pools.manager.listed]


# -- the miner API --------------------------------------------------------------------------


async def test_cgminers_pool_commands_edit_the_list_and_store_it(tmp_path: Path) -> None:
    pools = pools_on(tmp_path)
    async with api(pools) as server:
        added = await command(server, "addpool", f"stratum+tcp://127.0.0.3:3333,acct.c,{WORD}2")
        assert (added["STATUS"][0]["STATUS"], added["STATUS"][0]["Code"]) == ("S", 55)
        assert urls(pools)[-1] == "stratum+tcp://127.0.0.3:3333"
        assert pools.manager.listed[-1].password == f"{WORD}2"
        assert pools.manager.listed[1].password == WORD  # the others' passwords kept
        switched = await command(server, "switchpool", "2")
        assert switched["STATUS"][0]["Msg"] == "Switching to pool 2:'stratum+tcp://127.0.0.3:3333'"
        assert urls(pools)[0] == "stratum+tcp://127.0.0.3:3333"
        assert (await command(server, "disablepool", "1"))["STATUS"][0]["Code"] == 48
        assert [p.enabled for p in pools.manager.listed] == [True, False, True]
        assert (await command(server, "enablepool", "1"))["STATUS"][0]["Code"] == 47
        assert (await command(server, "removepool", "0"))["STATUS"][0]["Code"] == 68
        assert urls(pools) == [A.url, B.url]
        listed = [
            {"url": B.url, "user": "acct.b", "quota": 70},
            {"url": A.url, "user": "x", "quota": 30},
        ]
        assert (await command(server, "poolset", json.dumps(listed)))["STATUS"][0]["STATUS"] == "S"
    assert [(p.url, p.quota) for p in pools.manager.listed] == [(B.url, 70), (A.url, 30)]
    assert json.loads(pools.stored() or b"")["pools"][0]["quota"] == 70


async def test_pool_commands_refuse_bad_parameters_and_read_only_apis(tmp_path: Path) -> None:
    pools = pools_on(tmp_path)
    async with api(pools) as server:
        bad = {
            ("removepool", "7"): "pool 7 does not exist",
            ("switchpool", "first"): "takes a pool number",
            ("addpool", "stratum+tcp://h:1"): "URL,USER",
            ("addpool", "http://h:1,u"): "pool[2].url: must be",
            ("poolset", "[1, 2"): "JSON list",
            ("poolset", '{"url": "x"}'): "JSON list",
            ("poolset", "[]"): "a list of 1 to 8 pool tables",
        }
        for (name, parameter), message in bad.items():
            status = (await command(server, name, parameter))["STATUS"][0]
            assert status["STATUS"] == "E" and message in status["Msg"], (name, status)
        disabled = [await command(server, "disablepool", str(n)) for n in (0, 1)]
        assert "every pool is disabled" in disabled[1]["STATUS"][0]["Msg"]
        check = await command(server, "check", "addpool")
        assert check["CHECK"][0]["Access"] == "Y"
    pools_alone = pools_on(tmp_path / "one", A)
    async with api(pools_alone) as server:
        assert "last pool" in (await command(server, "removepool", "0"))["STATUS"][0]["Msg"]
    async with api(pools, allow_changes=False) as server:
        denied = await command(server, "addpool", "stratum+tcp://h:1,u")
        assert denied["STATUS"][0]["Code"] == 45
        assert (await command(server, "check", "poolset"))["CHECK"][0]["Access"] == "N"
    assert urls(pools) == [A.url, B.url] and [p.enabled for p in pools.manager.listed][1]


# -- hostile lists -----------------------------------------------------------------------------

NAN = float("nan")
HOSTILE: dict[str, tuple[Any, str]] = {
    "bad scheme": ([{"url": "http://pool:80", "user": "u"}], "pool[0].url: must be"),
    "no port": ([{"url": "stratum+tcp://pool", "user": "u"}], "pool[0].url: needs a port"),
    "credentials in url": ([{"url": "stratum+tcp://u:p@pool:1", "user": "u"}], "pool[0].url"),
    "not a list": ("stratum+tcp://pool:1", "a list of 1 to 8 pool tables"),
    "empty": ([], "a list of 1 to 8 pool tables"),
    "too many": ([{"url": f"stratum+tcp://p{n}:1", "user": "u"} for n in range(9)], "1 to 8"),
    "not tables": ([["stratum+tcp://pool:1", "u"]], "a list of 1 to 8 pool tables"),
    "user a number": ([{"url": "stratum+tcp://pool:1", "user": 7}], "pool[0].user: must be"),
    "quota NaN": ([{"url": "stratum+tcp://p:1", "user": "u", "quota": NAN}], "pool[0].quota"),
    "quota text": ([{"url": "stratum+tcp://p:1", "user": "u", "quota": "70"}], "pool[0].quota"),
    "quota huge": ([{"url": "stratum+tcp://p:1", "user": "u", "quota": 10**30}], "pool[0].quota"),
    "quota bool": ([{"url": "stratum+tcp://p:1", "user": "u", "quota": True}], "pool[0].quota"),
    "unknown key": ([{"url": "stratum+tcp://p:1", "user": "u", "host": "x"}], "unknown key"),
    "duplicate": ([{"url": "stratum+tcp://p:1", "user": "u"}] * 2, "same url and user"),
    "all disabled": ([{"url": "stratum+tcp://p:1", "user": "u", "enabled": False}], "disabled"),
    "file outside": (
        [{"url": "stratum+ssl://p:1", "user": "u", "ca_file": "/etc/shadow"}],
        "is not a CA file the configuration names",
    ),
    "relative file": (
        [{"url": "stratum+ssl://p:1", "user": "u", "ca_file": "../../etc/passwd"}],
        "is not a CA file the configuration names",
    ),
    "control bytes": ([{"url": "stratum+tcp://p:1", "user": "a\x00b"}], "pool[0].user"),
    "long user": ([{"url": "stratum+tcp://p:1", "user": "u" * 500}], "pool[0].user"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_a_hostile_pool_list_is_refused_clearly_and_changes_nothing(
    tmp_path: Path, case: str
) -> None:
    pools = pools_on(tmp_path)
    await pools.send({"command": "pools", "pools": [{"url": B.url, "user": "acct.b"}]})
    before, listed = pools.stored(), pools.manager.listed
    value, message = HOSTILE[case]
    with pytest.raises(CommandError) as refused:
        await pools.send({"command": "pools", "pools": value})
    assert message in str(refused.value)
    assert (pools.stored(), pools.manager.listed) == (before, listed)


def test_nan_and_oversized_payloads_are_refused_before_any_handler() -> None:
    with pytest.raises(CommandError, match="NaN is not a number JSON allows"):
        parse_command(b'{"command": "pools", "pools": [{"quota": NaN}]}', slots=3)
    huge = json.dumps({"command": "pools", "pools": [{"url": "x" * 5000, "user": "u"}]})
    with pytest.raises(CommandError, match="at most 4096"):
        parse_command(huge.encode(), slots=3)
    assert math.isnan(NAN)


def test_the_command_takes_as_many_pools_as_the_config() -> None:
    (rule,) = COMMANDS["pools"].args.values()
    assert rule.accepts([{}] * MAX_POOLS, 3) and not rule.accepts([{}] * (MAX_POOLS + 1), 3)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30))
_pool = st.dictionaries(
    st.sampled_from(["url", "user", "password", "ca_file", "quota", "enabled", "x"]),
    st.one_of(_scalars, st.sampled_from(["stratum+tcp://h:1", "stratum+ssl://h:2", "/etc/hosts"])),
    max_size=7,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.one_of(_scalars, st.lists(_pool, max_size=10), st.lists(_scalars, max_size=3)))
async def test_any_pool_list_is_taken_whole_or_refused_with_a_command_error(
    tmp_path: Path, value: Any
) -> None:
    pools = pools_on(tmp_path)
    before, listed = pools.stored(), pools.manager.listed
    try:
        reply = await pools.send({"command": "pools", "pools": value})
    except CommandError:
        assert (pools.stored(), pools.manager.listed) == (before, listed)
        return
    assert [p["url"] for p in reply["pools"]] == urls(pools)
    assert all(p.ca_file == "" for p in pools.manager.listed)  # none allowed from afar here
    assert json.loads(pools.stored() or b"")["schema"] == 1


async def test_pyasic_send_config_replaces_the_pools_with_group_quotas(tmp_path: Path) -> None:
    pools = pools_on(tmp_path)
    c, d = "stratum+tcp://127.0.0.3:3333", "stratum+tcp://127.0.0.4:3333"
    async with api(pools) as server:
        assert server.port is not None
        miner = HashbayMiner("127.0.0.1", port=server.port)
        groups = [
            PoolGroup(pools=[Pool(url=c, user="acct", password=WORD)], quota=70),
            PoolGroup(
                pools=[
                    Pool(url=d, user="acct", password=WORD),
                    Pool(url=A.url, user="a", password=WORD),
                ],
                quota=30,
            ),
        ]
        await miner.send_config(MinerConfig(pools=PoolConfig(groups=groups)), user_suffix=".m1")
        split = [(p.url, p.user, p.quota) for p in pools.manager.listed]
        assert split == [(c, "acct.m1", 70), (d, "acct.m1", 30), (A.url, "a.m1", 0)]
        await miner.send_config(MinerConfig(pools=PoolConfig(groups=groups[1:])))
        assert [(p.url, p.quota) for p in pools.manager.listed] == [(d, 0), (A.url, 0)]
        bad = [PoolGroup(pools=[Pool(url="http://x:1", user="u", password=WORD)])]
        with pytest.raises(APIError, match="pool"):  # the agent's refusal, through pyasic
            await miner.send_config(MinerConfig(pools=PoolConfig(groups=bad)))
    assert [(p.url, p.quota) for p in pools.manager.listed] == [(d, 0), (A.url, 0)]
