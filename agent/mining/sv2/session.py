"""One Stratum V2 connection to one pool: handshake, one extended channel, jobs in, shares out.

The same life and interface as the V1 `StratumSession`, so the pool manager treats both
alike (failover, failback, idle, status): `run()` returns when stopped and raises
PoolError when the connection fails; `submit()` sends a share at once.

On connecting it runs the Noise handshake and checks the pool's certificate against
the authority key from the URL; a certificate that is expired, not yet valid or signed
by another key refuses the pool (`PoolRefused`, with the reason) before a single
mining message is sent. Every later byte is encrypted; nothing falls back to plaintext.
Then SetupConnection (asking for version rolling unless stratum.version_rolling is off
or the pool refused it last time), one extended channel for the whole rig, and work:
NewExtendedMiningJob + SetNewPrevHash become the same job template a V1 `mining.notify`
does (coinbase prefix + extranonce prefix + extranonce + suffix), so the work source
splits the channel's extranonce per chain exactly as it splits V1's extranonce2.
Shares are acknowledged in batches (SubmitShares.Success covers every share up to a
sequence number), so a share counts as unanswered only after stratum.silence_timeout_s.
The miner's nominal hashrate goes to the pool when the channel opens and, through
UpdateChannel, whenever it moves by more than a tenth.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from hashbay import __version__
from hashbay.agent.core.quoting import quote
from hashbay.agent.mining import stratum_protocol as sp
from hashbay.agent.mining.pool_judge import UNANSWERED, PoolJudge
from hashbay.agent.mining.pool_settings import Endpoint
from hashbay.agent.mining.pool_work import Share, Template
from hashbay.agent.mining.stratum_client import (
    MAX_PENDING_SHARES,
    MAX_WRITE_BACKLOG_BYTES,
    PoolCounters,
    PoolError,
    PoolProtocolError,
    PoolUnproductive,
    ReconnectRequested,
)
from hashbay.agent.mining.stratum_settings import StratumSettings
from hashbay.agent.mining.sv2 import messages as m
from hashbay.agent.mining.sv2.framing import FrameDecoder, encrypt_frame
from hashbay.agent.mining.sv2.noise import (
    ACT2_BYTES,
    CertificateError,
    Initiator,
    NoiseError,
    Transport,
)
from hashbay.drivers.errors import ProtocolError
from hashbay.drivers.numbers import finite_in

log = structlog.get_logger("hashbay.stratum")

VENDOR = "hashbay"
FIRMWARE = f"hashbay/{__version__}"
MAX_FRAME_PAYLOAD = 256 * 1024  # a job with a full merkle path and 64 KiB coinbase parts fits
MIN_EXTRANONCE_SIZE = 4  # bytes the rig rolls itself: 2^32 chain jobs per pool job
MAX_JOBS = 64  # jobs kept per channel (future ones included)
GENERAL_PURPOSE_BITS = 0x1FFF_E000  # BIP 320: the version bits a miner may roll
MAX_TARGET = (1 << 256) - 1
HASHRATE_CHECK_S = 30.0
HASHRATE_CHANGE = 0.1  # UpdateChannel when the nominal rate moved by more than this share


_MINER_MESSAGES = (
    m.SetupConnection,
    m.OpenExtendedMiningChannel,
    m.UpdateChannel,
    m.SubmitSharesExtended,
)


class PoolRefused(PoolError):
    """The pool failed authentication (certificate); the message says why."""


@dataclass(frozen=True, slots=True)
class _Job:
    message: m.NewExtendedMiningJob
    extranonce_prefix: bytes  # in force when the job arrived


@dataclass(frozen=True, slots=True)
class _Sent:
    share: Share
    at: float


class Sv2Session:
    """One encrypted connection's life; `run()` returns when stopped, raises PoolError."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        authority_key: bytes,
        user: str,
        password: str = "",
        settings: StratumSettings,
        counters: PoolCounters,
        on_ready: Callable[[Sv2Session], None] = lambda session: None,
        on_work: Callable[[Sv2Session, bool], None] = lambda session, clean: None,
        ssl_context: ssl.SSLContext | None = None,
        configure: bool = True,
        name: str = "",
        hashrate: Callable[[], float] = lambda: 0.0,
        hashrate_check_s: float = HASHRATE_CHECK_S,
        wall_clock: Callable[[], float] = time.time,
        judge: PoolJudge | None = None,
    ) -> None:
        """Takes what a V1 session takes, so the pool manager opens both alike; a V2 pool
        has no password (the channel's user identity is the worker) and no TLS (Noise
        encrypts and authenticates instead): those two are ignored."""
        del password, ssl_context
        self.endpoint = endpoint
        self._authority = authority_key
        self._user = user
        self._settings = settings
        self.counters = counters
        self._on_ready = on_ready
        self._on_work = on_work
        self._rolling = configure and settings.version_rolling
        self._hashrate = hashrate
        self._judge = judge or PoolJudge(settings.judge)
        self._hashrate_check_s = hashrate_check_s
        self._wall_clock = wall_clock
        self._log = log.bind(pool=name or endpoint.address, protocol="sv2")
        self._writer: asyncio.StreamWriter | None = None
        self._transport: Transport | None = None
        self._stopping = False
        self._sequence = itertools.count()
        self._sent: dict[int, _Sent] = {}
        self._reply: asyncio.Future[m.Message] | None = None
        self._work_event = asyncio.Event()
        self._fixed_version = False
        self._channel_id: int | None = None
        self._group_id: int | None = None
        self._extranonce_size = 0
        self._extranonce_prefix = b""
        self._jobs: dict[int, _Job] = {}
        self._prev: m.SetNewPrevHash | None = None
        self._active: _Job | None = None
        self._accepted_once = False
        self._announced_hashrate = 0.0
        self.stage = "connecting"  # connecting, handshake, configure, setup, channel, ...
        self.ready = False
        self.version_mask = 0
        self.target = sp.target_of(1.0)
        self.difficulty = 1.0
        self.template: Template | None = None
        self.server_key = b""  # the pool's static key (x-only), once authenticated
        self.bytes_out = 0
        self.bytes_in = 0

    # -- the ShareSink side, for the work source ---------------------------------------

    def submit(self, share: Share) -> bool:
        """Send a share now; False when this session can no longer take it."""
        writer = self._writer
        if not self.ready or writer is None or writer.is_closing() or self._channel_id is None:
            return False
        if writer.transport.get_write_buffer_size() > MAX_WRITE_BACKLOG_BYTES:
            self._abort("the pool is not reading what we send")
            return False
        try:
            job_id = int(share.job_id)
        except ValueError:
            return False
        job = self._jobs.get(job_id)
        if job is None:
            return False  # replaced since the chips got it; the work source counts it stale
        version = job.message.version
        if share.version_bits is not None:
            rolled = share.version_bits & GENERAL_PURPOSE_BITS
            version = (version & ~GENERAL_PURPOSE_BITS) | rolled
        if len(self._sent) >= MAX_PENDING_SHARES:
            del self._sent[next(iter(self._sent))]
            self.counters.unanswered += 1
        sequence = next(self._sequence) & 0xFFFF_FFFF
        now = time.monotonic()
        self._sent[sequence] = _Sent(share, now)
        self._judge.sent(now)
        self._send(
            m.SubmitSharesExtended(
                channel_id=self._channel_id,
                sequence_number=sequence,
                job_id=job_id,
                nonce=share.nonce,
                ntime=share.ntime,
                version=version,
                extranonce=share.extranonce2,
            )
        )
        return True

    def stale(self) -> None:
        self.counters.stale += 1

    # -- life ----------------------------------------------------------------------------

    def stop(self) -> None:
        """End the session on purpose (the pool is no longer needed); run() then returns."""
        self._stopping = True
        if self._writer is not None:
            self._writer.transport.abort()

    async def run(self) -> None:
        settings = self._settings
        endpoint = self.endpoint
        try:
            async with asyncio.timeout(settings.connect_timeout_s):
                reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
        except TimeoutError:
            raise PoolError(
                f"no connection to {endpoint.address} within {settings.connect_timeout_s:g} s"
            ) from None
        except OSError as exc:
            raise PoolError(f"cannot connect to {endpoint.address}: {_why(exc)}") from None
        self._writer = writer
        tasks: list[asyncio.Task[None]] = []
        try:
            if self._stopping:
                return
            decoder = await self._handshake(reader, writer)
            reading = asyncio.create_task(self._read(reader, decoder), name="sv2-read")
            setup = asyncio.create_task(self._setup(), name="sv2-setup")
            tasks = [reading, setup, asyncio.create_task(self._maintain(), name="sv2-maintain")]
            done, _ = await asyncio.wait({reading, setup}, return_when=asyncio.FIRST_COMPLETED)
            if setup in done:
                setup.result()
                await reading
            else:
                reading.result()
        except PoolError:
            if self._stopping:
                return
            raise
        finally:
            self.ready = False
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            writer.transport.abort()
            if self._reply is not None and not self._reply.done():
                self._reply.cancel()
            self.counters.unanswered += len(self._sent)
            self._sent.clear()

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> FrameDecoder:
        """Noise NX and the certificate; the decoder for what the pool sends next."""
        self.stage = "handshake"
        initiator = Initiator(self._authority)
        act1 = initiator.act1()
        writer.write(act1)
        self.bytes_out += len(act1)
        timeout_s = self._settings.response_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                answer = await reader.readexactly(ACT2_BYTES)
        except TimeoutError:
            raise PoolError(f"no handshake answer within {timeout_s:g} s") from None
        except asyncio.IncompleteReadError:
            raise PoolError(
                "the pool closed the connection during the handshake "
                "(not a Stratum V2 pool, or it refused us)"
            ) from None
        except OSError as exc:
            raise PoolError(f"connection lost: {_why(exc)}") from None
        self.bytes_in += len(answer)
        try:
            self._transport = initiator.act2(answer, now=self._wall_clock())
        except CertificateError as exc:
            raise PoolRefused(f"pool refused: {exc}") from None
        except NoiseError as exc:
            self.counters.protocol_errors += 1
            raise PoolProtocolError(f"handshake failed: {exc}") from None
        self.server_key = initiator.server_xonly
        self._log.info(
            "pool authenticated",
            server_key=self.server_key.hex(),
            certificate_expires=initiator.certificate.not_valid_after
            if initiator.certificate
            else None,
        )
        return FrameDecoder(self._transport.receive, max_payload=MAX_FRAME_PAYLOAD)

    async def _setup(self) -> None:
        endpoint = self.endpoint
        self.stage = "configure" if self._rolling else "setup"
        answer = await self._request(
            m.SetupConnection(
                flags=m.REQUIRES_VERSION_ROLLING if self._rolling else 0,
                endpoint_host=endpoint.host,
                endpoint_port=endpoint.port,
                vendor=VENDOR,
                hardware_version="hashbay controller",
                firmware=FIRMWARE,
            ),
            "SetupConnection",
        )
        if isinstance(answer, m.SetupConnectionError):
            if not answer.flags & m.REQUIRES_VERSION_ROLLING:
                self.stage = "setup"  # not about version rolling: retrying without it won't help
            raise PoolError(
                f"pool refused the connection set-up: {answer.error_code or 'no reason'}"
                f" (unsupported flags {answer.flags:#x})"
            )
        if not isinstance(answer, m.SetupConnectionSuccess):  # pragma: no cover - see _handle
            raise PoolProtocolError("unexpected answer to SetupConnection")
        self._fixed_version = bool(answer.flags & m.REQUIRES_FIXED_VERSION)
        self.stage = "channel"
        self._announced_hashrate = self._nominal_hashrate()
        answer = await self._request(
            m.OpenExtendedMiningChannel(
                request_id=1,
                user_identity=self._user,
                nominal_hash_rate=self._announced_hashrate,
                max_target=MAX_TARGET,
                min_extranonce_size=MIN_EXTRANONCE_SIZE,
            ),
            "OpenExtendedMiningChannel",
        )
        if isinstance(answer, m.OpenMiningChannelError):
            raise PoolError(
                f"worker {quote(self._user)} refused a channel: {answer.error_code or 'no reason'}"
            )
        self.stage = "waiting for work"
        try:
            async with asyncio.timeout(self._settings.response_timeout_s):
                await self._work_event.wait()
        except TimeoutError:
            raise PoolError("the pool sent no job after opening the channel") from None
        self.stage = "ready"
        self.ready = True
        self.counters.connects += 1
        self._log.info(
            "pool connected",
            channel=self._channel_id,
            extranonce_size=self._extranonce_size,
            version_mask=f"{self.version_mask:08x}",
            difficulty=self.difficulty,
        )
        self._on_ready(self)
        self._publish(clean=True)

    def _open_channel(self, answer: m.OpenExtendedMiningChannelSuccess) -> None:
        size = answer.extranonce_size
        prefix = answer.extranonce_prefix
        if not size >= 1 or len(prefix) + size > 32:
            raise PoolProtocolError(
                f"channel extranonce of {len(prefix)} + {size} bytes (must be 1..32 in all)"
            )
        self._set_target(answer.target)
        self._channel_id = answer.channel_id
        self._group_id = answer.group_channel_id
        self._extranonce_size = size
        self._extranonce_prefix = prefix

    async def _request(self, message: m.Message, name: str) -> m.Message:
        """Send a set-up request and wait for its one answer."""
        future: asyncio.Future[m.Message] = asyncio.get_running_loop().create_future()
        self._reply = future
        self._send(message)
        timeout_s = self._settings.response_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise PoolError(f"no answer to {name} within {timeout_s:g} s") from None
        finally:
            self._reply = None

    async def _maintain(self) -> None:
        """Shares the pool never acknowledged, and the nominal hashrate when it moves."""
        wait_s = self._settings.silence_timeout_s
        next_rate = time.monotonic() + self._hashrate_check_s
        while True:
            await asyncio.sleep(min(1.0, self._hashrate_check_s))
            now = time.monotonic()
            while self._sent:
                sequence, sent = next(iter(self._sent.items()))
                if sent.at > now - wait_s:
                    break
                del self._sent[sequence]
                self.counters.unanswered += 1
                self._judged(self._judge.refused(UNANSWERED))
            self._judged(self._judge.idle_verdict(now))
            if now >= next_rate and self.ready and self._channel_id is not None:
                next_rate = now + self._hashrate_check_s
                rate = self._nominal_hashrate()
                before = self._announced_hashrate
                if abs(rate - before) > HASHRATE_CHANGE * max(before, 1.0):
                    self._announced_hashrate = rate
                    self._send(m.UpdateChannel(self._channel_id, rate, MAX_TARGET))
                    self._log.info("nominal hashrate sent", hashrate_hs=rate)

    def _nominal_hashrate(self) -> float:
        try:
            rate = finite_in(self._hashrate(), 0, 1e21)
        except Exception:  # a status read must never take the connection down
            rate = None
        return rate or 0.0

    # -- reading ---------------------------------------------------------------------------

    async def _read(self, reader: asyncio.StreamReader, decoder: FrameDecoder) -> None:
        silence_s = self._settings.silence_timeout_s
        try:
            while True:
                try:
                    async with asyncio.timeout(silence_s):
                        data = await reader.read(65536)
                except TimeoutError:
                    raise PoolError(f"the pool sent nothing for {silence_s:g} s") from None
                except OSError as exc:
                    raise PoolError(f"connection lost: {_why(exc)}") from None
                if not data:
                    raise PoolError("the pool closed the connection")
                self.bytes_in += len(data)
                try:
                    frames = decoder.feed(data)
                    for frame in frames:
                        self._handle(m.decode(frame))
                except ProtocolError as exc:
                    raise PoolProtocolError(str(exc)) from None
        except PoolError as exc:
            if isinstance(exc, PoolProtocolError) and not self._stopping:
                self.counters.protocol_errors += 1
            if self._reply is not None and not self._reply.done():
                self._reply.set_exception(exc)
                self._reply.exception()
            raise

    def _handle(self, message: m.Message) -> None:
        if isinstance(
            message,
            m.SetupConnectionSuccess
            | m.SetupConnectionError
            | m.OpenExtendedMiningChannelSuccess
            | m.OpenMiningChannelError,
        ):
            self._answer(message)
        elif isinstance(message, m.Reconnect):
            request = sp.Reconnect(message.new_host or None, message.new_port or None, 0.0)
            raise ReconnectRequested(request)
        elif isinstance(message, m.Unsupported):
            self._log.debug(
                "ignored a message",
                extension=message.extension_type,
                message_type=message.message_type,
            )
        elif isinstance(message, _MINER_MESSAGES):
            raise PoolProtocolError(f"the pool sent a miner's message ({type(message).__name__})")
        elif self._channel_id is None:
            raise PoolProtocolError(f"{type(message).__name__} before a channel was open")
        else:
            self._channel_message(message)

    def _answer(self, message: m.Message) -> None:
        future = self._reply
        request_id = getattr(message, "request_id", None)
        if future is None or future.done() or request_id not in (None, 1):
            raise PoolProtocolError(f"unexpected {type(message).__name__}")
        if isinstance(message, m.OpenExtendedMiningChannelSuccess):
            self._open_channel(message)  # now: its first job may be in the same read
        future.set_result(message)

    def _channel_message(self, message: m.Message) -> None:
        channel_id = getattr(message, "channel_id", None)
        if channel_id not in (self._channel_id, self._group_id):
            self._log.debug("ignored a message for another channel", channel=channel_id)
            return
        if isinstance(message, m.NewExtendedMiningJob):
            self._job(message)
        elif isinstance(message, m.SetNewPrevHash):
            self._prev_hash(message)
        elif isinstance(message, m.SetTarget):
            self._set_target(message.maximum_target)
            self._log.debug("target set", difficulty=self.difficulty)
        elif isinstance(message, m.SetExtranoncePrefix):
            prefix = message.extranonce_prefix
            if len(prefix) + self._extranonce_size > 32:
                raise PoolProtocolError(
                    f"extranonce prefix of {len(prefix)} bytes leaves no room for "
                    f"{self._extranonce_size} bytes of extranonce"
                )
            self._extranonce_prefix = prefix  # for the jobs that follow
        elif isinstance(message, m.SubmitSharesSuccess):
            self._accepted(message)
        elif isinstance(message, m.SubmitSharesError):
            self._rejected(message)
        elif isinstance(message, m.UpdateChannelError):
            self._log.warning("pool refused the channel update", reason=message.error_code)
        elif isinstance(message, m.CloseChannel):
            raise PoolError(f"pool closed the channel: {message.reason_code or 'no reason'}")

    def _set_target(self, target: int) -> None:
        if target == 0:
            raise PoolProtocolError("a target of 0 (no share could ever meet it)")
        self.target = target
        self.difficulty = sp.DIFF1_TARGET / target

    def _job(self, message: m.NewExtendedMiningJob) -> None:
        job = _Job(message, self._extranonce_prefix)
        self._jobs.pop(message.job_id, None)
        self._jobs[message.job_id] = job
        while len(self._jobs) > MAX_JOBS:
            del self._jobs[next(iter(self._jobs))]
        if message.min_ntime is not None and self._prev is not None:
            self._activate(job, clean=False)

    def _prev_hash(self, message: m.SetNewPrevHash) -> None:
        job = self._jobs.get(message.job_id)
        if job is None:
            raise PoolProtocolError(f"SetNewPrevHash for job {message.job_id}, never sent")
        self._jobs = {message.job_id: job}  # every other job is for the old block
        self._prev = message
        self._activate(job, clean=True)

    def _activate(self, job: _Job, *, clean: bool) -> None:
        rolling = job.message.version_rolling_allowed and not self._fixed_version
        self.version_mask = GENERAL_PURPOSE_BITS if rolling else 0
        self._active = job
        self._work_event.set()
        self._publish(clean=clean)

    def _publish(self, *, clean: bool) -> None:
        job, prev = self._active, self._prev
        if not self.ready or job is None or prev is None:
            return
        message = job.message
        ntime = message.min_ntime if message.min_ntime is not None else prev.min_ntime
        self.template = Template(
            notify=sp.Notify(
                job_id=str(message.job_id),
                prev_hash=prev.prev_hash,
                coinb1=message.coinbase_tx_prefix,
                coinb2=message.coinbase_tx_suffix,
                merkle_branches=message.merkle_path,
                version=message.version,
                nbits=prev.nbits,
                ntime=max(ntime, prev.min_ntime),
                clean=clean,
            ),
            extranonce1=job.extranonce_prefix,
            extranonce2_size=self._extranonce_size,
            version_mask=self.version_mask,
            target=self.target,
            sink=self,
        )
        self._on_work(self, clean)

    def _accepted(self, message: m.SubmitSharesSuccess) -> None:
        counters = self.counters
        last = message.last_sequence_number
        acknowledged = 0
        while self._sent:
            sequence = next(iter(self._sent))
            if sequence > last:
                break
            sent = self._sent.pop(sequence)
            acknowledged += 1
            counters.accepted += 1
            counters.accepted_difficulty += sent.share.difficulty
            counters.best_share = max(counters.best_share, sent.share.difficulty)
            counters.last_share_at = time.time()
            self._judge.accepted()
        if acknowledged and not self._accepted_once:
            self._accepted_once = True
            self._log.info("first share accepted", batch=acknowledged)
        if acknowledged != message.new_submits_accepted_count:
            self._log.debug(
                "acknowledgement count differs",
                counted=acknowledged,
                pool_says=message.new_submits_accepted_count,
            )

    def _rejected(self, message: m.SubmitSharesError) -> None:
        sent = self._sent.pop(message.sequence_number, None)
        if sent is None:
            return  # already counted (acknowledged, or given up on)
        reason = message.error_code or "refused without a reason"
        self.counters.rejected_difficulty += sent.share.difficulty
        if self.counters.reject(reason):
            self._log.warning("share rejected", reason=reason, job=sent.share.job_id)
        self._judged(self._judge.refused(reason))

    @staticmethod
    def _judged(verdict: str | None) -> None:
        """A pool judged useless (by what it delivers) is given up like a failed one."""
        if verdict is not None:
            raise PoolUnproductive(verdict)

    # -- writing ---------------------------------------------------------------------------

    def _send(self, message: m.Message) -> None:
        writer, transport = self._writer, self._transport
        if writer is None or transport is None or writer.is_closing():
            return
        data = encrypt_frame(transport.send, message.frame())
        self.bytes_out += len(data)
        writer.write(data)

    def _abort(self, why: str) -> None:
        self._log.warning("dropping the pool connection", why=why)
        if self._writer is not None:
            self._writer.transport.abort()


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
