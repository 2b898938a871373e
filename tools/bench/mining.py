"""Pool mining: nonces verified per second, and the share path from chip reply to submit.

The rig is the simulated one (3 boards x 126 chips) mining on the test pool over loopback.

The share path is timed from the moment the chain driver starts decoding the bytes it
read from the UART to the moment the submit line has been written to the socket; both
happen inside one read callback, so the figure is an upper bound that also covers the
other replies of the same read. Time the bytes spend in the kernel's buffers before the
loop reads them is not included (it is the event loop's latency, measured elsewhere).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable
from contextlib import AsyncExitStack

from hashbay.agent.daemon.config import default_config_path, load_config
from hashbay.agent.hardware.rig import envelope_from
from hashbay.agent.mining.pool_settings import PoolSettings
from hashbay.agent.mining.pool_work import PoolWork
from hashbay.agent.mining.pools import PoolManager
from hashbay.agent.mining.stratum_protocol import target_of
from hashbay.agent.mining.stratum_settings import StratumSettings
from hashbay.agent.mining.stratum_work import share_hash
from hashbay.drivers.bm13xx.chain import DEFAULT_VERSION_MASK, Bm13xxChain, open_serial
from hashbay.drivers.bm13xx.frames import NonceReply
from hashbay.drivers.slot_pins import SlotPins
from hashbay.tools.bench import Figure, percentile
from hashbay.tools.bench.sim import FREQ_MHZ, TICKET_DIFFICULTY, power_slot
from hashbay.tools.pool import TestPool
from hashbay.tools.sim.rig import SimRig

VERIFY_NONCES = 100_000
HASHING_S = 20.0
JOB_PERIOD_S = 5.0
CLEAN_EVERY = 2  # every second job is a new block (clean_jobs)


async def until(check: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the test pool did not get there in time")
        await asyncio.sleep(0.01)


async def verification_rates(pool: TestPool, manager: PoolManager, work: PoolWork) -> list[float]:
    """SHA256d checks per second: the function alone, then through the work source."""
    rng = random.Random(1)
    job = work.next_job(0, 1)
    target = target_of(pool.difficulty)
    nonces = [rng.getrandbits(32) for _ in range(VERIFY_NONCES)]
    started = time.perf_counter()
    for nonce in nonces:
        _ = share_hash(job, job.version, nonce) <= target
    alone = VERIFY_NONCES / (time.perf_counter() - started)

    difficulty = pool.difficulty
    pool.set_difficulty(1e15)  # nothing meets it: every nonce is checked, none is sent
    await until(lambda: manager.status()[0].difficulty == 1e15)
    replies = [NonceReply(n, 0, 0, 0, 1, rng.getrandbits(16), 0) for n in nonces]
    checked = work.counters.below_target
    started = time.perf_counter()
    for reply in replies:
        work.on_nonce(0, 0, reply, DEFAULT_VERSION_MASK)
    through = VERIFY_NONCES / (time.perf_counter() - started)
    assert work.counters.below_target - checked == VERIFY_NONCES
    pool.set_difficulty(difficulty)
    return [alone, through]


async def share_path(rig: SimRig, pool: TestPool, work: PoolWork) -> tuple[list[float], float]:
    """Mine for HASHING_S; the share path of every submitted share, and shares per second."""
    config = rig.config
    envelope = envelope_from(config)
    pins = [
        SlotPins(s.presence_pin, s.power_pin, s.reset_pin, s.led_pin, rig.pin_factory)
        for s in config.slot
    ]
    ports = [open_serial(path) for path in rig.uart_paths]
    paths: list[float] = []
    try:
        await asyncio.gather(*(power_slot(rig, i, p, envelope) for i, p in enumerate(pins)))
        await asyncio.sleep(0.3)
        chains: list[TimedChain] = []
        for slot, port in enumerate(ports):

            def found(chip: int, reply: NonceReply, slot: int = slot) -> None:
                work.on_nonce(slot, chip, reply, chains[slot].version_mask)  # as slots.py does

            chain = TimedChain(
                port, slot=slot, envelope=envelope, check_zero_bits=8, on_nonce=found
            )
            chain.timing(work, paths)
            chains.append(chain)
        async with AsyncExitStack() as stack:
            for chain in chains:
                await stack.enter_async_context(chain.attached())
            await asyncio.gather(*(chain.enumerate() for chain in chains))
            for chain in chains:
                chain.set_version_mask(work.version_mask)
                chain.set_ticket_difficulty(TICKET_DIFFICULTY)
            await asyncio.gather(
                *(c.ramp_frequency(FREQ_MHZ, step_mhz=25, step_delay_s=0.02) for c in chains)
            )
            accepted = pool.accepted
            started = time.monotonic()
            number = 0
            while (elapsed := time.monotonic() - started) < HASHING_S:
                if elapsed >= number * JOB_PERIOD_S:
                    number += 1
                    if number > 1:
                        pool.new_job(clean=number % CLEAN_EVERY == 0)
                        await asyncio.sleep(0.05)  # the notify reaches the agent's side
                    for slot, chain in enumerate(chains):
                        chain.send_job(work.next_job(slot, number % 16))
                await asyncio.sleep(min(0.2, HASHING_S - elapsed))
            rate = (pool.accepted - accepted) / (time.monotonic() - started)
        return paths, rate
    finally:
        for port in ports:
            port.close()
        for slot_pins in pins:
            slot_pins.close()


class TimedChain(Bm13xxChain):
    """The driver, timing each read from the UART up to the submits it caused."""

    def timing(self, work: PoolWork, paths: list[float]) -> None:
        self._work = work
        self._paths = paths

    def feed(self, data: bytes) -> None:
        before = self._work.counters.submitted
        started = time.perf_counter()
        super().feed(data)
        sent = self._work.counters.submitted - before
        if sent:
            self._paths.extend([time.perf_counter() - started] * sent)


async def measure(rig: SimRig) -> list[Figure]:
    settings = StratumSettings(backoff_min_s=0.05)
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(TestPool())
        work = PoolWork()
        manager = PoolManager((PoolSettings(url=pool.url, user="bench.rig"),), settings, work)
        task = asyncio.create_task(manager.run())
        try:
            await until(lambda: manager.active is not None)
            alone, through = await verification_rates(pool, manager, work)
            paths, rate = await share_path(rig, pool, work)
        finally:
            task.cancel()
            await asyncio.wait({task}, timeout=5)
    counters = manager.status()[0].counters  # the agent's own count, by the pool's reason
    sent_stale = counters.stale - work.counters.stale
    return [
        Figure("share_check_alone", alone, "nonces/s", ">= 100000"),
        Figure("share_check_through_work_source", through, "nonces/s", ">= 50000"),
        Figure("shares_accepted", rate, "shares/s"),
        Figure("share_path_p50", percentile(paths, 0.5) * 1e3, "ms"),
        Figure("share_path_p99", percentile(paths, 0.99) * 1e3, "ms", "< 5 ms"),
        Figure("shares_rejected", counters.rejected, "shares", "0"),
        *(
            Figure(f"shares_rejected[{reason}]", count, "shares")
            for reason, count in sorted(counters.reasons.items())
        ),
        # Stale: found for work a new block had replaced. Most are caught before sending;
        # those sent before the news arrived are refused by the pool and counted here too.
        Figure("shares_stale_unsent", work.counters.stale, "shares"),
        Figure("shares_stale_sent", sent_stale, "shares", "rare"),
        Figure("shares_stale_sent_share", sent_stale / max(1, counters.accepted), "of accepted"),
    ]


def run() -> list[Figure]:
    config = load_config(default_config_path())
    config = dataclasses.replace(config, sim=dataclasses.replace(config.sim, control_socket=False))
    rig = SimRig(config)
    rig.start()
    try:
        return asyncio.run(measure(rig))
    finally:
        rig.stop()
