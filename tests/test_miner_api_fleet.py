"""The miner API's fleet additions over real TCP: what generic cgminer-family tools need
(firmware marker, CompileTime, board and fan counts, power), the `faults` reply with
canonical codes, and the LuxOS-named controls (curtail, ledset, powerset)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hashbay.agent.core.fault_codes import Fault
from hashbay.agent.core.status import SlotState
from hashbay.agent.hardware.rig import RigSnapshot
from hashbay.agent.interfaces.commands import Command
from hashbay.drivers.fan import FanReading
from hashbay.drivers.pmbus import PsuTelemetry

from .test_miner_api import FakeAgent, command, serving


class ObedientAgent(FakeAgent):
    async def handle(self, command: Command) -> dict[str, Any]:
        self.calls.append(command)
        return {}


async def test_version_carries_the_hashbay_marker_and_a_compile_time() -> None:
    async with serving(FakeAgent()) as server:
        item = (await command(server, "version"))["VERSION"][0]
    assert item["Miner"].startswith("hashbay ") and item["Firmware"].startswith("hashbay ")
    assert item["CompileTime"] and item["API"]


async def test_stats_count_boards_and_fans_with_every_chains_fields() -> None:
    agent = FakeAgent()
    agent.slots[0] = replace(agent.slots[0], power_w=1234.5)
    async with serving(agent) as server:
        entry = (await command(server, "stats"))["STATS"][1]
    assert entry["miner_count"] == 3 and entry["fan_num"] == 2
    assert entry["fan1"] == 4000 and entry["fan2"] == 3950
    for n in (1, 2, 3):
        assert {f"chain_acn{n}", f"chain_acs{n}", f"chain_rate{n}", f"temp{n}"} <= set(entry)
        assert {f"chain_power{n}", f"chain_serial{n}", f"chain_acn_expected{n}"} <= set(entry)
    assert entry["chain_power1"] == 1234.5 and entry["chain_serial1"] == "HB1"
    assert entry["chain_acn_expected1"] == 126 and entry["chain_acn_expected3"] == 0


async def test_power_is_where_cgminer_family_tools_read_it() -> None:
    agent = FakeAgent()
    assert agent.state.snapshot is not None
    agent.state.snapshot = replace(agent.state.snapshot, psu=_psu(2987.6))
    async with serving(agent) as server:
        summary = (await command(server, "summary"))["SUMMARY"][0]
        power = (await command(server, "power"))["POWER"][0]
        stats = (await command(server, "stats"))["STATS"][1]
    assert summary["Power"] == power["Watts"] == stats["total_power"] == 2988
    assert stats["chain_power"] == "2988 W"
    assert summary["Power Limit"] == 0 and summary["Power Mode"] == "run"


def _psu(watts: float) -> PsuTelemetry:
    return PsuTelemetry(230.0, watts / 230, watts, 12.0, watts * 0.95 / 12, watts * 0.95, 40, 0)


async def test_faults_list_slots_fans_and_psu_with_codes_most_severe_first() -> None:
    agent = FakeAgent()
    agent.slots[1] = replace(
        agent.slots[1],
        state=SlotState.FAULT,
        fault_code=Fault.OVER_TEMP_CUT.code,
        detail="board at 96 °C reached the cutoff",
    )
    assert agent.state.snapshot is not None
    agent.state.snapshot = RigSnapshot(
        taken_at=0.0,
        fans=(FanReading(1.0, 0.0, True), FanReading(1.0, 5000.0, False)),
        slots=(),
        psu_problems=("PSU input undervoltage",),
    )
    async with serving(agent) as server:
        reply = await command(server, "faults")
    items = reply["FAULTS"]
    assert [(f["Code"], f["Slot"]) for f in items] == [(103, 1), (306, -1), (501, -1)]
    assert items[0]["Severity"] == "critical" and items[0]["Serial"] == "A,B|C=D"
    assert items[0]["Action"] == Fault.OVER_TEMP_CUT.value.action
    assert items[1]["Message"] == "PSU input undervoltage"


async def test_config_reports_the_locate_leds_as_luxos_red_led() -> None:
    agent = FakeAgent()
    async with serving(agent) as server:
        assert (await command(server, "config"))["CONFIG"][0]["RedLed"] == "off"
        agent.slots[0] = replace(agent.slots[0], locate="blink")
        config = (await command(server, "config"))["CONFIG"][0]
    assert config["RedLed"] == "blink" and config["Hostname"]


async def test_fleet_controls_become_the_agents_own_commands() -> None:
    agent = ObedientAgent()
    async with serving(agent, allow_changes=True) as server:
        replies = [
            await command(server, "curtail", "sleep"),
            await command(server, "curtail", "wakeup"),
            await command(server, "ledset", "red,blink"),
            await command(server, "powerset", "2500"),
            await command(server, "powerset", "0"),
        ]
    assert all(r["STATUS"][0]["STATUS"] == "S" for r in replies)
    assert agent.calls == [
        Command("curtail", {"mode": "sleep"}),
        Command("resume", {}),
        Command("locate", {"slot": 0, "mode": "blink"}),  # the occupied slots only
        Command("locate", {"slot": 1, "mode": "blink"}),
        Command("power_target", {"watts": 2500.0}),
        Command("power_target_clear", {}),
    ]


async def test_fleet_controls_refuse_bad_parameters_and_unprivileged_clients() -> None:
    agent = ObedientAgent()
    async with serving(agent, allow_changes=True) as server:
        bad = [
            await command(server, "curtail", "nap"),
            await command(server, "powerset", "lots"),
            await command(server, "powerset", "5"),  # below the command's range
            await command(server, "ledset", "green,disco"),
        ]
    assert all(r["STATUS"][0]["STATUS"] == "E" for r in bad)
    assert "sleep, min or wakeup" in bad[0]["STATUS"][0]["Msg"]
    async with serving(agent) as server:  # read-only by default
        denied = await command(server, "curtail", "sleep")
    assert denied["STATUS"][0]["Code"] == 45
    assert agent.calls == []
