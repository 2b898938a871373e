"""A Prometheus / OpenMetrics endpoint: the miner, slots, fans, PSU, pools and the event
spool as series that most farms' monitoring already scrapes.

Built with prometheus_client (its collector and exposition formats), never hand-written
text: names, types, escaping and the OpenMetrics variant are the library's. A scrape reads
the agent's state as it is (the latest rig snapshot, the slots' statuses, the chains'
counters in memory); it never waits for hardware. Per-chip series are optional: 126 chips
a board times a fleet is the operator's cardinality to choose.

Served by a small asyncio HTTP responder (GET only, bounded request, a timeout), so a scrape
runs in the event loop like every other reader and needs no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, exposition
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
)
from prometheus_client.openmetrics import exposition as openmetrics

from hashbay import __version__
from hashbay.agent.core.state import HASHING, AgentState
from hashbay.agent.core.status import SlotState
from hashbay.agent.interfaces.metrics_settings import MetricsSettings
from hashbay.agent.interfaces.miner_api_replies import PoolView
from hashbay.drivers.bm13xx.chain import ChipCounters

log = structlog.get_logger("hashbay.metrics")

MAX_REQUEST_BYTES = 8192
LISTEN_RETRY_S = 30.0


ChipReader = Callable[[], Sequence[tuple[int, Sequence[ChipCounters], Sequence[float]]]]


class AgentCollector:
    """prometheus_client's custom-collector protocol over the agent's state."""

    def __init__(
        self,
        state: AgentState,
        *,
        pools: Callable[[], Sequence[PoolView]] = list,
        chips: ChipReader | None = None,
        mode: Callable[[], str] = lambda: "run",
    ) -> None:
        self._state = state
        self._pools = pools
        self._chips = chips
        self._mode = mode

    def collect(self) -> Iterator[Metric]:
        yield from self._miner()
        yield from self._slots()
        yield from self._fans_and_psu()
        yield from self._pool_series()
        if self._chips is not None:
            yield from self._chip_series(self._chips)

    def _miner(self) -> Iterator[Metric]:
        state = self._state
        info = InfoMetricFamily("hashbay_miner", "The agent and the miner it runs.")
        info.add_metric([], {"version": __version__, "name": state.name})
        yield info
        yield GaugeMetricFamily(
            "hashbay_miner_hashrate_hashes_per_second",
            "Hashrate of every hashing slot (the health model's window).",
            value=state.hashrate_hs(),
        )
        yield GaugeMetricFamily(
            "hashbay_miner_start_time_seconds",
            "When the agent started (unix time).",
            value=state.started_at,
        )
        mode = StateSetMetricFamily(
            "hashbay_miner_power_mode", "The power governor's mode (run, min, sleep)."
        )
        current = self._mode()
        mode.add_metric([], {m: m == current for m in ("run", "min", "sleep")})
        yield mode
        spool = state.extra.get("spool")
        if spool is not None:
            figures = spool()
            yield GaugeMetricFamily(
                "hashbay_spool_pending_events",
                "Events written to the spool and not yet published to MQTT.",
                value=figures["pending"],
            )
            yield CounterMetricFamily(
                "hashbay_spool_dropped_events",
                "Events the spool dropped because it was full.",
                value=figures["dropped"],
            )

    def _slots(self) -> Iterator[Metric]:
        labels = ["slot", "serial"]

        def gauge(name: str, doc: str, unit: str = "") -> GaugeMetricFamily:
            return GaugeMetricFamily(f"hashbay_slot_{name}", doc, labels=labels, unit=unit)

        states = StateSetMetricFamily("hashbay_slot_state", "Each slot's state.", labels=["slot"])
        rate = gauge("hashrate_hashes_per_second", "The slot's hashrate.")
        expected = gauge("expected_hashrate_hashes_per_second", "What its chips should do.")
        health = gauge("health_score", "Health score, 0 to 100.")
        power = gauge("power", "Board power at the rail.", "watts")
        volts = gauge("rail", "Board rail voltage.", "volts")
        freq = gauge("frequency_megahertz", "Mean chip clock.")
        chips = gauge("chips_answering", "Chips that answered the last poll.")
        total = gauge("chips_expected", "Chips the board has.")
        throttle = gauge("throttle_ratio", "Clock scale set by protection (1: none).")
        fault = gauge("fault_code", "The fault code of a faulted or degraded slot, 0 if none.")
        temps = GaugeMetricFamily(
            "hashbay_slot_temperature",
            "Board temperature per sensor.",
            labels=[*labels, "sensor"],
            unit="celsius",
        )
        for status in self._state.slot_statuses():
            slot = str(status.slot)
            states.add_metric([slot], {s.value: s is status.state for s in SlotState})
            if status.serial is None:
                continue
            key = [slot, status.serial]
            hashing = status.state in HASHING and status.health is not None
            rate.add_metric(key, status.health.hashrate_hs if hashing and status.health else 0.0)
            if status.health is not None:
                expected.add_metric(key, status.health.expected_hs)
                health.add_metric(key, status.health.score)
                chips.add_metric(key, status.health.chips_answering)
                total.add_metric(key, status.health.chips_total)
            for value, family in (
                (status.power_w, power),
                (status.board_v, volts),
                (status.freq_mhz, freq),
            ):
                if value is not None:
                    family.add_metric(key, value)
            throttle.add_metric(key, status.throttle)
            fault.add_metric(key, status.fault_code or 0)
            for sensor, reading in enumerate(status.temps_c):
                if reading is not None:
                    temps.add_metric([*key, str(sensor)], reading)
        yield from (states, rate, expected, health, power, volts, freq, chips, total)
        yield from (throttle, fault, temps)

    def _fans_and_psu(self) -> Iterator[Metric]:
        snapshot = self._state.snapshot
        if snapshot is None:
            return
        rpm = GaugeMetricFamily("hashbay_fan_speed_rpm", "Fan speed.", labels=["fan"])
        duty = GaugeMetricFamily("hashbay_fan_duty_ratio", "Fan PWM duty, 0 to 1.", labels=["fan"])
        stalled = GaugeMetricFamily("hashbay_fan_stalled", "1 if the fan stalled.", labels=["fan"])
        for n, fan in enumerate(snapshot.fans):
            rpm.add_metric([str(n)], fan.rpm)
            duty.add_metric([str(n)], fan.duty)
            stalled.add_metric([str(n)], float(fan.stalled))
        yield from (rpm, duty, stalled)
        problems = GaugeMetricFamily(
            "hashbay_psu_problems",
            "Problems the PSU reports now.",
            value=len(snapshot.psu_problems),
        )
        yield problems
        psu = snapshot.psu
        if psu is None:
            return
        for name, doc, unit, value in (
            ("hashbay_psu_input_power", "PSU input power.", "watts", psu.pin_w),
            ("hashbay_psu_output_power", "PSU output power.", "watts", psu.pout_w),
            ("hashbay_psu_input_voltage", "PSU input voltage.", "volts", psu.vin_v),
            ("hashbay_psu_temperature", "PSU temperature.", "celsius", psu.temp_c),
        ):
            yield GaugeMetricFamily(name, doc, value=value, unit=unit)

    def _pool_series(self) -> Iterator[Metric]:
        labels = ["pool", "url"]
        accepted = CounterMetricFamily(
            "hashbay_pool_shares_accepted", "Shares the pool accepted.", labels=labels
        )
        rejected = CounterMetricFamily(
            "hashbay_pool_shares_rejected", "Shares the pool rejected.", labels=labels
        )
        alive = GaugeMetricFamily(
            "hashbay_pool_alive", "1 if the pool is reachable.", labels=labels
        )
        active = GaugeMetricFamily("hashbay_pool_active", "1 if work comes from it.", labels=labels)
        for n, pool in enumerate(self._pools()):
            key = [str(n), pool.url]
            accepted.add_metric(key, pool.accepted)
            rejected.add_metric(key, pool.rejected)
            alive.add_metric(key, float(pool.alive))
            active.add_metric(key, float(pool.stratum_active))
        yield from (accepted, rejected, alive, active)

    @staticmethod
    def _chip_series(read: ChipReader) -> Iterator[Metric]:
        labels = ["slot", "chip"]
        nonces = CounterMetricFamily("hashbay_chip_nonces", "Verified nonces.", labels=labels)
        errors = CounterMetricFamily(
            "hashbay_chip_hardware_errors", "Nonces that did not verify.", labels=labels
        )
        freq = GaugeMetricFamily("hashbay_chip_frequency_megahertz", "Chip clock.", labels=labels)
        for slot, counters, clocks in read():
            for chip, counter in enumerate(counters):
                key = [str(slot), str(chip)]
                nonces.add_metric(key, counter.nonces)
                errors.add_metric(key, counter.hw_errors)
                if chip < len(clocks):
                    freq.add_metric(key, clocks[chip])
        yield from (nonces, errors, freq)


def registry_for(collector: AgentCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The exposition the client asked for: OpenMetrics if it accepts it, else text 0.0.4."""
    if "application/openmetrics-text" in accept:
        body: bytes = openmetrics.generate_latest(registry)  # type: ignore[no-untyped-call]
        return body, openmetrics.CONTENT_TYPE_LATEST
    return exposition.generate_latest(registry), exposition.CONTENT_TYPE_LATEST


class MetricsServer:
    """Serves `/metrics` until cancelled; `port` is the bound port once `ready` is set."""

    def __init__(self, settings: MetricsSettings, collector: AgentCollector) -> None:
        self.settings = settings
        self.registry = registry_for(collector)
        self.port: int | None = None
        self.ready = asyncio.Event()

    async def run(self) -> None:
        settings = self.settings
        while True:
            try:
                server = await asyncio.start_server(
                    self._serve, host=settings.bind, port=settings.port, reuse_address=True
                )
                break
            except OSError as exc:
                log.error("metrics cannot listen; retrying", port=settings.port, error=str(exc))
                await asyncio.sleep(LISTEN_RETRY_S)
        self.port = int(server.sockets[0].getsockname()[1])
        log.info("metrics listening", bind=settings.bind, port=self.port)
        self.ready.set()
        try:
            async with server:
                await server.serve_forever()
        finally:
            self.ready.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                head = await reader.readuntil(b"\r\n\r\n")
            writer.write(self._answer(head))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            pass
        except Exception:
            log.exception("metrics request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _answer(self, head: bytes) -> bytes:
        lines = head[:MAX_REQUEST_BYTES].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
            return _response(405, b"only GET\n", "text/plain")
        if parts[1].split("?")[0] not in ("/metrics", "/"):
            return _response(404, b"see /metrics\n", "text/plain")
        accept = next(
            (h.split(":", 1)[1] for h in lines[1:] if h.lower().startswith("accept:")), ""
        )
        body, content_type = render(self.registry, accept)
        return _response(200, b"" if parts[0] == "HEAD" else body, content_type)


def _response(status: int, body: bytes, content_type: str) -> bytes:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def chip_reader(chains: Callable[[], Sequence[Any]]) -> ChipReader:
    """Per-chip counters of every enumerated chain, from memory."""

    def read() -> list[tuple[int, Sequence[ChipCounters], Sequence[float]]]:
        found: list[tuple[int, Sequence[ChipCounters], Sequence[float]]] = []
        for slot, chain in enumerate(chains()):
            if chain is not None and chain.info is not None:
                found.append((slot, list(chain.counters.chips), list(chain.freq_mhz)))
        return found

    return read
