"""Stratum V2 against V1: handshake time, shares per second, CPU and bytes on the wire per share.

The pools run in their own processes (tools/pool.py and tools/pool_sv2.py, no periodic
jobs), so the CPU figures are the miner's side alone: the session encoding, encrypting,
sending a share and counting its acknowledgement, plus the event loop around it. Shares
are solved before the clock starts. Bytes are counted by a relay between miner and pool
(both directions, TCP payload, acknowledgements included) in a separate run, so the relay
costs nothing in the CPU figures. The V2 pool acknowledges in batches of ten, as the
specification's illustration does; a run with one acknowledgement per share shows the
other end of that choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from hashbay.agent.daemon.logsetup import configure_logging
from hashbay.agent.mining.pool_session import PoolSession
from hashbay.agent.mining.pool_settings import Endpoint, authority_key, parse_url
from hashbay.agent.mining.pool_work import Share
from hashbay.agent.mining.stratum_client import PoolCounters, StratumSession
from hashbay.agent.mining.stratum_protocol import difficulty_of
from hashbay.agent.mining.stratum_settings import StratumSettings
from hashbay.agent.mining.stratum_work import chip_job, share_hash
from hashbay.agent.mining.sv2.noise import (
    ACT2_BYTES,
    Initiator,
    Responder,
    sign_certificate,
    xonly_of,
)
from hashbay.agent.mining.sv2.session import Sv2Session
from hashbay.tools.bench import Figure, percentile
from hashbay.tools.pool import HOST

SHARES = 3000
BYTES_SHARES = 1000
HANDSHAKES = 50
WINDOW = 200  # shares in flight at most
SETTINGS = StratumSettings(connect_timeout_s=10, response_timeout_s=10, silence_timeout_s=120)
USER = "acct.rig1"


@contextlib.contextmanager
def pool_process(module: str, *args: str) -> Iterator[str]:
    """A test pool in its own process; yields its URL."""
    with tempfile.TemporaryDirectory() as folder:
        ready = Path(folder) / "url"
        command = [sys.executable, "-m", module, "--job-interval-s", "0", "--report-s", "3600"]
        command += ["--ready-file", str(ready), *args]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while not ready.exists():
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{module} did not start")
                time.sleep(0.05)
            yield ready.read_text().strip()
        finally:
            process.terminate()
            process.wait(10)


class Relay:
    """Forwards one TCP connection to the pool and counts the bytes both ways."""

    def __init__(self, target: Endpoint) -> None:
        self.target = target
        self.bytes = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.target.host, self.target.port)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                self.bytes += len(data)
                sink.write(data)
                await sink.drain()
            sink.close()

        with contextlib.suppress(OSError):
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


def open_session(url: str, endpoint: Endpoint, counters: PoolCounters) -> PoolSession:
    key = authority_key(url)
    if key is None:
        return StratumSession(
            endpoint,
            user=USER,
            password="x",  # noqa: S106 - pools ignore it
            settings=SETTINGS,
            counters=counters,
        )
    return Sv2Session(endpoint, authority_key=key, user=USER, settings=SETTINGS, counters=counters)


def solved_shares(session: PoolSession, target: int, count: int) -> list[Share]:
    """Distinct shares that meet the target (most nonces do at simulator difficulty)."""
    template = session.template
    assert template is not None
    shares: list[Share] = []
    extranonce = 0
    while len(shares) < count:
        extranonce += 1
        en = extranonce.to_bytes(template.extranonce2_size, "big")
        job = chip_job(template.notify, template.extranonce1, en, 0)
        version = job.version | 0x2000
        for nonce in range(16):
            value = share_hash(job, version, nonce)
            if value <= target:
                difficulty = difficulty_of(value)
                job_id = template.notify.job_id
                shares.append(Share(job_id, en, job.ntime, nonce, 0x2000, difficulty, 0, 0))
                break
    return shares


async def until(check: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the pool did not answer in time")
        await asyncio.sleep(0.001)


async def submit_all(session: PoolSession, shares: list[Share], counters: PoolCounters) -> float:
    """Send every share, at most WINDOW unanswered; seconds until the last is accepted."""
    submit = session.submit
    started = time.perf_counter()
    for sent, share in enumerate(shares, 1):
        if not submit(share):
            raise RuntimeError("the session refused a share")
        if sent % 50 == 0:
            floor = sent - WINDOW
            await until(lambda: counters.accepted + counters.rejected >= floor)  # noqa: B023
    await until(lambda: counters.accepted + counters.rejected >= len(shares))
    elapsed = time.perf_counter() - started
    if counters.rejected:
        raise RuntimeError(f"the pool rejected shares: {counters.reasons}")
    return elapsed


async def run_shares(url: str, count: int, *, relay: bool) -> tuple[float, float, int]:
    """(seconds, CPU seconds, bytes on the wire) for `count` shares through one session."""
    endpoint = parse_url(url)
    forward = Relay(endpoint) if relay else None
    if forward is not None:
        await forward.start()
        endpoint = Endpoint(HOST, forward.port, False)
    counters = PoolCounters()
    session = open_session(url, endpoint, counters)
    task = asyncio.create_task(session.run())
    try:
        await until(lambda: session.ready or task.done())
        if task.done():
            task.result()
        shares = solved_shares(session, session.target, count)
        before = forward.bytes if forward else 0
        cpu = time.process_time()
        elapsed = await submit_all(session, shares, counters)
        cpu = time.process_time() - cpu
        await asyncio.sleep(0.6)  # a partial batch's acknowledgement
        wire = (forward.bytes - before) if forward else 0
        return elapsed, cpu, wire
    finally:
        session.stop()
        await asyncio.wait({task}, timeout=5)
        if forward is not None:
            await forward.stop()


async def handshake_round_trips(url: str) -> list[float]:
    """Seconds from connecting to an authenticated session, over loopback."""
    endpoint = parse_url(url)
    key = authority_key(url)
    assert key is not None
    times = []
    for _ in range(HANDSHAKES):
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
        initiator = Initiator(key)
        writer.write(initiator.act1())
        initiator.act2(await reader.readexactly(ACT2_BYTES), now=time.time())
        times.append(time.perf_counter() - started)
        writer.close()
    return times


def handshake_cpu() -> float:
    """The miner's CPU seconds per handshake: its ephemeral key, act 1, act 2, certificate."""
    from coincurve import PrivateKey

    from hashbay.agent.mining.sv2.ellswift import EllSwiftKey

    authority = PrivateKey()
    static = EllSwiftKey()
    now = int(time.time())
    certificate = sign_certificate(
        authority, static.xonly, valid_from=now - 60, not_valid_after=now + 3600
    )
    answers = []
    initiators = []
    for _ in range(HANDSHAKES):
        initiator = Initiator(xonly_of(authority))
        answers.append(Responder(static, certificate).act2(initiator.act1())[0])
        initiators.append(initiator)
    started = time.process_time()
    for _ in range(HANDSHAKES):
        Initiator(xonly_of(authority)).act1()  # the key generation and encoding
    for initiator, answer in zip(initiators, answers, strict=True):
        initiator.act2(answer, now=now)
    return (time.process_time() - started) / HANDSHAKES


async def measure() -> list[Figure]:
    figures = [Figure("sv2_handshake_miner_cpu", handshake_cpu() * 1e3, "ms")]
    with pool_process("hashbay.tools.pool_sv2", "--ack-every", "10") as v2_url:
        trips = await handshake_round_trips(v2_url)
        figures.append(Figure("sv2_handshake_loopback_median", percentile(trips, 0.5) * 1e3, "ms"))
        v2_time, v2_cpu, _ = await run_shares(v2_url, SHARES, relay=False)
        _, _, v2_bytes = await run_shares(v2_url, BYTES_SHARES, relay=True)
    with pool_process("hashbay.tools.pool_sv2", "--ack-every", "1") as v2_single:
        _, _, v2_single_bytes = await run_shares(v2_single, BYTES_SHARES, relay=True)
    with pool_process("hashbay.tools.pool") as v1_url:
        v1_time, v1_cpu, _ = await run_shares(v1_url, SHARES, relay=False)
        _, _, v1_bytes = await run_shares(v1_url, BYTES_SHARES, relay=True)
    figures += [
        Figure("sv2_shares_through_encrypted_channel", SHARES / v2_time, "shares/s"),
        Figure("v1_shares_same_run", SHARES / v1_time, "shares/s"),
        Figure("sv2_miner_cpu_per_share", v2_cpu / SHARES * 1e6, "us"),
        Figure("v1_miner_cpu_per_share", v1_cpu / SHARES * 1e6, "us"),
        Figure("sv2_vs_v1_cpu_per_share", v2_cpu / v1_cpu, "x"),
        Figure("sv2_wire_bytes_per_share_acks_of_10", v2_bytes / BYTES_SHARES, "B"),
        Figure("sv2_wire_bytes_per_share_ack_each", v2_single_bytes / BYTES_SHARES, "B"),
        Figure("v1_wire_bytes_per_share", v1_bytes / BYTES_SHARES, "B"),
        Figure("v1_vs_sv2_wire_bytes_per_share", v1_bytes / max(v2_bytes, 1), "x"),
    ]
    return figures


def run() -> list[Figure]:
    with open(os.devnull, "w") as quiet:
        configure_logging("warning", stream=quiet, fmt="json")
        return asyncio.run(measure())
