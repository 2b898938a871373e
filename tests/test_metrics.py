"""The Prometheus endpoint on the agent running the simulated rig: off by default and on
loopback when turned on; both expositions parse with prometheus_client's own parsers, and
the series have the names, types and labels dashboards are built on."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from hashbay.agent.core.status import SlotState
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.agent.interfaces.metrics_settings import MetricsSettings

from .support import rig_config
from .test_lifecycle import until


def test_metrics_are_off_by_default_and_on_loopback_when_on() -> None:
    settings = MetricsSettings()
    assert settings.enabled is False and settings.bind == "127.0.0.1"
    assert settings.per_chip is False


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    config = rig_config(tmp_path)
    config = dataclasses.replace(
        config, metrics=dataclasses.replace(config.metrics, enabled=True, port=0, per_chip=True)
    )
    running = Agent(config, notifier=SystemdNotifier({}))
    task = asyncio.create_task(running.run())
    await until(
        lambda: (
            all(c.state is SlotState.HASHING for c in running.controllers)
            and running.metrics.ready.is_set()
        ),
        what="hashing with metrics served",
    )
    yield running
    running.supervisor.request_stop("test over")
    assert await asyncio.wait_for(task, 15) == 0


async def scrape(port: int, accept: str = "text/plain", path: str = "/metrics") -> tuple[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return head, body


async def test_the_text_exposition_carries_miner_slot_fan_psu_pool_spool_and_chip_series(
    agent: Agent,
) -> None:
    assert agent.metrics.port is not None
    for _ in range(100):  # the health model's window fills within a few polls
        head, body = await scrape(agent.metrics.port)
        families = {f.name: f for f in parse_text(body)}
        rates = families["hashbay_slot_hashrate_hashes_per_second"].samples
        if len(rates) == 3 and all(s.value > 0 for s in rates):
            break
        await asyncio.sleep(0.2)
    assert head.startswith("HTTP/1.1 200") and "Content-Type: text/plain;" in head
    expected_types = {
        "hashbay_miner_info": "info",
        "hashbay_miner_hashrate_hashes_per_second": "gauge",
        "hashbay_miner_power_mode": "stateset",
        "hashbay_slot_state": "stateset",
        "hashbay_slot_hashrate_hashes_per_second": "gauge",
        "hashbay_slot_temperature_celsius": "gauge",
        "hashbay_slot_power_watts": "gauge",
        "hashbay_slot_fault_code": "gauge",
        "hashbay_fan_speed_rpm": "gauge",
        "hashbay_psu_input_power_watts": "gauge",
        "hashbay_pool_shares_accepted": "counter",
        "hashbay_spool_pending_events": "gauge",
        "hashbay_spool_dropped_events": "counter",
        "hashbay_chip_nonces": "counter",
        "hashbay_chip_frequency_megahertz": "gauge",
    }
    # The classic text format has no info/stateset: the library writes them as gauges.
    for name, kind in expected_types.items():
        assert name in families, name
        assert families[name].type == (kind if kind in ("gauge", "counter") else "gauge"), name
    assert {s.labels["slot"] for s in rates} == {"0", "1", "2"}
    assert all(s.labels["serial"] and s.value > 0 for s in rates)
    temps = families["hashbay_slot_temperature_celsius"].samples
    assert {"slot", "serial", "sensor"} == set(temps[0].labels)
    fans = families["hashbay_fan_speed_rpm"].samples
    assert len(fans) == len(agent.config.fan) and all(s.value > 0 for s in fans)
    chips = families["hashbay_chip_nonces"].samples
    assert {s.name for s in chips} == {"hashbay_chip_nonces_total"}
    assert len({(s.labels["slot"], s.labels["chip"]) for s in chips}) == 3 * 42
    hashing = [
        s
        for s in families["hashbay_slot_state"].samples
        if s.labels["hashbay_slot_state"] == "hashing"
    ]
    assert [s.value for s in hashing] == [1.0, 1.0, 1.0]


async def test_openmetrics_is_served_to_who_asks_and_parses_with_its_parser(
    agent: Agent,
) -> None:
    assert agent.metrics.port is not None
    head, body = await scrape(agent.metrics.port, accept="application/openmetrics-text")
    assert "application/openmetrics-text" in head and body.endswith("# EOF\n")
    families = {f.name: f for f in parse_om(body)}  # type: ignore[no-untyped-call]
    assert families["hashbay_miner"].type == "info"
    assert families["hashbay_miner_power_mode"].type == "stateset"
    assert families["hashbay_slot_power_watts"].unit == "watts"
    assert families["hashbay_pool_shares_accepted"].type == "counter"


async def test_other_paths_and_methods_are_refused(agent: Agent) -> None:
    assert agent.metrics.port is not None
    head, _ = await scrape(agent.metrics.port, path="/secret")
    assert head.startswith("HTTP/1.1 404")
