"""The cgminer-compatible miner API over real TCP, checked field by field against what
cgminer-API clients (pyasic's cgminer/bmminer/Braiins backends, cgminer monitors) parse."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tomllib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashbay.agent.core.state import AgentState
from hashbay.agent.core.status import BusDevice, Health, HealthLevel, SlotState, SlotStatus
from hashbay.agent.daemon.config import default_config_path, parse_config
from hashbay.agent.hardware.rig import RigSnapshot
from hashbay.agent.interfaces import miner_api_replies as replies
from hashbay.agent.interfaces.api_settings import ApiSettings
from hashbay.agent.interfaces.commands import Command, CommandError
from hashbay.agent.interfaces.miner_api import MinerApiServer
from hashbay.agent.interfaces.miner_api_replies import DeviceCounters, WorkMeter
from hashbay.drivers.errors import ConfigError
from hashbay.drivers.fan import FanReading

from .support import Clock

START = 1_700_000_000.0
# What cgminer 4.x puts in SUMMARY; monitors index these names.
SUMMARY_KEYS = {
    "Elapsed", "MHS av", "MHS 5s", "MHS 1m", "MHS 5m", "MHS 15m", "Found Blocks", "Getworks",
    "Accepted", "Rejected", "Hardware Errors", "Utility", "Discarded", "Stale", "Get Failures",
    "Local Work", "Remote Failures", "Network Blocks", "Total MH", "Work Utility",
    "Difficulty Accepted", "Difficulty Rejected", "Difficulty Stale", "Best Share",
    "Device Hardware%", "Device Rejected%", "Pool Rejected%", "Pool Stale%", "Last getwork",
}  # fmt: skip
ASC_KEYS = {
    "ASC", "Name", "ID", "Enabled", "Status", "Temperature", "MHS av", "MHS 5s", "Accepted",
    "Rejected", "Hardware Errors", "Utility", "Last Share Pool", "Last Share Time", "Total MH",
    "Diff1 Work", "Difficulty Accepted", "Difficulty Rejected", "Last Share Difficulty",
    "Last Valid Work", "Device Hardware%", "Device Rejected%", "Device Elapsed",
}  # fmt: skip


def health(ths: float) -> Health:
    return Health(
        score=90.0,
        level=HealthLevel.OK,
        reasons=(),
        hashrate_hs=ths * 1e12,
        expected_hs=80e12,
        hw_error_rate=0.0,
        chips_answering=125,
        chips_total=126,
    )


class FakeAgent:
    def __init__(self) -> None:
        self.clock = Clock(START + 100)
        self.state = AgentState("m1")
        self.state.started_at = START
        self.slots = [
            SlotStatus(0, SlotState.HASHING, serial="HB1", model="HB-1368", health=health(80),
                       temps_c=(55.25, 61.5)),
            SlotStatus(1, SlotState.DEGRADED, serial="A,B|C=D", model="HB-1368",
                       health=health(60), temps_c=(50.0, None)),
            SlotStatus(2, SlotState.EMPTY, detail="no module"),
        ]  # fmt: skip
        self.state.slot_statuses = lambda: list(self.slots)
        self.state.snapshot = RigSnapshot(
            taken_at=0.0,
            fans=(FanReading(0.5, 4000.0, False), FanReading(0.5, 3950.0, False)),
            slots=(),
        )
        self.devices: list[DeviceCounters | None] = [
            DeviceCounters(nonces=1000, hw_errors=10, work_hashes=8e14, chips=126, freq_mhz=490),
            DeviceCounters(nonces=500, hw_errors=5, work_hashes=4e14, chips=126, freq_mhz=480),
            None,
        ]
        self.calls: list[Command] = []
        self.refuse: str | None = None

    async def handle(self, command: Command) -> dict[str, Any]:
        self.calls.append(command)
        if self.refuse:
            raise CommandError(self.refuse)
        return {"slot": command.args["slot"]}


@contextlib.asynccontextmanager
async def serving(agent: FakeAgent, **changes: Any) -> AsyncIterator[MinerApiServer]:
    settings = replace(ApiSettings(port=0, timeout_s=2.0), **changes)
    server = MinerApiServer(
        settings,
        state=agent.state,
        handle=agent.handle,
        slots=3,
        devices=lambda: agent.devices,
        clock=agent.clock,
    )
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.ready.wait(), 5)
    try:
        yield server
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def ask(server: MinerApiServer, request: bytes, *, parts: int = 1) -> bytes:
    """One request on a fresh connection, as cgminer clients do; reads to the end."""
    assert server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    step = max(1, len(request) // parts)
    for start in range(0, len(request), step):
        writer.write(request[start : start + step])
        await writer.drain()
        if parts > 1:
            await asyncio.sleep(0.05)
    data = await asyncio.wait_for(reader.read(), 10)  # the server closes after replying
    writer.close()
    return data


def load(data: bytes) -> dict[str, Any]:
    """As pyasic's `_load_api_data` and cgminer monitors do: drop the NUL, parse JSON."""
    assert data.endswith(b"\0"), "replies are NUL-terminated"
    parsed = json.loads(data[:-1].decode())
    assert isinstance(parsed, dict)
    return parsed


def succeeded(reply: dict[str, Any]) -> bool:
    """pyasic's validate_command_output: STATUS[0].STATUS is S or I."""
    return reply["STATUS"][0]["STATUS"] in ("S", "I")


async def command(server: MinerApiServer, name: str, parameter: str | None = None) -> Any:
    request: dict[str, Any] = {"command": name}
    if parameter is not None:
        request["parameter"] = parameter
    return load(await ask(server, json.dumps(request).encode()))


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeAgent, MinerApiServer]]:
    agent = FakeAgent()
    async with serving(agent) as server:
        yield agent, server


# -- the read commands --------------------------------------------------------------------


async def test_every_reply_has_cgminers_status_header(
    api: tuple[FakeAgent, MinerApiServer],
) -> None:
    _, server = api
    for name in ("version", "config", "summary", "devs", "edevs", "pools", "stats",
                 "devdetails", "fans", "temps", "asccount", "coin", "power"):  # fmt: skip
        reply = await command(server, name)
        status = reply["STATUS"][0]
        assert set(status) == {"STATUS", "When", "Code", "Msg", "Description"}, name
        assert succeeded(reply), (name, status)
        assert status["When"] == int(START + 100)
        assert status["Description"].startswith("hashbay ")
        assert reply["id"] == 1


async def test_version_names_the_api_level(api: tuple[FakeAgent, MinerApiServer]) -> None:
    _, server = api
    reply = await command(server, "version")
    version = reply["VERSION"][0]
    assert version["API"] == "3.7"  # pyasic: api_version["VERSION"][0]["API"]
    assert "CGMiner" in version  # pyasic: fw_ver = VERSION[0]["CGMiner"]
    assert version["Type"] == "hashbay HB-1368"
    assert (reply["STATUS"][0]["Code"], reply["STATUS"][0]["Msg"]) == (22, "CGMiner versions")


async def test_summary_reports_hashrate_in_mhs_and_totals(
    api: tuple[FakeAgent, MinerApiServer],
) -> None:
    agent, server = api
    await command(server, "summary")  # the meter sees the chains
    agent.clock.now += 100
    summary = (await command(server, "summary"))["SUMMARY"][0]
    assert set(summary) >= SUMMARY_KEYS
    assert summary["Elapsed"] == 200
    assert summary["MHS 5s"] == pytest.approx(140e6)  # 80 + 60 TH/s, hashing or degraded
    assert summary["GHS 5s"] == pytest.approx(140e3)  # bmminer name (pyasic reads it)
    assert summary["Total MH"] == pytest.approx(12e14 / 1e6)
    assert summary["MHS av"] == pytest.approx(12e14 / 1e6 / 200)
    assert summary["Hardware Errors"] == 15
    assert summary["Device Hardware%"] == pytest.approx(15 / 1515 * 100, abs=1e-3)
    assert summary["Accepted"] == 0  # no pool yet: no shares, said honestly
    assert isinstance(summary["Elapsed"], int)


async def test_devs_list_every_slot_under_a_stable_id(
    api: tuple[FakeAgent, MinerApiServer],
) -> None:
    agent, server = api
    await command(server, "devs")
    agent.clock.now += 10
    reply = await command(server, "devs")
    assert reply["STATUS"][0]["Msg"] == "3 ASC(s)"
    devs = reply["DEVS"]
    assert [d["ASC"] for d in devs] == [0, 1, 2]
    assert all(set(d) >= ASC_KEYS for d in devs)
    assert [(d["Enabled"], d["Status"]) for d in devs] == [
        ("Y", "Alive"),
        ("Y", "Sick"),
        ("N", "NoStart"),
    ]
    assert devs[0]["Temperature"] == 61.5
    assert devs[0]["MHS 5s"] == pytest.approx(80e6)
    assert devs[0]["MHS av"] == pytest.approx(8e14 / 10 / 1e6)
    assert devs[0]["Device Elapsed"] == 10
    assert devs[0]["Nominal MHS"] == pytest.approx(80e6)  # Braiins' expected rate
    assert devs[2]["MHS 5s"] == 0
    edevs = (await command(server, "edevs"))["DEVS"]
    assert [d["ID"] for d in edevs] == [0, 1]


async def test_one_device_by_id(api: tuple[FakeAgent, MinerApiServer]) -> None:
    _, server = api
    reply = await command(server, "asc", "1")
    assert reply["STATUS"][0]["Msg"] == "ASC1"
    assert reply["ASC"][0]["Serial"] == "A,B|C=D"
    missing = await command(server, "asc")
    assert (missing["STATUS"][0]["STATUS"], missing["STATUS"][0]["Code"]) == ("E", 15)
    out_of_range = await command(server, "asc", "9")
    assert out_of_range["STATUS"][0]["Msg"] == "Invalid ASC id 9 - range is 0 - 2"
    assert (await command(server, "asccount"))["ASCS"] == [{"Count": 3}]


async def test_stats_carry_the_bmminer_keys_antminer_tools_read(
    api: tuple[FakeAgent, MinerApiServer],
) -> None:
    _, server = api
    stats = (await command(server, "stats"))["STATS"]
    assert set(stats[0]) >= {"CGMiner", "Miner", "Type"}
    entry = stats[1]
    assert entry["Elapsed"] == 100  # pyasic: uptime = STATS[1]["Elapsed"]
    assert (entry["fan_num"], entry["fan1"], entry["fan2"]) == (2, 4000, 3950)
    assert entry["rate_unit"] == "GH"
    assert entry["total_rateideal"] == pytest.approx(160.0e3)  # two hashing boards x 80 TH/s
    # pyasic's BMMiner: boards found by chain_acn<n>, rate in GH/s, temperatures by index.
    boards = [n for n in range(1, 16) if entry.get(f"chain_acn{n}")]
    assert boards == [1, 2]
    assert float(entry["chain_rate1"]) == pytest.approx(80e3)
    assert (entry["temp1"], entry["temp2_1"]) == (62, 55)
    assert entry["chain_acs1"].count("o") == 125 and entry["chain_acs1"].count("x") == 1
    assert (entry["chain_acn3"], entry["chain_acs3"], entry["chain_rate3"]) == (0, "", "")
    assert entry["chain_hw1"] == 10


async def test_fans_temps_devdetails_and_pools(api: tuple[FakeAgent, MinerApiServer]) -> None:
    _, server = api
    fans = (await command(server, "fans"))["FANS"]
    assert fans == [
        {"FAN": 0, "ID": 0, "RPM": 4000, "Speed": 50},
        {"FAN": 1, "ID": 1, "RPM": 3950, "Speed": 50},
    ]
    temps = (await command(server, "temps"))["TEMPS"]
    assert temps[0] == {"TEMP": 0, "ID": 0, "Board": 55.25, "Chip": 61.5}
    assert [t["ID"] for t in temps] == [0, 1]  # the empty slot has no readings
    details = (await command(server, "devdetails"))["DEVDETAILS"]
    assert [(d["ID"], d["Chips"], d["Model"]) for d in details] == [
        (0, 126, "HB-1368"),
        (1, 126, "HB-1368"),
        (2, 0, ""),
    ]
    pools = await command(server, "pools")
    assert (pools["STATUS"][0]["Msg"], pools["POOLS"]) == ("0 Pool(s)", [])
    config = (await command(server, "config"))["CONFIG"][0]
    assert (config["ASC Count"], config["Pool Count"]) == (3, 0)


async def test_joined_commands_answer_each_under_its_name(
    api: tuple[FakeAgent, MinerApiServer],
) -> None:
    _, server = api
    reply = load(await ask(server, b'{"command":"summary+devs+stats"}'))
    assert set(reply) == {"summary", "devs", "stats", "id"}
    assert succeeded(reply["summary"][0])
    assert reply["devs"][0]["DEVS"][0]["ASC"] == 0
    assert reply["stats"][0]["STATS"][1]["fan_num"] == 2


async def test_plain_text_requests_get_cgminers_text_form(
    api: tuple[FakeAgent, MinerApiServer],
) -> None:
    _, server = api
    text = (await ask(server, b"summary")).decode()
    assert text.startswith("STATUS=S,When=1700000100,Code=11,Msg=Summary,Description=hashbay ")
    assert "|SUMMARY,Elapsed=100,MHS av=" in text
    assert text.endswith("|\0")
    device = (await ask(server, b"asc|1\n")).decode()
    assert "|ASC=1,Name=HBY,ID=1,Enabled=Y,Status=Sick," in device
    assert "Serial=A\\,B\\|C\\=D" in device  # separators in values are escaped


# -- bad requests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "code", "message"),
    [
        (b'{"command":"reboot"}', 14, "Invalid command"),
        (b"{bad", 23, "Invalid JSON"),
        (b'["summary"]', 23, "Invalid JSON"),
        (b'{"parameter":"0"}', 24, "Missing JSON 'command'"),
        (b'{"command":"summary","parameter":[1]}', 23, "Invalid JSON"),
        (b'{"command":"pga","parameter":"0"}', 56, "No PGAs"),
        (b'{"command":"summary+reboot"}', None, None),
    ],
)
async def test_bad_json_requests_get_a_status_e_reply(
    api: tuple[FakeAgent, MinerApiServer], request_bytes: bytes, code: int | None, message: str
) -> None:
    _, server = api
    reply = load(await ask(server, request_bytes))
    if code is None:  # joined: the good part answered, the bad part refused
        assert succeeded(reply["summary"][0])
        assert reply["reboot"][0]["STATUS"][0]["Code"] == 14
        return
    assert reply["STATUS"][0]["STATUS"] == "E"
    assert (reply["STATUS"][0]["Code"], reply["STATUS"][0]["Msg"]) == (code, message)


@pytest.mark.parametrize(
    "request_bytes", [b"reboot", b"\xff\xfe\x00", b"summary+devs", b"x" * 9000]
)
async def test_bad_text_requests_get_a_status_e_reply(
    api: tuple[FakeAgent, MinerApiServer], request_bytes: bytes
) -> None:
    _, server = api
    reply = (await ask(server, request_bytes)).decode()
    assert reply.startswith("STATUS=E,")
    assert reply.endswith("|\0")


async def test_a_request_in_pieces_is_answered_once_whole(
    api: tuple[FakeAgent, MinerApiServer],
) -> None:
    _, server = api
    reply = load(await ask(server, b'{"command": "summary", "parameter": ""}', parts=3))
    assert succeeded(reply)


async def test_a_silent_client_is_closed_and_does_not_block_others() -> None:
    agent = FakeAgent()
    async with serving(agent, timeout_s=0.3) as server:
        assert server.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert succeeded(await command(server, "summary"))  # served meanwhile
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, nothing said
        writer.close()


# -- changes --------------------------------------------------------------------------------


async def test_the_api_is_read_only_by_default(api: tuple[FakeAgent, MinerApiServer]) -> None:
    agent, server = api
    for request in (b"ascdisable|1", b'{"command":"ascidentify","parameter":"0"}'):
        reply = await ask(server, request)
        assert b"STATUS=E" in reply or b'"STATUS":"E"' in reply
        assert b"Access denied to 'asc" in reply
    assert b"Code=45" in await ask(server, b"privileged")
    assert agent.calls == []
    check = await command(server, "check", "ascdisable")
    assert check["CHECK"] == [{"Exists": "Y", "Access": "N"}]


async def test_allowed_addresses_may_disable_enable_and_identify_a_device() -> None:
    agent = FakeAgent()
    async with serving(agent, allow_changes=True) as server:
        assert b"Code=46" in await ask(server, b"privileged")
        disabled = await command(server, "ascdisable", "1")
        assert disabled["STATUS"][0] == {
            "STATUS": "S",
            "When": int(START + 100),
            "Code": 111,
            "Msg": "ASC 1 set disable flag",
            "Description": disabled["STATUS"][0]["Description"],
        }
        await command(server, "ascenable", "1")
        await command(server, "ascidentify", "0")
        assert agent.calls == [
            Command("prepare_swap", {"slot": 1}),
            Command("cancel_swap", {"slot": 1}),
            Command("locate", {"slot": 0, "mode": "blink"}),
        ]
        agent.refuse = "slot 2 is empty"
        refused = await command(server, "ascdisable", "2")
        assert refused["STATUS"][0]["STATUS"] == "E"
        assert refused["STATUS"][0]["Msg"] == "slot 2 is empty"
        bad_id = await command(server, "ascdisable", "7")
        assert bad_id["STATUS"][0]["Code"] == 107
        joined = load(await ask(server, b'{"command":"summary+ascdisable","parameter":"0"}'))
        assert joined["ascdisable"][0]["STATUS"][0]["Code"] == 45  # never inside a join
        assert len(agent.calls) == 4


async def test_changes_from_other_addresses_are_denied() -> None:
    agent = FakeAgent()
    async with serving(agent, allow_changes=True, allowed_addresses=("10.0.0.0/8",)) as server:
        reply = await command(server, "ascdisable", "1")
        assert reply["STATUS"][0]["Code"] == 45
    assert agent.calls == []


# -- pieces ---------------------------------------------------------------------------------


def test_settings_refuse_addresses_that_are_not_addresses() -> None:
    with pytest.raises(ConfigError, match=r"api\.bind"):
        ApiSettings(bind="localhost")
    with pytest.raises(ConfigError, match=r"api\.allowed_addresses\[1\]"):
        ApiSettings(allowed_addresses=("10.0.0.0/8", "office"))
    raw = tomllib.loads(default_config_path().read_text())
    with pytest.raises(ConfigError, match=r"api\.port"):
        parse_config(raw | {"api": {"port": 70000}}, "test.toml")


def test_the_work_meter_keeps_what_a_replaced_module_did() -> None:
    meter = WorkMeter()
    board = DeviceCounters(nonces=10, hw_errors=1, work_hashes=1e12, chips=1, freq_mhz=500)
    meter.observe(100.0, [board])
    meter.observe(110.0, [replace(board, nonces=20, work_hashes=2e12)])
    assert meter.since(0) == 100.0
    meter.observe(120.0, [None])  # pulled
    meter.observe(130.0, [replace(board, nonces=1, hw_errors=0, work_hashes=1e11)])  # new one
    assert meter.since(0) == 130.0
    totals = meter.totals()
    assert totals.work_hashes == pytest.approx(2.1e12)
    assert (totals.nonces, totals.hw_errors) == (21, 1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=100).map(str.encode))
def test_any_request_bytes_parse_or_are_refused_with_a_reply(raw: bytes) -> None:
    try:
        request = replies.parse_request(raw)
    except replies.RequestError as exc:
        assert exc.reply.severity == "E"
        return
    assert 1 <= len(request.commands) <= replies.MAX_JOINED


async def test_devs_count_each_slots_bus_failures_by_kind_and_name_noisy_devices() -> None:
    agent = FakeAgent()
    agent.slots[0] = replace(
        agent.slots[0],
        bus=(
            BusDevice("DC-DC", 0x20, 2, 31, 0, 0, 0.3, True),
            BusDevice("sensor 0", 0x48, 0, 0, 1, 4, 0.001, False),
        ),
    )
    async with serving(agent) as server:
        reply = load(await ask(server, b'{"command": "devs"}'))
    first, second = reply["DEVS"][0], reply["DEVS"][1]
    assert (first["Bus NACKs"], first["Bus PEC Errors"]) == (2, 31)
    assert (first["Bus Timeouts"], first["Bus Errors"]) == (1, 4)
    assert first["Bus Noisy Devices"] == "DC-DC 0x20"
    assert (second["Bus PEC Errors"], second["Bus Noisy Devices"]) == (0, "")
