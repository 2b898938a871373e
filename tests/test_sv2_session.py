"""A Stratum V2 session against the real V2 test pool on loopback: the encrypted handshake,
the certificate check, one extended channel, jobs, batched acknowledgements, refusals
and a pool that misbehaves in every scripted way."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, cast

import pytest
from coincurve import PrivateKey
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from hashbay.agent.mining.pool_settings import Endpoint
from hashbay.agent.mining.pool_work import PoolWork, Share
from hashbay.agent.mining.stratum_client import (
    PoolCounters,
    PoolError,
    PoolProtocolError,
    ReconnectRequested,
)
from hashbay.agent.mining.stratum_settings import StratumSettings
from hashbay.agent.mining.stratum_work import chip_job, coinbase
from hashbay.agent.mining.sv2 import messages as m
from hashbay.agent.mining.sv2.noise import xonly_of
from hashbay.agent.mining.sv2.session import GENERAL_PURPOSE_BITS, PoolRefused, Sv2Session
from hashbay.drivers.bm13xx.frames import NonceReply
from hashbay.tools.pool import HOST, solve
from hashbay.tools.pool_sv2 import Sv2Misbehaviour, Sv2TestPool

from .test_sv2_frames import MESSAGES

FAST = StratumSettings(connect_timeout_s=5, response_timeout_s=5, silence_timeout_s=30)


async def until(check: Callable[[], object], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        await asyncio.sleep(0.01)


class Session:
    """A V2 session running in the background, as the pool manager runs it."""

    def __init__(self, pool: Sv2TestPool, settings: StratumSettings, **kwargs: Any) -> None:
        self.counters = PoolCounters()
        self.work: list[bool] = []
        authority = kwargs.pop("authority", xonly_of(pool.authority))
        self.session = Sv2Session(
            Endpoint(HOST, pool.port, tls=False),
            authority_key=authority,
            user="acct.rig1",
            settings=settings,
            counters=self.counters,
            on_work=lambda session, clean: self.work.append(clean),
            **kwargs,
        )
        self.task = asyncio.create_task(self.session.run())

    async def ready(self) -> Sv2Session:
        await until(lambda: self.session.ready or self.task.done())
        if self.task.done():
            self.task.result()
        return self.session

    async def ended(self) -> BaseException | None:
        await asyncio.wait({self.task}, timeout=10)
        assert self.task.done()
        return self.task.exception()

    def share(self, *, version_bits: int | None = 0x2000, extranonce: int = 1) -> Share:
        """A share that meets the channel's target (solved here; cheap at sim difficulty)."""
        template = self.session.template
        assert template is not None
        en = extranonce.to_bytes(template.extranonce2_size, "big")
        job = chip_job(template.notify, template.extranonce1, en, 0)
        version = job.version | (version_bits or 0)
        nonce = solve(job, self.session.target, version)
        return Share(template.notify.job_id, en, job.ntime, nonce, version_bits, 1e-6, 0, 0)


@asynccontextmanager
async def session(
    pool: Sv2TestPool, settings: StratumSettings = FAST, **kwargs: Any
) -> AsyncIterator[Session]:
    running = Session(pool, settings, **kwargs)
    try:
        yield running
    finally:
        running.session.stop()
        await asyncio.wait({running.task}, timeout=5)


async def test_the_handshake_authenticates_the_pool_and_opens_an_extended_channel() -> None:
    async with Sv2TestPool() as pool, session(pool, hashrate=lambda: 95e12) as s:
        live = await s.ready()
        assert live.server_key == pool.static.xonly
        assert pool.setup_flags == [m.REQUIRES_VERSION_ROLLING]
        assert pool.users() == {"acct.rig1"}
        assert pool.hashrates == [pytest.approx(95e12, rel=1e-6)]
        template = live.template
        assert template is not None
        assert template.version_mask == GENERAL_PURPOSE_BITS
        assert template.extranonce2_size == pool.extranonce_size
        assert template.extranonce1 == (1).to_bytes(4, "big")  # the channel's prefix
        assert template.notify.job_id == str(pool.current.job_id)
        assert template.notify.prev_hash == pool.current.prev_hash
        assert live.difficulty == pytest.approx(pool.difficulty)
        assert s.counters.connects == 1
        assert s.work == [True]


async def test_the_coinbase_is_prefix_extranonce_prefix_extranonce_suffix() -> None:
    async with Sv2TestPool() as pool, session(pool) as s:
        live = await s.ready()
        template = live.template
        assert template is not None
        built = coinbase(template.notify, template.extranonce1, b"\xaa" * 4)
        job = pool.current
        assert built == job.prefix + (1).to_bytes(4, "big") + b"\xaa" * 4 + job.suffix


async def test_valid_shares_are_acknowledged_in_batches_and_counted_one_by_one() -> None:
    async with Sv2TestPool(ack_every=3, ack_interval_s=30) as pool, session(pool) as s:
        live = await s.ready()
        for extranonce in range(1, 7):
            assert live.submit(s.share(extranonce=extranonce))
        await until(lambda: s.counters.accepted == 6)
        assert pool.accepted == 6
        assert pool.acknowledgements == 2  # two batches of three
        assert s.counters.accepted_difficulty == pytest.approx(6e-6)
        assert s.counters.last_share_at is not None


async def test_a_partial_batch_is_acknowledged_after_the_pools_interval() -> None:
    async with Sv2TestPool(ack_every=100, ack_interval_s=0.1) as pool, session(pool) as s:
        live = await s.ready()
        assert live.submit(s.share())
        await until(lambda: s.counters.accepted == 1)
        assert pool.acknowledgements == 1


async def test_bad_shares_are_rejected_at_once_with_the_pools_reason() -> None:
    async with Sv2TestPool(ack_every=100, ack_interval_s=30) as pool, session(pool) as s:
        live = await s.ready()
        good = s.share()
        assert live.submit(good)
        assert live.submit(good)  # duplicate
        assert live.submit(replace(s.share(extranonce=2), nonce=0))  # most likely too weak
        await until(lambda: s.counters.rejected >= 1)
        assert "duplicate-share" in s.counters.reasons
        assert s.counters.accepted == 0  # the good one waits for its batch


async def test_a_new_block_makes_a_clean_template_and_the_old_job_stale() -> None:
    async with Sv2TestPool() as pool, session(pool) as s:
        live = await s.ready()
        old = live.template
        assert old is not None
        pool.new_job(clean=True)
        await until(lambda: len(s.work) == 2)
        assert s.work == [True, True]
        assert live.template is not None
        assert live.template.notify.prev_hash != old.notify.prev_hash
        share = replace(s.share(), job_id=old.notify.job_id)
        assert not live.submit(share)  # the session knows the job is gone: never sent


async def test_a_job_for_the_current_block_is_not_clean() -> None:
    async with Sv2TestPool() as pool, session(pool) as s:
        live = await s.ready()
        job = pool.new_job(clean=False)
        await until(lambda: len(s.work) == 2)
        assert s.work == [True, False]
        assert live.template is not None
        assert live.template.notify.job_id == str(job.job_id)


async def test_a_new_extranonce_prefix_applies_to_the_jobs_after_it() -> None:
    async with Sv2TestPool() as pool, session(pool) as s:
        live = await s.ready()
        pool.set_extranonce_prefix(b"\x0a\x0b")
        await asyncio.sleep(0.1)
        assert live.template is not None
        assert live.template.extranonce1 == (1).to_bytes(4, "big")  # the job before it
        pool.new_job(clean=False)
        await until(lambda: len(s.work) == 2)
        assert live.template.extranonce1 == b"\x0a\x0b"
        assert live.submit(s.share())
        await until(lambda: s.counters.accepted == 1)  # the pool rebuilt the same coinbase


async def test_a_prefix_that_leaves_no_room_for_the_extranonce_is_a_protocol_error() -> None:
    async with Sv2TestPool() as pool, session(pool) as s:
        await s.ready()
        pool.set_extranonce_prefix(bytes(30))  # 30 + 4 > 32
        error = await s.ended()
        assert isinstance(error, PoolProtocolError)
        assert "no room" in str(error)


async def test_set_target_changes_the_difficulty_shares_are_judged_by() -> None:
    async with Sv2TestPool() as pool, session(pool) as s:
        live = await s.ready()
        pool.set_difficulty(2.0**-20)
        await until(lambda: live.difficulty == pytest.approx(2.0**-20))


async def test_the_nominal_hashrate_is_updated_when_it_moves() -> None:
    rate = [50e12]
    async with (
        Sv2TestPool() as pool,
        session(pool, hashrate=lambda: rate[0], hashrate_check_s=0.05) as s,
    ):
        await s.ready()
        rate[0] = 51e12  # within a tenth: not worth a message
        await asyncio.sleep(0.3)
        assert pool.hashrates == [pytest.approx(50e12, rel=1e-6)]
        rate[0] = 80e12
        await until(lambda: len(pool.hashrates) == 2)
        assert pool.hashrates[1] == pytest.approx(80e12, rel=1e-6)


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        (Sv2Misbehaviour.WRONG_KEY, "not signed by the authority key in the pool URL"),
        (Sv2Misbehaviour.BAD_CERTIFICATE, "not signed by the authority key in the pool URL"),
        (Sv2Misbehaviour.EXPIRED_CERTIFICATE, "certificate expired at"),
    ],
)
async def test_a_pool_that_fails_authentication_is_refused_before_any_mining_message(
    mode: Sv2Misbehaviour, reason: str
) -> None:
    async with Sv2TestPool() as pool:
        pool.misbehave(mode)
        async with session(pool) as s:
            error = await s.ended()
        assert isinstance(error, PoolRefused)
        assert str(error).startswith("pool refused: ")
        assert reason in str(error)
        assert pool.setup_flags == []  # nothing past the handshake was sent
        assert pool.users() == set()


async def test_a_url_with_another_pools_key_is_refused() -> None:
    async with Sv2TestPool() as pool:
        async with session(pool, authority=xonly_of(PrivateKey())) as s:
            error = await s.ended()
        assert isinstance(error, PoolRefused)
        assert pool.setup_flags == []


async def test_a_certificate_is_judged_by_the_wall_clock() -> None:
    async with Sv2TestPool() as pool:
        async with session(pool, wall_clock=lambda: time.time() + 2 * 86400) as s:
            error = await s.ended()
        assert isinstance(error, PoolRefused)
        assert "check this system's clock" in str(error)


async def test_a_v1_pool_at_a_v2_url_fails_without_speaking_v1() -> None:
    from hashbay.tools.pool import TestPool

    async with TestPool() as v1:
        fake = Sv2TestPool()
        fake.port = v1.port
        async with session(fake, settings=replace(FAST, response_timeout_s=0.5)) as s:
            error = await s.ended()
        assert isinstance(error, PoolError)
        assert "handshake" in str(error)
        assert v1.users() == set()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (Sv2Misbehaviour.GARBAGE, "failed authentication"),
        (Sv2Misbehaviour.OVERSIZE, "over the 262144-byte limit"),
    ],
)
async def test_hostile_frames_end_the_session_as_a_counted_protocol_error(
    mode: Sv2Misbehaviour, expected: str
) -> None:
    async with Sv2TestPool() as pool, session(pool) as s:
        await s.ready()
        pool.misbehave(mode)
        error = await s.ended()
        assert isinstance(error, PoolProtocolError)
        assert expected in str(error)
        assert s.counters.protocol_errors == 1


async def test_reject_all_counts_every_share_rejected_with_the_reason() -> None:
    async with Sv2TestPool() as pool, session(pool) as s:
        live = await s.ready()
        pool.misbehave(Sv2Misbehaviour.REJECT_ALL)
        for extranonce in range(1, 4):
            live.submit(s.share(extranonce=extranonce))
        await until(lambda: s.counters.rejected == 3)
        assert s.counters.reasons == {"rejected-by-test-pool": 3}
        assert s.counters.accepted == 0


async def test_reconnect_asks_the_manager_to_come_back_to_the_same_pool() -> None:
    async with Sv2TestPool() as pool, session(pool) as s:
        await s.ready()
        pool.misbehave(Sv2Misbehaviour.RECONNECT)
        error = await s.ended()
        assert isinstance(error, ReconnectRequested)
        assert error.request.host is None
        assert error.request.port is None


async def test_a_pool_refusing_version_rolling_fails_in_the_configure_stage() -> None:
    async with Sv2TestPool() as pool:
        pool.misbehave(Sv2Misbehaviour.NO_VERSION_ROLLING)
        async with session(pool) as s:
            error = await s.ended()
        assert isinstance(error, PoolError)
        assert not isinstance(error, PoolProtocolError)
        assert s.session.stage == "configure"  # the manager retries without version rolling
        async with session(pool, configure=False) as retry:
            live = await retry.ready()
        assert pool.setup_flags == [m.REQUIRES_VERSION_ROLLING, 0]
        assert live.version_mask == GENERAL_PURPOSE_BITS  # the jobs still allow rolling


async def test_a_refused_channel_fails_with_the_pools_reason() -> None:
    async with Sv2TestPool() as pool:
        pool.misbehave(Sv2Misbehaviour.REFUSE_CHANNEL)
        async with session(pool) as s:
            error = await s.ended()
        assert isinstance(error, PoolError)
        assert "refused a channel: unknown-user" in str(error)


async def test_shares_a_silent_pool_never_acknowledges_count_as_unanswered() -> None:
    settings = replace(FAST, silence_timeout_s=0.5)
    async with Sv2TestPool() as pool, session(pool, settings) as s:
        live = await s.ready()
        pool.misbehave(Sv2Misbehaviour.SILENT)
        live.submit(s.share())
        error = await s.ended()
        assert isinstance(error, PoolError)
        assert s.counters.unanswered == 1


async def test_stop_ends_a_healthy_session_without_an_error() -> None:
    async with Sv2TestPool() as pool, session(pool) as s:
        await s.ready()
        s.session.stop()
        assert await s.ended() is None


async def test_the_work_source_mines_real_shares_through_the_encrypted_channel() -> None:
    """Chip nonces from the work source's jobs become shares the pool verifies."""
    work = PoolWork()
    async with Sv2TestPool() as pool:
        manager_work: list[bool] = []
        running = Session(pool, FAST)

        def on_work(session: Sv2Session, clean: bool) -> None:  # as the pool manager wires it
            work.use(session.template, clean=clean)
            manager_work.append(clean)

        running.session._on_work = on_work
        try:
            await running.ready()
            await until(lambda: manager_work)
            template = running.session.template
            assert template is not None
            for slot in range(3):
                job = work.next_job(slot, 1)
                nonce = solve(job, running.session.target)
                work.on_nonce(slot, 0, NonceReply(nonce, 0, 0, 0, 1, 0, 0), GENERAL_PURPOSE_BITS)
            await until(lambda: pool.accepted == 3)
            assert work.counters.submitted == 3
            assert {r.job_id for r in pool.results} == {template.notify.job_id}
            await until(lambda: running.counters.accepted == 3)
        finally:
            running.session.stop()
            await asyncio.wait({running.task}, timeout=5)


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.lists(MESSAGES, max_size=12))
def test_any_sequence_of_pool_messages_ends_in_a_pool_error_at_worst(
    sequence: list[m.Message],
) -> None:
    """Well-formed but hostile or out-of-order messages never raise anything but PoolError."""
    counters = PoolCounters()
    live = Sv2Session(
        Endpoint(HOST, 1, tls=False),
        authority_key=bytes(32),
        user="acct.rig1",
        settings=FAST,
        counters=counters,
    )
    live.ready = True
    live._channel_id, live._extranonce_size = 1, 4  # as after OpenExtendedMiningChannel
    for sent in sequence:
        # on our channel, so it is acted on
        message = replace(cast(Any, sent), channel_id=1) if hasattr(sent, "channel_id") else sent
        try:
            live._handle(message)
        except PoolError:
            return
        template = live.template
        if template is not None:
            assert len(template.extranonce1) + template.extranonce2_size <= 32
            assert live.target > 0
