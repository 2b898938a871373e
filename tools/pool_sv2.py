"""A real Stratum V2 pool on loopback: Noise handshake, extended channels, real share checks.

The V2 sibling of tools/pool.py, used by the tests, `tools/run bench sv2` and `tools/run
demo --sv2`. It holds an authority key (a fresh one unless given), signs a certificate
for its static key, answers the handshake, opens extended channels with an extranonce
prefix per connection, sends future jobs and SetNewPrevHash, and judges every share the
way a pool must: channel, job still valid, extranonce size, ntime range, version bits
outside BIP 320's general-purpose field, duplicates, SHA256d of the rebuilt header
against the channel's target. Acknowledgements are batched (every `ack_every` shares, or
after `ack_interval_s`), errors immediate, as the specification describes.

It misbehaves on request: a certificate with a broken signature, signed by another
authority, or expired; garbage bytes or an oversize frame on the encrypted stream;
every share rejected; Reconnect; silence; set-up or channel refused.
`python -m hashbay.tools.pool_sv2 --port 0` runs one and prints its URL.
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
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from coincurve import PrivateKey

from hashbay.agent.mining import stratum_protocol as sp
from hashbay.agent.mining.stratum_work import chip_job, share_hash
from hashbay.agent.mining.sv2 import messages as m
from hashbay.agent.mining.sv2.ellswift import EllSwiftKey
from hashbay.agent.mining.sv2.framing import (
    CHANNEL_BIT,
    MAX_LENGTH,
    FrameDecoder,
    encode_header,
    encrypt_frame,
)
from hashbay.agent.mining.sv2.keys import SCHEME, encode_authority_key
from hashbay.agent.mining.sv2.noise import (
    ACT1_BYTES,
    Certificate,
    Responder,
    Transport,
    sign_certificate,
    xonly_of,
)
from hashbay.drivers.errors import ProtocolError
from hashbay.tools.pool import HOST, NTIME_SLACK_S, SIM_DIFFICULTY, ShareResult

GENERAL_PURPOSE_BITS = 0x1FFF_E000
MAX_PAYLOAD = 64 * 1024  # what a miner sends is small
HANDSHAKE_TIMEOUT_S = 10.0


class Sv2Misbehaviour(enum.StrEnum):
    BAD_CERTIFICATE = "bad-certificate"  # from now on: the signature does not verify
    WRONG_KEY = "wrong-key"  # from now on: certificates signed by another authority
    EXPIRED_CERTIFICATE = "expired-certificate"  # from now on: validity ended an hour ago
    GARBAGE = "garbage"  # bytes that are no encrypted frame
    OVERSIZE = "oversize"  # a frame header announcing 16 MiB
    REJECT_ALL = "reject-all"  # from now on: every share refused
    RECONNECT = "reconnect"  # Reconnect to this same pool
    DISCONNECT = "disconnect"  # drop every connection
    SILENT = "silent"  # from now on: answer nothing, send nothing
    NO_VERSION_ROLLING = "no-version-rolling"  # from now on: refuse REQUIRES_VERSION_ROLLING
    REFUSE_CHANNEL = "refuse-channel"  # from now on: refuse every channel


_MODES = {
    Sv2Misbehaviour.BAD_CERTIFICATE,
    Sv2Misbehaviour.WRONG_KEY,
    Sv2Misbehaviour.EXPIRED_CERTIFICATE,
    Sv2Misbehaviour.REJECT_ALL,
    Sv2Misbehaviour.SILENT,
    Sv2Misbehaviour.NO_VERSION_ROLLING,
    Sv2Misbehaviour.REFUSE_CHANNEL,
}


@dataclass(frozen=True)
class Sv2Job:
    job_id: int
    prev_hash: bytes  # header order
    prefix: bytes  # coinbase up to the extranonce
    suffix: bytes
    path: tuple[bytes, ...]
    version: int
    nbits: int
    ntime: int

    def notify(self) -> sp.Notify:
        return sp.Notify(
            str(self.job_id),
            self.prev_hash,
            self.prefix,
            self.suffix,
            self.path,
            self.version,
            self.nbits,
            self.ntime,
            True,
        )


@dataclass
class _Channel:
    number: int
    writer: asyncio.StreamWriter
    transport: Transport
    channel_id: int = 0
    user: str = ""
    extranonce_prefix: bytes = b""
    extranonce_size: int = 0
    target: int = 0
    prefixes: dict[int, bytes] = field(default_factory=dict)  # job id -> prefix at the time
    seen: set[tuple[int, bytes, int, int, int]] = field(default_factory=set)
    batch: int = 0  # accepted, not yet acknowledged
    batch_sum: int = 0
    last_sequence: int = 0
    flush: asyncio.TimerHandle | None = None

    def send(self, message: m.Message) -> None:
        if not self.writer.is_closing():
            self.writer.write(encrypt_frame(self.transport.send, message.frame()))


class Sv2TestPool:
    """One V2 pool server; `async with Sv2TestPool() as pool`, or start()/stop()."""

    __test__ = False

    def __init__(
        self,
        *,
        host: str = HOST,
        port: int = 0,
        difficulty: float = SIM_DIFFICULTY,
        extranonce_size: int = 4,
        branches: int = 4,
        ack_every: int = 4,
        ack_interval_s: float = 0.5,
        job_interval_s: float | None = None,
        authority: PrivateKey | None = None,
        seed: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.difficulty = difficulty
        self.extranonce_size = extranonce_size
        self.ack_every = ack_every
        self.ack_interval_s = ack_interval_s
        self._branches = branches
        self._job_interval_s = job_interval_s
        self.authority = authority or PrivateKey()
        self.static = EllSwiftKey()
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._channels: dict[int, _Channel] = {}
        self._serving: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count(1)
        self._job_ids = itertools.count(1)
        self._jobs: dict[int, Sv2Job] = {}
        self._prev_hash = self._rng.randbytes(32)
        self._height = 800_000
        self._ticker: asyncio.Task[None] | None = None
        self.current = self._make_job()
        self._jobs[self.current.job_id] = self.current
        self.modes: set[Sv2Misbehaviour] = set()
        self.results: deque[ShareResult] = deque(maxlen=200_000)
        self.reasons: Counter[str] = Counter()
        self.accepted = 0
        self.rejected = 0
        self.acknowledgements = 0  # SubmitShares.Success messages sent
        self.connections_made = 0
        self.handshakes = 0
        self.setup_flags: list[int] = []  # SetupConnection.flags as each client sent them
        self.hashrates: list[float] = []  # nominal hashrates: channel opens and updates
        self.bytes_in = 0
        self.bytes_out = 0
        self.on_share: Callable[[ShareResult], None] = lambda result: None

    # -- life ------------------------------------------------------------------------------

    async def __aenter__(self) -> Sv2TestPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        if self._job_interval_s:
            self._ticker = asyncio.create_task(self._tick(self._job_interval_s))

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._server is not None:
            self._server.close()
            self._drop_all()
            await self._server.wait_closed()
            self._server = None
        if self._serving:
            await asyncio.wait(self._serving, timeout=5)

    @property
    def authority_key(self) -> str:
        """The authority key as it goes in the URL."""
        return encode_authority_key(xonly_of(self.authority))

    @property
    def url(self) -> str:
        return f"{SCHEME}://{self.host}:{self.port}/{self.authority_key}"

    @property
    def clients(self) -> int:
        return sum(1 for c in self._channels.values() if c.channel_id)

    def users(self) -> set[str]:
        return {c.user for c in self._channels.values() if c.user}

    # -- what tests do -------------------------------------------------------------------

    def new_job(self, *, clean: bool = True) -> Sv2Job:
        """A job for everyone; clean = a new block (future job, then SetNewPrevHash)."""
        if clean:
            self._prev_hash = self._rng.randbytes(32)
            self._height += 1
            self._jobs.clear()
            for channel in self._channels.values():
                channel.seen.clear()
        job = self._make_job()
        self.current = job
        self._jobs[job.job_id] = job
        for channel in self._channels.values():
            if channel.channel_id:
                self._send_job(channel, job, clean=clean)
        return job

    def set_difficulty(self, difficulty: float) -> None:
        self.difficulty = difficulty
        target = sp.target_of(difficulty)
        for channel in self._channels.values():
            if channel.channel_id:
                channel.target = target
                channel.send(m.SetTarget(channel.channel_id, target))

    def set_extranonce_prefix(self, prefix: bytes) -> None:
        """A new extranonce prefix for every channel, for the jobs sent after it."""
        for channel in self._channels.values():
            if channel.channel_id:
                channel.extranonce_prefix = prefix
                channel.send(m.SetExtranoncePrefix(channel.channel_id, prefix))

    def misbehave(self, kind: Sv2Misbehaviour) -> None:
        if kind in _MODES:
            self.modes.add(kind)
            return
        for channel in list(self._channels.values()):
            writer = channel.writer
            if kind is Sv2Misbehaviour.GARBAGE:
                writer.write(os.urandom(100))
            elif kind is Sv2Misbehaviour.OVERSIZE:
                header = encode_header(CHANNEL_BIT, m.NewExtendedMiningJob.TYPE, MAX_LENGTH)
                writer.write(channel.transport.send.encrypt(b"", header))
            elif kind is Sv2Misbehaviour.RECONNECT:
                channel.send(m.Reconnect("", 0))
            elif kind is Sv2Misbehaviour.DISCONNECT:
                writer.transport.abort()

    def behave(self) -> None:
        self.modes.clear()

    # -- serving -------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = next(self._numbers)
        self.connections_made += 1
        task = asyncio.current_task()
        if task is not None:
            self._serving.add(task)
        try:
            try:
                async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                    act1 = await reader.readexactly(ACT1_BYTES)
            except (TimeoutError, asyncio.IncompleteReadError, OSError):
                return
            self.bytes_in += len(act1)
            answer, transport = Responder(self.static, self._certificate()).act2(act1)
            writer.write(answer)
            self.bytes_out += len(answer)
            self.handshakes += 1
            channel = _Channel(number, writer, transport)
            self._channels[number] = channel
            decoder = FrameDecoder(transport.receive, max_payload=MAX_PAYLOAD)
            while True:
                try:
                    data = await reader.read(65536)
                except OSError:
                    return
                if not data:
                    return
                self.bytes_in += len(data)
                if Sv2Misbehaviour.SILENT in self.modes:
                    continue
                try:
                    for frame in decoder.feed(data):
                        self._handle(channel, m.decode(frame))
                except ProtocolError:
                    return  # a miner that sends garbage is dropped
        finally:
            channel_gone = self._channels.pop(number, None)
            if channel_gone is not None and channel_gone.flush is not None:
                channel_gone.flush.cancel()
            if task is not None:
                self._serving.discard(task)
            writer.transport.abort()

    def _certificate(self) -> Certificate:
        now = int(time.time())
        valid_from, not_valid_after = now - 3600, now + 86400
        if Sv2Misbehaviour.EXPIRED_CERTIFICATE in self.modes:
            valid_from, not_valid_after = now - 7200, now - 3600
        signer = PrivateKey() if Sv2Misbehaviour.WRONG_KEY in self.modes else self.authority
        certificate = sign_certificate(
            signer, self.static.xonly, valid_from=valid_from, not_valid_after=not_valid_after
        )
        if Sv2Misbehaviour.BAD_CERTIFICATE in self.modes:
            broken = bytes((certificate.signature[0] ^ 1,)) + certificate.signature[1:]
            certificate = replace(certificate, signature=broken)
        return certificate

    def _handle(self, channel: _Channel, message: m.Message) -> None:
        if isinstance(message, m.SetupConnection):
            self.setup_flags.append(message.flags)
            refused = message.flags & m.REQUIRES_VERSION_ROLLING
            if Sv2Misbehaviour.NO_VERSION_ROLLING in self.modes and refused:
                channel.send(m.SetupConnectionError(refused, "unsupported-feature-flags"))
            elif message.protocol != m.MINING_PROTOCOL:
                channel.send(m.SetupConnectionError(0, "unsupported-protocol"))
            else:
                channel.send(m.SetupConnectionSuccess(m.PROTOCOL_VERSION, 0))
        elif isinstance(message, m.OpenExtendedMiningChannel):
            self._open(channel, message)
        elif isinstance(message, m.SubmitSharesExtended):
            self._judge(channel, message)
        elif isinstance(message, m.UpdateChannel):
            self.hashrates.append(message.nominal_hash_rate)

    def _open(self, channel: _Channel, message: m.OpenExtendedMiningChannel) -> None:
        if Sv2Misbehaviour.REFUSE_CHANNEL in self.modes or not message.user_identity:
            channel.send(m.OpenMiningChannelError(message.request_id, "unknown-user"))
            return
        self.hashrates.append(message.nominal_hash_rate)
        channel.channel_id = channel.number
        channel.user = message.user_identity
        channel.extranonce_prefix = channel.number.to_bytes(4, "big")
        channel.target = sp.target_of(self.difficulty)
        channel.extranonce_size = max(self.extranonce_size, message.min_extranonce_size)
        channel.send(
            m.OpenExtendedMiningChannelSuccess(
                request_id=message.request_id,
                channel_id=channel.channel_id,
                target=channel.target,
                extranonce_size=channel.extranonce_size,
                extranonce_prefix=channel.extranonce_prefix,
            )
        )
        self._send_job(channel, self.current, clean=True)

    def _send_job(self, channel: _Channel, job: Sv2Job, *, clean: bool) -> None:
        if Sv2Misbehaviour.SILENT in self.modes:
            return
        channel.prefixes[job.job_id] = channel.extranonce_prefix
        channel.send(
            m.NewExtendedMiningJob(
                channel_id=channel.channel_id,
                job_id=job.job_id,
                min_ntime=None if clean else job.ntime,
                version=job.version,
                version_rolling_allowed=True,
                merkle_path=job.path,
                coinbase_tx_prefix=job.prefix,
                coinbase_tx_suffix=job.suffix,
            )
        )
        if clean:
            prev = m.SetNewPrevHash(
                channel.channel_id, job.job_id, job.prev_hash, job.ntime, job.nbits
            )
            channel.send(prev)

    def _judge(self, channel: _Channel, message: m.SubmitSharesExtended) -> None:
        result = self._verdict(channel, message)
        self.results.append(result)
        if result.accepted:
            self.accepted += 1
            channel.batch += 1
            channel.batch_sum += max(1, int(result.difficulty))
            channel.last_sequence = message.sequence_number
            if channel.batch >= self.ack_every:
                self._acknowledge(channel)
            elif channel.flush is None:
                loop = asyncio.get_running_loop()
                channel.flush = loop.call_later(self.ack_interval_s, self._acknowledge, channel)
        else:
            self.rejected += 1
            self.reasons[result.reason] += 1
            channel.send(
                m.SubmitSharesError(channel.channel_id, message.sequence_number, result.reason)
            )
        self.on_share(result)

    def _acknowledge(self, channel: _Channel) -> None:
        if channel.flush is not None:
            channel.flush.cancel()
            channel.flush = None
        if not channel.batch:
            return
        channel.send(
            m.SubmitSharesSuccess(
                channel.channel_id, channel.last_sequence, channel.batch, channel.batch_sum
            )
        )
        self.acknowledgements += 1
        channel.batch = channel.batch_sum = 0

    def _verdict(self, channel: _Channel, message: m.SubmitSharesExtended) -> ShareResult:
        def verdict(reason: str, difficulty: float = 0.0) -> ShareResult:
            job_id = str(message.job_id)
            accepted = not reason
            return ShareResult(channel.number, channel.user, job_id, accepted, reason, difficulty)

        if message.channel_id != channel.channel_id:
            return verdict("invalid-channel-id")
        job = self._jobs.get(message.job_id)
        if job is None:
            return verdict("stale-share")
        if len(message.extranonce) != channel.extranonce_size:
            return verdict("invalid-extranonce-size")
        if not job.ntime <= message.ntime <= job.ntime + NTIME_SLACK_S:
            return verdict("invalid-timestamp")
        if (message.version ^ job.version) & ~GENERAL_PURPOSE_BITS:
            return verdict("invalid-version")
        key = (message.job_id, message.extranonce, message.ntime, message.nonce, message.version)
        if key in channel.seen:
            return verdict("duplicate-share")
        channel.seen.add(key)
        prefix = channel.prefixes.get(job.job_id, channel.extranonce_prefix)
        header_job = replace(
            chip_job(job.notify(), prefix, message.extranonce, 0), ntime=message.ntime
        )
        value = share_hash(header_job, message.version, message.nonce)
        difficulty = sp.difficulty_of(value)
        if value > channel.target:
            return verdict("difficulty-too-low", difficulty)
        if Sv2Misbehaviour.REJECT_ALL in self.modes:
            return verdict("rejected-by-test-pool", difficulty)
        return verdict("", difficulty)

    def _drop_all(self) -> None:
        for channel in list(self._channels.values()):
            channel.writer.transport.abort()

    async def _tick(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.new_job(clean=False)

    def _make_job(self) -> Sv2Job:
        """A job with a real coinbase: height, tag, room for prefix + extranonce, one output."""
        tag = b"/hashbay sv2 test pool/"
        height = bytes((3,)) + self._height.to_bytes(3, "little")
        script_len = len(height) + len(tag) + 4 + self.extranonce_size
        prefix = (
            (1).to_bytes(4, "little")
            + b"\x01"
            + bytes(32)
            + b"\xff\xff\xff\xff"
            + bytes((script_len,))
            + height
            + tag
        )
        suffix = (
            b"\xff\xff\xff\xff"
            + b"\x01"
            + (312_500_000).to_bytes(8, "little")
            + b"\x01\x51"
            + bytes(4)
        )
        return Sv2Job(
            job_id=next(self._job_ids),
            prev_hash=self._prev_hash,
            prefix=prefix,
            suffix=suffix,
            path=tuple(self._rng.randbytes(32) for _ in range(self._branches)),
            version=0x2000_0000,
            nbits=0x1703_0ECD,
            ntime=int(time.time()),
        )


# -- command line ----------------------------------------------------------------------


def _write_ready(path: Path, url: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(url + "\n")
    os.replace(tmp, path)


async def _main(args: argparse.Namespace) -> None:
    pool = Sv2TestPool(
        host=args.host,
        port=args.port,
        difficulty=args.difficulty,
        job_interval_s=args.job_interval_s or None,
        ack_every=args.ack_every,
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
        prog="python -m hashbay.tools.pool_sv2",
        description="A Stratum V2 test pool: Noise handshake, real jobs, real share checks.",
    )
    parser.add_argument("--host", default=HOST, help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free one)")
    parser.add_argument(
        "--difficulty",
        type=float,
        default=SIM_DIFFICULTY,
        help=f"share difficulty (default {SIM_DIFFICULTY:.3g}, matching the simulated chips)",
    )
    parser.add_argument(
        "--job-interval-s", type=float, default=30.0, help="new job this often (0: never)"
    )
    parser.add_argument(
        "--ack-every",
        type=int,
        default=10,
        help="acknowledge accepted shares in batches of this many (default 10, as the "
        "specification's illustration; a partial batch goes out after half a second)",
    )
    parser.add_argument("--report-s", type=float, default=10.0, help="print counts this often")
    parser.add_argument("--ready-file", help="write the pool's URL here once listening")
    args = parser.parse_args(argv)
    if not args.difficulty > 0:
        parser.error("--difficulty must be positive")
    if args.ack_every < 1:
        parser.error("--ack-every must be at least 1")
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
