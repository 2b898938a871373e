"""One Stratum V1 connection to one pool: handshake, jobs in, shares out, results counted.

Line-delimited JSON-RPC over TCP (or TLS). The handshake asks for version rolling
(`mining.configure`, BIP 310), subscribes and authorizes; after it the session keeps a
job template (the latest `mining.notify` with the extranonce, difficulty and version
mask in force) and hands it to whoever owns the session. Shares go out as soon as they
are found (a synchronous write, no queue of our own) and the pool's verdicts are
counted with its reasons.

Anything wrong on the wire (bad JSON, a line over the limit, wrong types, silence,
a closed socket) ends the session with a PoolError saying what happened; deciding what
to do next (back off, fail over) is the pool manager's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from hashbay import __version__
from hashbay.agent.mining import stratum_protocol as sp
from hashbay.agent.mining.pool_judge import UNANSWERED, PoolJudge
from hashbay.agent.mining.pool_settings import Endpoint
from hashbay.agent.mining.pool_work import Share, Template
from hashbay.agent.mining.stratum_settings import StratumSettings
from hashbay.drivers.errors import HashbayError

log = structlog.get_logger("hashbay.stratum")

USER_AGENT = f"hashbay/{__version__}"
MAX_REASONS = 16  # distinct rejection reasons kept per pool; the rest count as "other"
MAX_PENDING_SHARES = 4096
MAX_WRITE_BACKLOG_BYTES = 256 * 1024

A = TypeVar("A")
T = TypeVar("T")


class PoolError(HashbayError):
    """A pool connection failed or ended; the message says why, for the pool's status."""


class PoolProtocolError(PoolError):
    """The pool sent something that is not Stratum V1 (counted as a protocol error)."""


class PoolUnproductive(PoolError):
    """The pool is connected but not delivering: it refuses our shares (the message says
    how), so it is given up like a failed one."""


class ReconnectRequested(PoolError):
    """The pool asked us to reconnect (client.reconnect)."""

    def __init__(self, request: sp.Reconnect) -> None:
        where = f" to {request.host or 'the same host'}:{request.port or 'same port'}"
        super().__init__(f"pool asked to reconnect{where} after {request.wait_s:g} s")
        self.request = request


@dataclass
class PoolCounters:
    """What one pool has done with our shares, over every connection to it."""

    accepted: int = 0
    rejected: int = 0
    # Shares for work the pool had already replaced (a new block): never sent, or sent
    # before the news arrived and refused for it. Not the pool's fault, nor ours.
    stale: int = 0
    unanswered: int = 0
    accepted_difficulty: float = 0.0
    rejected_difficulty: float = 0.0
    best_share: float = 0.0
    last_share_at: float | None = None  # unix time of the last accepted share
    protocol_errors: int = 0
    connects: int = 0
    failures: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> bool:
        """Count a rejection; True when the reason is new (worth a log line)."""
        self.rejected += 1
        if reason not in self.reasons and len(self.reasons) >= MAX_REASONS:
            reason = "other"
        new = reason not in self.reasons
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        return new


@dataclass(frozen=True)
class _Sent:
    share: Share
    at: float
    generation: int  # how many clean jobs the session had seen when it was sent


class StratumSession:
    """One connection's life; `run()` returns when stopped, raises PoolError when it fails."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        user: str,
        password: str,
        settings: StratumSettings,
        counters: PoolCounters,
        on_ready: Callable[[StratumSession], None] = lambda session: None,
        on_work: Callable[[StratumSession, bool], None] = lambda session, clean: None,
        ssl_context: ssl.SSLContext | None = None,
        configure: bool = True,
        name: str = "",
        judge: PoolJudge | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._user = user
        self._password = password
        self._settings = settings
        self.counters = counters
        self._on_ready = on_ready
        self._on_work = on_work
        self._ssl = ssl_context
        self._configure = configure and settings.version_rolling
        self._log = log.bind(pool=name or endpoint.address)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[sp.Response]] = {}
        self._sent: dict[int, _Sent] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._stopping = False
        self._notify: sp.Notify | None = None
        self._extranonce: sp.Subscription | None = None
        self._next_extranonce: sp.Subscription | None = None
        self._work_event = asyncio.Event()
        self._accepted_once = False
        self._judge = judge or PoolJudge(settings.judge)
        self._generation = 0  # clean jobs seen: work from before one is stale
        self.stage = "connecting"  # connecting, configure, subscribe, authorize, ready
        self.ready = False
        self.version_mask = 0
        self.difficulty = 1.0
        self.target = sp.target_of(1.0)
        self.template: Template | None = None

    # -- the ShareSink side, for the work source ---------------------------------------

    def submit(self, share: Share) -> bool:
        """Send a share now; False when this session can no longer take it."""
        writer = self._writer
        if not self.ready or writer is None or writer.is_closing():
            return False
        if writer.transport.get_write_buffer_size() > MAX_WRITE_BACKLOG_BYTES:
            self._abort("the pool is not reading what we send")
            return False
        if len(self._sent) >= MAX_PENDING_SHARES:
            oldest = next(iter(self._sent))
            del self._sent[oldest]
            self.counters.unanswered += 1
        message_id = next(self._ids)
        params = sp.submit_params(
            self._user,
            job_id=share.job_id,
            extranonce2=share.extranonce2,
            ntime=share.ntime,
            nonce=share.nonce,
            version_bits=share.version_bits,
        )
        now = time.monotonic()
        self._sent[message_id] = _Sent(share, now, self._generation)
        writer.write(sp.request(message_id, "mining.submit", params))
        self._judge.sent(now)
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
                reader, writer = await asyncio.open_connection(
                    endpoint.host,
                    endpoint.port,
                    ssl=self._ssl if endpoint.tls else None,
                    server_hostname=endpoint.host if endpoint.tls else None,
                    limit=settings.max_line_bytes,
                )
        except TimeoutError:
            raise PoolError(
                f"no connection to {endpoint.address} within {settings.connect_timeout_s:g} s"
            ) from None
        except OSError as exc:
            raise PoolError(f"cannot connect to {endpoint.address}: {_why(exc)}") from None
        self._writer = writer
        reading = asyncio.create_task(self._read(reader), name=f"stratum-{endpoint.address}")
        handshake = asyncio.create_task(self._handshake())
        expiring = asyncio.create_task(self._expire_shares())
        try:
            if self._stopping:
                return
            waiting = {reading, handshake, expiring}
            while waiting:  # until one of them fails (only the handshake ends well)
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
        except PoolError as exc:
            if self._stopping:
                return
            if isinstance(exc, PoolProtocolError):  # the handshake's replies too
                self.counters.protocol_errors += 1
            raise
        finally:
            self.ready = False
            for task in (reading, handshake, expiring):
                task.cancel()
            for task in (reading, handshake, expiring):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            writer.transport.abort()
            self._fail_pending(PoolError("connection closed"))
            self.counters.unanswered += len(self._sent)
            self._sent.clear()

    async def _handshake(self) -> None:
        if self._configure:
            self.stage = "configure"
            answer = await self._call("mining.configure", sp.configure_params(), required=False)
            if answer is not None and answer.error is None:
                self.version_mask = sp.parse_configure(answer.result)
        self.stage = "subscribe"
        answer = await self._call("mining.subscribe", [USER_AGENT])
        if answer is None or answer.error is not None:
            raise PoolError(f"subscription refused: {answer.error if answer else 'no answer'}")
        self._extranonce = _checked(sp.parse_subscribe, answer.result)
        self.stage = "authorize"
        answer = await self._call("mining.authorize", [self._user, self._password])
        if answer is None or answer.error is not None or answer.result is not True:
            why = answer.error if answer and answer.error else "refused"
            raise PoolError(f"worker {self._user!r} not authorized: {why}")
        self.stage = "waiting for work"
        try:
            async with asyncio.timeout(self._settings.response_timeout_s):
                await self._work_event.wait()
        except TimeoutError:
            raise PoolError("the pool sent no job after authorizing") from None
        self.stage = "ready"
        self.ready = True
        self.counters.connects += 1
        self._log.info(
            "pool connected",
            extranonce2_size=self._extranonce.extranonce2_size,
            version_mask=f"{self.version_mask:08x}",
            difficulty=self.difficulty,
        )
        self._on_ready(self)
        self._publish(clean=True)

    async def _call(
        self, method: str, params: list[Any], *, required: bool = True
    ) -> sp.Response | None:
        """Send a request and wait for its answer; None if an optional one goes unanswered."""
        assert self._writer is not None
        message_id = next(self._ids)
        future: asyncio.Future[sp.Response] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        self._writer.write(sp.request(message_id, method, params))
        try:
            async with asyncio.timeout(self._settings.response_timeout_s):
                return await future
        except TimeoutError:
            if not required:
                self._log.info("pool did not answer; going on without it", request=method)
                return None
            raise PoolError(
                f"no answer to {method} within {self._settings.response_timeout_s:g} s"
            ) from None
        finally:
            self._pending.pop(message_id, None)

    # -- reading ---------------------------------------------------------------------------

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                line = await self._line(reader)
                if line.strip():
                    self._handle(_checked(sp.decode_line, line))
        except PoolError as exc:
            self._fail_pending(exc)
            raise

    async def _line(self, reader: asyncio.StreamReader) -> bytes:
        silence_s = self._settings.silence_timeout_s
        try:
            async with asyncio.timeout(silence_s):
                line = await reader.readline()
        except TimeoutError:
            raise PoolError(f"the pool sent nothing for {silence_s:g} s") from None
        except ValueError:  # the stream's limit: a line longer than max_line_bytes
            raise PoolProtocolError(
                f"the pool sent a line longer than {self._settings.max_line_bytes} bytes"
            ) from None
        except OSError as exc:
            raise PoolError(f"connection lost: {_why(exc)}") from None
        if not line.endswith(b"\n"):
            raise PoolError("the pool closed the connection")
        return line

    def _handle(self, message: sp.Message) -> None:
        if isinstance(message, sp.Response):
            self._answer(message)
            return
        method, params = message.method, message.params
        if method == "mining.notify":
            notify = _checked(sp.parse_notify, params)
            if self._next_extranonce is not None:
                self._extranonce, self._next_extranonce = self._next_extranonce, None
            if notify.clean:
                self._generation += 1
            self._notify = notify
            self._work_event.set()
            self._publish(clean=notify.clean)
        elif method == "mining.set_difficulty":
            self.difficulty = _checked(sp.parse_difficulty, params)
            self.target = sp.target_of(self.difficulty)
            self._log.debug("difficulty set", difficulty=self.difficulty)
        elif method == "mining.set_extranonce":
            # Applies from the next job, as the extension's authors specify.
            self._next_extranonce = _checked(sp.parse_set_extranonce, params)
        elif method == "mining.set_version_mask":
            self.version_mask = _checked(sp.parse_version_mask, params)
            self._publish(clean=True)
        elif method == "client.reconnect":
            raise ReconnectRequested(_checked(sp.parse_reconnect, params))
        elif method == "client.get_version":
            self._reply(message.id, USER_AGENT)
        elif method == "client.show_message":
            text = params[0] if params and isinstance(params[0], str) else ""
            self._log.info("message from the pool", text=text[: sp.MAX_TEXT_CHARS])
        elif message.id is not None:
            self._reply(message.id, None, [20, f"unsupported method {method}", None])
        else:
            self._log.debug("ignored a notification", method=method)

    def _reply(self, message_id: int | str | None, result: Any, error: Any = None) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            return
        if writer.transport.get_write_buffer_size() > MAX_WRITE_BACKLOG_BYTES:
            self._abort("the pool sends requests but does not read our replies")
            return
        writer.write(sp.response(message_id, result, error))

    def _answer(self, answer: sp.Response) -> None:
        message_id = answer.id
        if not isinstance(message_id, int):
            return
        future = self._pending.get(message_id)
        if future is not None:
            if not future.done():
                future.set_result(answer)
            return
        sent = self._sent.pop(message_id, None)
        if sent is None:
            return  # a late answer to a share already counted as unanswered
        counters = self.counters
        if answer.error is None and answer.result is True:
            counters.accepted += 1
            counters.accepted_difficulty += sent.share.difficulty
            counters.best_share = max(counters.best_share, sent.share.difficulty)
            counters.last_share_at = time.time()
            self._judge.accepted()
            if not self._accepted_once:
                self._accepted_once = True
                self._log.info("first share accepted", difficulty=sent.share.difficulty)
            return
        if sent.generation != self._generation:
            # Sent for a job a clean_jobs (a new block) retired before the pool answered:
            # refused for being late, which is neither the pool's fault nor the chips'.
            counters.stale += 1
            return
        reason = answer.error or "refused without a reason"
        counters.rejected_difficulty += sent.share.difficulty
        if counters.reject(reason):
            self._log.warning("share rejected", reason=reason, job=sent.share.job_id)
        verdict = self._judge.refused(reason)
        if verdict is not None:
            raise PoolUnproductive(verdict)

    def _publish(self, *, clean: bool) -> None:
        if not self.ready or self._notify is None or self._extranonce is None:
            return
        self.template = Template(
            notify=self._notify,
            extranonce1=self._extranonce.extranonce1,
            extranonce2_size=self._extranonce.extranonce2_size,
            version_mask=self.version_mask,
            target=self.target,
            sink=self,
        )
        self._on_work(self, clean)

    async def _expire_shares(self) -> None:
        """Shares the pool never answered are counted so; and the pool is judged on them,
        and on how long it has accepted nothing."""
        timeout_s = self._settings.response_timeout_s
        while True:
            await asyncio.sleep(min(1.0, timeout_s / 2))
            now = time.monotonic()
            cutoff = now - timeout_s
            while self._sent:
                message_id, sent = next(iter(self._sent.items()))
                if sent.at > cutoff:
                    break
                del self._sent[message_id]
                self.counters.unanswered += 1
                verdict = self._judge.refused(UNANSWERED)
                if verdict is not None:
                    raise PoolUnproductive(verdict)
            verdict = self._judge.idle_verdict(now)
            if verdict is not None:
                raise PoolUnproductive(verdict)

    def _fail_pending(self, exc: PoolError) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: the awaiting side may already be gone

    def _abort(self, why: str) -> None:
        self._log.warning("dropping the pool connection", why=why)
        if self._writer is not None:
            self._writer.transport.abort()


def _checked(parse: Callable[[A], T], value: A) -> T:
    """Run a protocol parser; its complaint becomes this connection's protocol error."""
    try:
        return parse(value)
    except sp.StratumProtocolError as exc:
        raise PoolProtocolError(str(exc)) from None


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
