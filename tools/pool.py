"""A real Stratum V1 pool on loopback: issues jobs, validates shares, misbehaves on request.

Used by the tests, the mining benchmark and `tools/run demo`. It builds real coinbase
transactions and merkle branches, grants version rolling, and checks every share the
way a pool must: job still valid, extranonce2 size, ntime range, version bits inside the
granted mask, not a duplicate, and SHA256d of the rebuilt header within the target.
Rejections carry the usual Stratum error codes and reasons.

The simulated chips report nonces with `sim.ticket_zero_bits` (8) leading zero bits
instead of the 40 a real chip at ticket difficulty 256 would deliver: real hashing
would cost far too much CPU. The pool difficulty that matches is therefore below 1:
difficulty 2^(zero_bits - 32) = 2^-24 has a target of 0xFFFF << 232, which all but one
in 65536 simulated nonces meet. Real pools ask for thousands or millions, real chips
deliver it; the arithmetic is the same. `python -m hashbay.tools.pool --port 0` runs one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import itertools
import os
import random
import signal
import ssl
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hashbay.agent.mining import stratum_protocol as sp
from hashbay.agent.mining.stratum_work import chip_job, share_hash
from hashbay.drivers.bm13xx.frames import Job

HOST = "127.0.0.1"
SIM_ZERO_BITS = 8
SIM_DIFFICULTY = 2.0 ** (SIM_ZERO_BITS - 32)
DEFAULT_MASK = 0x1FFF_E000
NTIME_SLACK_S = 7200  # how far past the job's ntime a share may be (Bitcoin allows 2 h)
MAX_LINE_BYTES = 16 * 1024
HUGE_LINE_BYTES = 2 * 1024 * 1024

E_OTHER, E_STALE, E_DUPLICATE, E_LOW_DIFFICULTY, E_UNAUTHORIZED = 20, 21, 22, 23, 24


class Misbehaviour(enum.StrEnum):
    GARBAGE = "garbage"  # one line that is not JSON
    HUGE_LINE = "huge-line"  # one line far over any sane limit
    WRONG_TYPES = "wrong-types"  # a mining.notify whose fields have the wrong types
    DISCONNECT = "disconnect"  # drop every connection, mid-job
    RECONNECT = "reconnect"  # client.reconnect to this same pool
    SILENT = "silent"  # from now on: answer nothing, send nothing
    REFUSE_AUTH = "refuse-auth"  # from now on: refuse every worker
    NO_CONFIGURE = "no-configure"  # from now on: mining.configure is an unknown method
    HANG_UP_ON_CONFIGURE = "hang-up-on-configure"  # from now on: configure drops the line
    REJECT_ALL = "reject-all"  # from now on: every share is rejected
    RECONNECT_LOOP = "reconnect-loop"  # from now on: client.reconnect right after each login


@dataclass(frozen=True)
class PoolJob:
    job_id: str
    prev_hash: bytes  # header order
    coinb1: bytes
    coinb2: bytes
    branches: tuple[bytes, ...]
    version: int
    nbits: int
    ntime: int

    def notify(self, clean: bool) -> sp.Notify:
        return sp.Notify(
            self.job_id,
            self.prev_hash,
            self.coinb1,
            self.coinb2,
            self.branches,
            self.version,
            self.nbits,
            self.ntime,
            clean,
        )

    def params(self, clean: bool) -> list[Any]:
        return [
            self.job_id,
            sp.swap_words(self.prev_hash).hex(),
            self.coinb1.hex(),
            self.coinb2.hex(),
            [b.hex() for b in self.branches],
            f"{self.version:08x}",
            f"{self.nbits:08x}",
            f"{self.ntime:08x}",
            clean,
        ]


@dataclass(frozen=True)
class ShareResult:
    connection: int
    user: str
    job_id: str
    accepted: bool
    reason: str
    difficulty: float


@dataclass
class _Connection:
    number: int
    writer: asyncio.StreamWriter
    extranonce1: bytes
    version_mask: int = 0
    difficulty: float = 1.0
    users: set[str] = field(default_factory=set)
    barrier: str | None = None
    retired_seen: frozenset[str] = frozenset()
    seen: set[tuple[Any, ...]] = field(default_factory=set)

    def send(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(sp.encode(message))


class TestPool:
    """One pool server; `async with TestPool() as pool`, or start()/stop() (restartable on
    the same port, which is how a pool outage and its return are simulated)."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        *,
        host: str = HOST,
        port: int = 0,
        difficulty: float = SIM_DIFFICULTY,
        extranonce2_size: int = 4,
        version_mask: int = DEFAULT_MASK,
        branches: int = 4,
        ssl_context: ssl.SSLContext | None = None,
        job_interval_s: float | None = None,
        seed: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.difficulty = difficulty
        self.extranonce2_size = extranonce2_size
        self.version_mask = version_mask
        self._branches = branches
        self._ssl = ssl_context
        self._job_interval_s = job_interval_s
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._connections: dict[int, _Connection] = {}
        self._serving: set[asyncio.Task[Any]] = set()
        self._numbers = itertools.count(1)
        self._job_numbers = itertools.count(1)
        self._jobs: dict[str, PoolJob] = {}
        self._retired: set[str] = set()
        self._prev_hash = self._rng.randbytes(32)
        self._height = 800_000
        self._ticker: asyncio.Task[None] | None = None
        self.current: PoolJob = self._make_job()
        self._jobs[self.current.job_id] = self.current
        self.modes: set[Misbehaviour] = set()
        self.results: deque[ShareResult] = deque(maxlen=200_000)
        self.reasons: Counter[str] = Counter()
        self.accepted = 0
        self.rejected = 0
        self.late_stale = 0  # shares for retired jobs sent after the client saw the retirement
        self.connections_made = 0
        self.on_share: Callable[[ShareResult], None] = lambda result: None

    # -- life ------------------------------------------------------------------------------

    async def __aenter__(self) -> TestPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, ssl=self._ssl, limit=MAX_LINE_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self._job_interval_s:
            self._ticker = asyncio.create_task(self._tick(self._job_interval_s))

    async def stop(self) -> None:
        """Stop listening and drop every connection (the pool "dies")."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._server is not None:
            self._server.close()
            self._drop_all()
            await self._server.wait_closed()
            self._server = None
        if self._serving:  # Python 3.11's wait_closed does not wait for the handlers
            await asyncio.wait(self._serving, timeout=5)

    @property
    def url(self) -> str:
        scheme = "stratum+ssl" if self._ssl else "stratum+tcp"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def clients(self) -> int:
        return len(self._connections)

    def users(self) -> set[str]:
        return {u for c in self._connections.values() for u in c.users}

    # -- what tests do -------------------------------------------------------------------

    def new_job(self, *, clean: bool = True) -> PoolJob:
        """Issue a job to everyone; clean retires every earlier one (a new block)."""
        if clean:
            self._prev_hash = self._rng.randbytes(32)
            self._height += 1
            self._retired.update(self._jobs)
            self._jobs.clear()
            for connection in self._connections.values():
                connection.seen.clear()
        job = self._make_job()
        self.current = job
        self._jobs[job.job_id] = job
        for connection in self._connections.values():
            if connection.users:
                self._notify(connection, clean)
        return job

    def new_job_with_barrier(self) -> PoolJob:
        """A clean job, then a request each client answers in order: a share for a retired
        job that arrives after that answer was sent after the client knew it was stale."""
        job = self.new_job(clean=True)
        for connection in self._connections.values():
            connection.barrier = f"barrier-{job.job_id}"
            connection.send(
                {"id": connection.barrier, "method": "client.get_version", "params": []}
            )
        return job

    def set_difficulty(self, difficulty: float) -> None:
        self.difficulty = difficulty
        for connection in self._connections.values():
            connection.difficulty = difficulty
            if connection.users:
                connection.send(
                    {"id": None, "method": "mining.set_difficulty", "params": [difficulty]}
                )

    def misbehave(self, kind: Misbehaviour) -> None:
        """Do one bad thing now, or (silent, refuse-auth, reject-all, reconnect-loop, the
        configure ones) from now on."""
        if kind in _MODES:
            self.modes.add(kind)
            return
        for connection in list(self._connections.values()):
            writer = connection.writer
            if kind is Misbehaviour.GARBAGE:
                writer.write(b'{"id": null, "method": "mining.notify", "params": [oops\n')
            elif kind is Misbehaviour.HUGE_LINE:
                writer.write(b'{"padding": "' + b"x" * HUGE_LINE_BYTES + b'"}\n')
            elif kind is Misbehaviour.WRONG_TYPES:
                bad: list[Any] = [7, None, 1.5, [], {"a": 1}, True, 20000000, "1d00ffff", "clean"]
                connection.send({"id": None, "method": "mining.notify", "params": bad})
            elif kind is Misbehaviour.RECONNECT:
                connection.send(
                    {"id": None, "method": "client.reconnect", "params": [self.host, self.port, 0]}
                )
            elif kind is Misbehaviour.DISCONNECT:
                writer.transport.abort()

    def behave(self) -> None:
        self.modes.clear()

    def accepted_for(self, job_id: str) -> int:
        return sum(r.accepted for r in self.results if r.job_id == job_id)

    # -- serving -------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = next(self._numbers)
        self.connections_made += 1
        connection = _Connection(number, writer, number.to_bytes(4, "big"))
        connection.difficulty = self.difficulty
        self._connections[number] = connection
        task = asyncio.current_task()
        if task is not None:
            self._serving.add(task)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, OSError):
                    return
                if not line.endswith(b"\n"):
                    return
                if Misbehaviour.SILENT in self.modes or not line.strip():
                    continue
                self._handle(connection, line)
        finally:
            self._connections.pop(number, None)
            if task is not None:
                self._serving.discard(task)
            writer.transport.abort()

    def _handle(self, connection: _Connection, line: bytes) -> None:
        try:
            message = sp.decode_line(line)
        except sp.StratumProtocolError as exc:
            connection.send({"id": None, "result": None, "error": [E_OTHER, str(exc), None]})
            return
        if isinstance(message, sp.Response):
            if message.id is not None and message.id == connection.barrier:
                connection.retired_seen = frozenset(self._retired)
            return
        method, params, message_id = message.method, message.params, message.id

        def answer(result: Any, error: Any = None) -> None:
            connection.send({"id": message_id, "result": result, "error": error})

        if method == "mining.configure":
            if Misbehaviour.HANG_UP_ON_CONFIGURE in self.modes:
                connection.writer.transport.abort()  # as some old pools do with unknown methods
                return
            if Misbehaviour.NO_CONFIGURE in self.modes:
                answer(None, [E_OTHER, "unknown method mining.configure", None])
                return
            connection.version_mask = self._granted_mask(params)
            answer(
                {"version-rolling": True, "version-rolling.mask": f"{connection.version_mask:08x}"}
            )
        elif method == "mining.subscribe":
            subscriptions = [["mining.set_difficulty", "1"], ["mining.notify", "1"]]
            answer([subscriptions, connection.extranonce1.hex(), self.extranonce2_size])
        elif method == "mining.authorize":
            self._authorize(connection, params, answer)
        elif method == "mining.submit":
            self._judge(connection, params, answer)
        elif method in ("mining.extranonce.subscribe", "mining.suggest_difficulty"):
            answer(True)
        elif message_id is not None:
            answer(None, [E_OTHER, f"unknown method {method}", None])

    def _authorize(
        self, connection: _Connection, params: list[Any], answer: Callable[..., None]
    ) -> None:
        user = params[0] if params and isinstance(params[0], str) else ""
        if Misbehaviour.REFUSE_AUTH in self.modes or not user:
            answer(False, [E_UNAUTHORIZED, "unauthorized worker", None])
            return
        connection.users.add(user)
        answer(True)
        connection.send(
            {"id": None, "method": "mining.set_difficulty", "params": [connection.difficulty]}
        )
        self._notify(connection, clean=True)
        if Misbehaviour.RECONNECT_LOOP in self.modes:
            connection.send(
                {"id": None, "method": "client.reconnect", "params": [self.host, self.port, 0]}
            )

    def _judge(
        self, connection: _Connection, params: list[Any], answer: Callable[..., None]
    ) -> None:
        result = self._submit(connection, params)
        if Misbehaviour.REJECT_ALL in self.modes and result.accepted:
            result = replace(result, accepted=False, reason="rejected by the pool (test)")
        self.results.append(result)
        if result.accepted:
            self.accepted += 1
            answer(True)
        else:
            self.rejected += 1
            self.reasons[result.reason] += 1
            answer(None, [_CODES.get(result.reason, E_OTHER), result.reason, None])
        self.on_share(result)

    def _granted_mask(self, params: list[Any]) -> int:
        options = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
        asked = options.get("version-rolling.mask", "ffffffff")
        try:
            wanted = int(asked, 16) if isinstance(asked, str) and len(asked) <= 8 else 0
        except ValueError:
            wanted = 0
        return wanted & self.version_mask

    def _submit(self, connection: _Connection, params: list[Any]) -> ShareResult:
        def verdict(reason: str, job_id: str = "", difficulty: float = 0.0) -> ShareResult:
            user = params[0] if params and isinstance(params[0], str) else ""
            return ShareResult(connection.number, user, job_id, not reason, reason, difficulty)

        if not 5 <= len(params) <= 6 or not all(isinstance(p, str) for p in params):
            return verdict("malformed submit")
        user, job_id, en2_hex, ntime_hex, nonce_hex = params[:5]
        if user not in connection.users:
            return verdict("unauthorized worker", job_id)
        job = self._jobs.get(job_id)
        if job is None:
            if job_id in connection.retired_seen:
                self.late_stale += 1
            return verdict("job not found (stale)", job_id)
        try:
            extranonce2 = bytes.fromhex(en2_hex)
            ntime, nonce = int(ntime_hex, 16), int(nonce_hex, 16)
            bits = int(params[5], 16) if len(params) == 6 else None
        except ValueError:
            return verdict("malformed submit", job_id)
        if len(extranonce2) != self.extranonce2_size:
            return verdict("incorrect size of extranonce2", job_id)
        if len(ntime_hex) != 8 or not job.ntime <= ntime <= job.ntime + NTIME_SLACK_S:
            return verdict("ntime out of range", job_id)
        if len(nonce_hex) != 8:
            return verdict("malformed submit", job_id)
        mask = connection.version_mask
        if bits is not None and bits & ~mask:
            return verdict("version bits outside the granted mask", job_id)
        version = job.version if bits is None else (job.version & ~mask) | bits
        key = (job_id, connection.extranonce1, extranonce2, ntime, nonce, version)
        if key in connection.seen:
            return verdict("duplicate share", job_id)
        connection.seen.add(key)
        header_job = replace(self._chip_job(job, connection, extranonce2), ntime=ntime)
        value = share_hash(header_job, version, nonce)
        difficulty = sp.difficulty_of(value)
        if value > sp.target_of(connection.difficulty):
            return verdict("low difficulty share", job_id, difficulty)
        return verdict("", job_id, difficulty)

    def _chip_job(self, job: PoolJob, connection: _Connection, extranonce2: bytes) -> Job:
        return chip_job(job.notify(False), connection.extranonce1, extranonce2, 0)

    def _notify(self, connection: _Connection, clean: bool) -> None:
        if Misbehaviour.SILENT not in self.modes:
            params = self.current.params(clean)
            connection.send({"id": None, "method": "mining.notify", "params": params})

    def _drop_all(self) -> None:
        for connection in list(self._connections.values()):
            connection.writer.transport.abort()

    async def _tick(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.new_job(clean=False)

    # -- jobs ------------------------------------------------------------------------------

    def _make_job(self) -> PoolJob:
        """A job with a real coinbase (height, tag, room for the extranonces, one output)."""
        tag = b"/hashbay test pool/"
        height = bytes((3,)) + self._height.to_bytes(3, "little")
        script_len = len(height) + len(tag) + 4 + self.extranonce2_size
        coinb1 = (
            (1).to_bytes(4, "little")
            + b"\x01"
            + bytes(32)
            + b"\xff\xff\xff\xff"
            + bytes((script_len,))
            + height
            + tag
        )
        coinb2 = (
            b"\xff\xff\xff\xff"
            + b"\x01"
            + (312_500_000).to_bytes(8, "little")
            + b"\x01\x51"  # OP_TRUE: anyone can spend, fine for a test pool
            + bytes(4)
        )
        return PoolJob(
            job_id=f"{next(self._job_numbers):x}",
            prev_hash=self._prev_hash,
            coinb1=coinb1,
            coinb2=coinb2,
            branches=tuple(self._rng.randbytes(32) for _ in range(self._branches)),
            version=0x2000_0000,
            nbits=0x1703_0ECD,
            ntime=int(time.time()),
        )


_MODES = {
    Misbehaviour.SILENT,
    Misbehaviour.REFUSE_AUTH,
    Misbehaviour.NO_CONFIGURE,
    Misbehaviour.HANG_UP_ON_CONFIGURE,
    Misbehaviour.REJECT_ALL,
    Misbehaviour.RECONNECT_LOOP,
}
_CODES = {
    "job not found (stale)": E_STALE,
    "duplicate share": E_DUPLICATE,
    "low difficulty share": E_LOW_DIFFICULTY,
    "unauthorized worker": E_UNAUTHORIZED,
}


def solve(job: Job, target: int, version: int | None = None, start: int = 0) -> int:
    """The first nonce from `start` whose header meets target (cheap at sim difficulty)."""
    for nonce in range(start, start + (1 << 32)):
        if share_hash(job, job.version if version is None else version, nonce) <= target:
            return nonce
    raise ValueError("no nonce meets the target")


# -- command line ----------------------------------------------------------------------


def _write_ready(path: Path, url: str) -> None:
    """Atomically, so a script polling for the file never reads half a URL."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(url + "\n")
    os.replace(tmp, path)


async def _main(args: argparse.Namespace) -> None:
    pool = TestPool(
        host=args.host,
        port=args.port,
        difficulty=args.difficulty,
        extranonce2_size=args.extranonce2_size,
        job_interval_s=args.job_interval_s or None,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await pool.start()
    if args.ready_file:
        _write_ready(Path(args.ready_file), pool.url)
    print(f"listening on {pool.url}", flush=True)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.report_s):
                    await stop.wait()
            reasons = ", ".join(f"{r}: {n}" for r, n in pool.reasons.most_common(3))
            print(
                f"clients {pool.clients}  accepted {pool.accepted}  rejected {pool.rejected}"
                + (f" ({reasons})" if reasons else ""),
                flush=True,
            )
    finally:
        await pool.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hashbay.tools.pool",
        description="A Stratum V1 test pool: real jobs, real share checks, on loopback.",
    )
    parser.add_argument("--host", default=HOST, help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free one)")
    parser.add_argument(
        "--difficulty",
        type=float,
        default=SIM_DIFFICULTY,
        help=f"share difficulty (default {SIM_DIFFICULTY:.3g}, matching the simulated chips)",
    )
    parser.add_argument("--extranonce2-size", type=int, default=4, choices=range(1, 9))
    parser.add_argument(
        "--job-interval-s", type=float, default=30.0, help="new job this often (0: never)"
    )
    parser.add_argument("--report-s", type=float, default=10.0, help="print counts this often")
    parser.add_argument("--ready-file", help="write the pool's URL here once listening")
    args = parser.parse_args(argv)
    if not args.difficulty > 0:
        parser.error("--difficulty must be positive")
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
