"""The pyasic backend against the running agent: a real hashbay-agent process on the
simulated rig, read and steered through real pyasic over the miner API."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyasic
import pytest
from pyasic.config import MinerConfig

from hashbay.agent.core.fault_codes import Fault
from hashbay.tools.fleet.pyasic_hashbay import HashbayMiner, get_miner, is_hashbay

from .support import AGENT, with_setting
from .test_cli import agent_config, api_port, slot_states, wait_for

CHIPS = 42


@pytest.fixture(scope="module")
def miner_port() -> Iterator[int]:
    directory = Path(tempfile.mkdtemp(prefix="hb-pyasic-", dir="/tmp"))
    config = agent_config(directory)
    config.write_text(with_setting(config.read_text(), "api", "allow_changes", "true"))
    log = directory / "agent.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [*AGENT, "--config", str(config), "--state-dir", str(directory / "state"),
             "--runtime-dir", str(directory / "run"), "--log-format", "json"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )  # fmt: skip
    sock = directory / "run" / "control.sock"
    try:
        wait_for("all three slots hashing", lambda: slot_states(sock) == ["hashing"] * 3)
        yield wait_for("the miner API", lambda: api_port(log))
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        shutil.rmtree(directory, ignore_errors=True)


async def until(check: Any, what: str, timeout_s: float = 60) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


async def test_get_miner_finds_hashbay_by_its_marker(miner_port: int) -> None:
    assert await is_hashbay("127.0.0.1", miner_port)
    miner = await get_miner("127.0.0.1", miner_port)
    assert isinstance(miner, HashbayMiner) and miner.rpc.port == miner_port


async def test_get_miner_defers_to_pyasic_for_anything_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def other(writer_reader: Any, writer: asyncio.StreamWriter) -> None:
        writer.write(b'{"STATUS":[{"STATUS":"S"}],"VERSION":[{"BMMiner":"2.0.0"}]}\0')
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(other, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    asked: list[str] = []

    async def pyasic_get_miner(ip: str) -> None:
        asked.append(ip)

    monkeypatch.setattr(pyasic, "get_miner", pyasic_get_miner)
    async with server:
        assert not await is_hashbay("127.0.0.1", port)
        assert await get_miner("127.0.0.1", port) is None
    assert asked == ["127.0.0.1"]


async def test_get_data_fills_every_field_a_fleet_reads(miner_port: int) -> None:
    miner = HashbayMiner("127.0.0.1", port=miner_port)

    async def complete() -> Any:
        data = await miner.get_data()
        boards = data.hashboards
        ready = data.wattage and all(b.hashrate and float(b.hashrate) > 0 for b in boards)
        return data if ready else None

    data = await until(complete, "boards with hashrate, temperatures and power")
    assert data.hashrate is not None and float(data.hashrate) > 0
    assert data.expected_hashrate is not None and float(data.expected_hashrate) > 0
    assert len(data.hashboards) == 3
    for slot, board in enumerate(data.hashboards):
        assert board.slot == slot and not board.missing and board.serial_number
        assert board.chips == board.expected_chips == CHIPS
        assert board.temp is not None and board.chip_temp is not None
        assert board.chip_temp >= board.temp
    assert len(data.fans) == 4 and all(f.speed and f.speed > 0 for f in data.fans)
    assert data.wattage is not None and data.wattage > 0
    assert data.efficiency is not None and data.efficiency > 0
    assert data.fw_ver is not None and data.fw_ver.startswith("hashbay ")
    assert data.api_ver == "3.7"
    assert data.hostname and data.uptime is not None and data.uptime >= 0
    assert data.fault_light is False and data.is_mining is True
    assert data.errors == [] and data.pools == []
    assert data.wattage_limit is None


async def test_fault_light_power_limit_and_curtail_steer_the_miner(miner_port: int) -> None:
    miner = HashbayMiner("127.0.0.1", port=miner_port)
    assert await miner.fault_light_on()
    assert (await miner.get_data(include=["fault_light"])).fault_light is True
    assert await miner.fault_light_off()
    assert (await miner.get_data(include=["fault_light"])).fault_light is False

    assert await miner.set_power_limit(2000)
    assert (await miner.get_data(include=["wattage_limit"])).wattage_limit == 2000
    assert await miner.set_power_limit(0)
    assert (await miner.get_data(include=["wattage_limit"])).wattage_limit is None
    assert not await miner.set_power_limit(5)  # outside the command's range: refused

    assert await miner.stop_mining()

    async def asleep() -> Any:
        data = await miner.get_data(include=["is_mining", "errors"])
        return data if data.is_mining is False else None

    data = await until(asleep, "the miner asleep")
    assert [e.error_code for e in data.errors] == [Fault.CURTAILED.code]
    assert data.errors[0].severity == "info"
    assert await miner.resume_mining()
    assert (await miner.get_data(include=["is_mining"])).is_mining is True


async def test_the_pool_config_reads_back_through_pyasic(miner_port: int) -> None:
    config = await HashbayMiner("127.0.0.1", port=miner_port).get_config()
    assert isinstance(config, MinerConfig)
    assert [p.url for g in config.pools.groups for p in g.pools] == []  # none configured
