"""The whole agent on the simulated rig: two real test pools with quotas 70 and 30 get
70/30 of the shares the chips find; a pool list sent as a command is stored, applied
while the boards keep hashing, and restored after a restart; a damaged stored list is
left out with a state_dropped event."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from hashbay.agent.core.events import EventKind
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.config import Config
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.agent.interfaces.commands import CommandError, parse_command_mapping
from hashbay.agent.interfaces.miner_api_replies import pools as pools_reply
from hashbay.agent.mining.pool_settings import PoolSettings
from hashbay.tools import cli
from hashbay.tools.pool import TestPool

from .test_mining_e2e import Mining, mining_config, until

SHARES = 3000


def quota_config(tmp_path: Path, pools: list[TestPool], quotas: tuple[int, ...]) -> Config:
    config = mining_config(tmp_path, pools)
    return dataclasses.replace(
        config,
        chain=dataclasses.replace(config.chain, job_interval_s=1, ticket_difficulty=64),
        pool=tuple(
            PoolSettings(url=p.url, user=f"acct.rig{i}", quota=q)
            for i, (p, q) in enumerate(zip(pools, quotas, strict=True))
        ),
    )


@asynccontextmanager
async def agent_on(config: Config, pools: list[TestPool]) -> AsyncIterator[Mining]:
    agent = Agent(config, notifier=SystemdNotifier({}))
    task = asyncio.create_task(agent.run())
    try:
        yield Mining(agent, pools)
        assert not task.done(), "the agent stopped by itself"
    finally:
        agent.supervisor.request_stop("test over")
        assert await asyncio.wait_for(task, 15) == 0


async def test_two_pools_with_quotas_70_and_30_get_70_30_of_the_shares(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        pools = [await stack.enter_async_context(TestPool()) for _ in range(2)]
        config = quota_config(tmp_path, pools, (70, 30))
        async with agent_on(config, pools) as m:
            await until(lambda: m.hashing() and all(p.clients for p in pools), what="mining")
            start = [p.accepted for p in pools]

            def counted() -> list[int]:
                return [p.accepted - s for p, s in zip(pools, start, strict=True)]

            await until(lambda: sum(counted()) >= SHARES, timeout_s=60, what="shares")
            first, second = counted()
            part = first / (first + second)
            print(f"quota 70/30: {first} / {second} shares, {100 * part:.1f} % on the first")
            assert 0.65 <= part <= 0.75
            assert pools[0].rejected == pools[1].rejected == 0
            shown = m.agent.state.miner_json()["pools"]
            assert [(p["quota"], p["active"]) for p in shown] == [(70, True), (30, True)]
            assert 60 <= shown[0]["split_percent"] <= 80
            assert abs(shown[0]["split_percent"] + shown[1]["split_percent"] - 100) < 0.1
            api = pools_reply(m.agent.api.view())  # the miner API's POOLS
            assert [(p["Quota"], p["Status"]) for p in api.items] == [(70, "Alive"), (30, "Alive")]
            assert 60 <= api.items[0]["Split%"] <= 80


async def send(agent: Agent, command: dict[str, object]) -> dict[str, object]:
    return await agent.dispatch(parse_command_mapping(command, slots=len(agent.controllers)))


async def test_a_pool_list_sent_as_a_command_is_applied_hashing_and_kept_over_a_restart(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        first, second = [await stack.enter_async_context(TestPool()) for _ in range(2)]
        config = quota_config(tmp_path, [first], (0,))
        async with agent_on(config, [first]) as m:
            await until(lambda: m.hashing() and first.accepted >= 5, what="mining on the first")
            new = [{"url": second.url, "user": "acct.new", "password": "secret", "quota": 1}]
            reply = await send(m.agent, {"command": "pools", "pools": new})
            assert reply["source"] == "remote"
            assert reply["pools"] == [
                {"url": second.url, "user": "acct.new", "ca_file": "", "quota": 1, "enabled": True}
            ]  # no password in a reply
            stored = json.loads((Path(config.agent.state_dir) / "pools.json").read_text())
            assert stored["pools"][0]["password"] == new[0]["password"]
            await until(lambda: second.accepted >= 5, what="mining on the new list")
            await until(lambda: first.clients == 0, what="the old pool let go")
            assert m.hashing()  # the boards never stopped

            try:
                await send(m.agent, {"command": "pools", "pools": [{"url": "http://x:1"}]})
            except CommandError as exc:
                assert "pool[0].url" in str(exc)
            assert m.manager.listed[0].url == second.url  # a refused list changes nothing

        async with agent_on(config, [first, second]) as m:  # restarted: the list is kept
            assert [p.url for p in m.manager.listed] == [second.url]
            await until(lambda: second.users() == {"acct.new"}, what="back on the stored list")
            reply = await send(m.agent, {"command": "pools_reset"})
            assert reply["source"] == "config"
            await until(lambda: first.clients == 1, what="back on the config's pool")
        assert not (Path(config.agent.state_dir) / "pools.json").exists()


async def test_a_damaged_stored_pool_list_raises_state_dropped_and_the_config_is_used(
    tmp_path: Path,
) -> None:
    async with TestPool() as pool:
        config = quota_config(tmp_path, [pool], (0,))
        stored = Path(config.agent.state_dir) / "pools.json"
        stored.write_text(
            json.dumps({"schema": 1, "pools": [{"url": "stratum+tcp://x", "user": 1}]})
        )
        agent = Agent(config, notifier=SystemdNotifier({}))
        assert [p.url for p in agent.pool_list.current] == [pool.url]
        (event,) = [e for e in agent.events.recent(10) if e.kind is EventKind.STATE_DROPPED]
        assert event.details["file"] == "pools" and "pool[0]" in event.message
        agent.spool.close()


async def test_the_cli_shows_sets_and_resets_the_pools_over_the_control_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with AsyncExitStack() as stack:
        first, second = [await stack.enter_async_context(TestPool()) for _ in range(2)]
        config = quota_config(tmp_path, [first], (0,))
        config = dataclasses.replace(
            config, control=dataclasses.replace(config.control, enabled=True)
        )
        sock = str(Path(config.agent.runtime_dir) / config.control.socket)

        async def hashbay(*argv: str) -> tuple[int, str]:
            code = await asyncio.to_thread(cli.main, ["--socket", sock, *argv])
            return code, capsys.readouterr().out

        async with agent_on(config, [first]) as m:
            await until(lambda: Path(sock).exists() and first.accepted >= 1, what="mining")
            spec = f"url={second.url} user=acct.cli quota=70"
            code, out = await hashbay("pools", "set", spec, f"url={first.url} user=acct.b quota=30")
            assert code == 0 and "pools:" in out
            await until(lambda: second.accepted >= 3 and first.users() == {"acct.b"}, what="split")
            code, out = await hashbay("pools")
            assert code == 0
            (row,) = [line for line in out.splitlines() if re.search(r"acct\.cli .* %", line)]
            assert row.split()[:2] == ["0", second.url] and " 70 " in row  # the agent logs too
            code, out = await hashbay("--json", "pools", "reset")
            (reply,) = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            assert code == 0 and reply["source"] == "config"
            assert m.manager.listed[0].url == first.url
