"""One Stratum session against the real test pool on loopback: handshake, shares and the
pool's verdicts, and every way a pool can misbehave ending the session with a reason."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hashbay.agent.mining.pool_settings import Endpoint
from hashbay.agent.mining.pool_work import Share
from hashbay.agent.mining.stratum_client import (
    PoolCounters,
    PoolError,
    PoolProtocolError,
    PoolUnproductive,
    ReconnectRequested,
    StratumSession,
)
from hashbay.agent.mining.stratum_settings import StratumSettings
from hashbay.agent.mining.stratum_work import chip_job
from hashbay.tools.broker import make_tls_files
from hashbay.tools.pool import HOST, Misbehaviour, TestPool, solve

FAST = StratumSettings(
    connect_timeout_s=5, response_timeout_s=5, silence_timeout_s=30, max_line_bytes=4096
)


class Session:
    """A session running in the background, as the pool manager would run it."""

    def __init__(self, pool: TestPool, settings: StratumSettings, **kwargs: Any) -> None:
        self.counters = PoolCounters()
        self.work: list[bool] = []
        self.session = StratumSession(
            Endpoint(HOST, pool.port, tls=kwargs.pop("tls", False)),
            user="acct.rig1",
            password="x",  # noqa: S106 - pools ignore it
            settings=settings,
            counters=self.counters,
            on_work=lambda session, clean: self.work.append(clean),
            **kwargs,
        )
        self.task = asyncio.create_task(self.session.run())

    async def ready(self) -> StratumSession:
        await until(lambda: self.session.ready or self.task.done())
        if self.task.done():
            self.task.result()
        return self.session

    async def ended(self) -> BaseException | None:
        await asyncio.wait({self.task}, timeout=10)
        assert self.task.done()
        return self.task.exception()

    def share(self, *, version_bits: int | None = 0x2000, extranonce2: int = 1) -> Share:
        """A share that meets the session's target (solved here; cheap at sim difficulty)."""
        template = self.session.template
        assert template is not None
        en2 = extranonce2.to_bytes(template.extranonce2_size, "big")
        job = chip_job(template.notify, template.extranonce1, en2, 0)
        version = job.version | (version_bits or 0)
        nonce = solve(job, self.session.target, version)
        return Share(template.notify.job_id, en2, job.ntime, nonce, version_bits, 1e-6, 0, 0)


async def until(check: Callable[[], object], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def session(
    pool: TestPool, settings: StratumSettings = FAST, **kwargs: Any
) -> AsyncIterator[Session]:
    running = Session(pool, settings, **kwargs)
    try:
        yield running
    finally:
        running.session.stop()
        await asyncio.wait({running.task}, timeout=5)


async def test_handshake_negotiates_version_rolling_and_delivers_a_template() -> None:
    async with TestPool(extranonce2_size=6) as pool, session(pool) as s:
        live = await s.ready()
        template = live.template
        assert template is not None
        assert template.version_mask == 0x1FFF_E000
        assert template.extranonce2_size == 6
        assert template.notify.job_id == pool.current.job_id
        assert live.difficulty == pool.difficulty
        assert pool.users() == {"acct.rig1"}
        assert s.counters.connects == 1
        assert s.work == [True]


async def test_a_valid_share_is_accepted_and_bad_ones_are_counted_with_the_pools_reason() -> None:
    async with TestPool() as pool, session(pool) as s:
        live = await s.ready()
        good = s.share()
        assert live.submit(good)
        assert live.submit(good)  # the pool sees a duplicate
        assert live.submit(replace(s.share(extranonce2=2), version_bits=0x1))  # outside the mask
        await until(lambda: s.counters.accepted + s.counters.rejected == 3)
        assert s.counters.accepted == 1
        assert s.counters.accepted_difficulty == pytest.approx(1e-6)
        assert s.counters.last_share_at is not None
        assert s.counters.reasons == {
            "duplicate share (22)": 1,
            "version bits outside the granted mask (20)": 1,
        }
        old = pool.current.job_id
        pool.new_job(clean=True)
        await until(lambda: len(s.work) == 2)
        stale = replace(s.share(extranonce2=3), job_id=old)
        live.submit(stale)
        await until(lambda: s.counters.rejected == 3)
        assert "job not found (stale) (21)" in s.counters.reasons
        assert pool.accepted == 1


async def test_a_share_below_the_pools_difficulty_is_rejected_as_low_difficulty() -> None:
    async with TestPool() as pool, session(pool) as s:
        live = await s.ready()
        share = s.share()
        pool.set_difficulty(1e9)
        await until(lambda: live.difficulty == 1e9)
        live.submit(share)
        await until(lambda: s.counters.rejected == 1)
        assert s.counters.reasons == {"low difficulty share (23)": 1}


async def test_a_pool_without_version_rolling_gets_shares_without_version_bits() -> None:
    async with TestPool() as pool:
        pool.misbehave(Misbehaviour.NO_CONFIGURE)
        async with session(pool) as s:
            live = await s.ready()
            assert live.version_mask == 0
            live.submit(s.share(version_bits=None))
            await until(lambda: s.counters.accepted == 1)


async def test_a_refused_worker_fails_the_session_with_the_pools_reason() -> None:
    async with TestPool() as pool:
        pool.misbehave(Misbehaviour.REFUSE_AUTH)
        async with session(pool) as s:
            error = await s.ended()
            assert isinstance(error, PoolError)
            assert "not authorized: unauthorized worker" in str(error)


@pytest.mark.parametrize(
    ("kind", "error_type", "words"),
    [
        (Misbehaviour.GARBAGE, PoolProtocolError, "not JSON"),
        (Misbehaviour.HUGE_LINE, PoolProtocolError, "longer than 4096 bytes"),
        (Misbehaviour.WRONG_TYPES, PoolProtocolError, "bad job id"),
        (Misbehaviour.DISCONNECT, PoolError, "closed the connection"),
        (Misbehaviour.SILENT, PoolError, "sent nothing for 1 s"),
        (Misbehaviour.RECONNECT, ReconnectRequested, "asked to reconnect"),
    ],
)
async def test_a_misbehaving_pool_ends_the_session_with_a_clear_reason(
    kind: Misbehaviour, error_type: type[Exception], words: str
) -> None:
    settings = replace(FAST, silence_timeout_s=1 if kind is Misbehaviour.SILENT else 30)
    async with TestPool() as pool, session(pool, settings) as s:
        await s.ready()
        pool.misbehave(kind)
        error = await s.ended()
        assert type(error) is error_type
        assert words in str(error)
        assert s.counters.protocol_errors == (error_type is PoolProtocolError)


async def test_shares_a_silent_pool_never_answers_are_counted_as_unanswered() -> None:
    settings = replace(FAST, response_timeout_s=0.2, silence_timeout_s=30)
    async with TestPool() as pool, session(pool, settings) as s:
        live = await s.ready()
        pool.misbehave(Misbehaviour.SILENT)
        live.submit(s.share())
        await until(lambda: s.counters.unanswered == 1)
        assert s.counters.accepted == s.counters.rejected == 0


async def test_an_unreachable_pool_is_a_pool_error_naming_the_address() -> None:
    pool = TestPool()
    await pool.start()
    await pool.stop()  # its port is now closed
    async with session(pool) as s:
        error = await s.ended()
        assert isinstance(error, PoolError)
        assert f"cannot connect to {HOST}:{pool.port}" in str(error)


async def test_stop_ends_a_healthy_session_without_an_error() -> None:
    async with TestPool() as pool, session(pool) as s:
        live = await s.ready()
        live.stop()
        assert await s.ended() is None
        assert not live.submit(s.share())


async def test_stratum_over_tls_with_the_pools_ca(tmp_path: Path) -> None:
    try:
        files = make_tls_files(tmp_path / "tls")
    except RuntimeError:
        pytest.skip("openssl is not installed")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(files.cert, files.key)
    client = ssl.create_default_context(cafile=str(files.ca))
    async with TestPool(ssl_context=server) as pool:
        assert pool.url.startswith("stratum+ssl://")
        async with session(pool, ssl_context=client, tls=True) as s:
            live = await s.ready()
            live.submit(s.share())
            await until(lambda: s.counters.accepted == 1)
        untrusting = ssl.create_default_context()  # the system's CAs do not know this pool
        async with session(pool, ssl_context=untrusting, tls=True) as s:
            error = await s.ended()
            assert isinstance(error, PoolError)
            assert "CERTIFICATE_VERIFY_FAILED" in str(error)


@pytest.mark.parametrize("size", [0, 100])
async def test_a_subscribe_reply_with_an_impossible_extranonce2_size_is_a_protocol_error(
    size: int,
) -> None:
    async with TestPool() as pool:
        pool.extranonce2_size = size
        async with session(pool) as s:
            error = await s.ended()
    assert isinstance(error, PoolProtocolError)
    assert "extranonce2 size must be 1..16" in str(error)
    assert s.counters.protocol_errors == 1


async def test_a_share_refused_because_a_new_block_overtook_it_is_stale_not_rejected() -> None:
    async with TestPool() as pool, session(pool) as s:
        live = await s.ready()
        late = s.share()
        pool.new_job(clean=True)  # the new block is on its way to us...
        assert live.submit(late)  # ...as the share for the old one goes out
        await until(lambda: s.counters.stale == 1)
        assert pool.reasons["job not found (stale)"] == 1  # the pool refused it
        assert (s.counters.rejected, s.counters.reasons) == (0, {})
        assert s.session.ready  # and it is nobody's fault


async def test_a_session_refused_every_share_ends_saying_so() -> None:
    settings = replace(FAST, reject_window_shares=4)
    async with TestPool() as pool, session(pool, settings) as s:
        live = await s.ready()
        pool.misbehave(Misbehaviour.REJECT_ALL)
        for n in range(4):
            live.submit(s.share(extranonce2=n + 1))
        error = await s.ended()
    assert isinstance(error, PoolUnproductive)
    assert str(error) == "rejected 4 of the last 4 shares (rejected by the pool (test) (20): 4)"
