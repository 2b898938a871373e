"""The work source for pool mining: chip jobs from the active pool's job, shares back.

Every job handed to a chain gets its own extranonce2, so no two chains (and no two jobs
on one chain) hash the same header; inside a chain the chips split the nonce space by
their address, as the silicon does. The source remembers, per slot and 4-bit chip job
id, which pool job and extranonce2 that work came from, so a nonce a chain reports can
be turned back into a `mining.submit` with the version bits the chip rolled.

Each verified nonce is checked again here, against the pool's share target (SHA256d of
the rebuilt header): a nonce that meets the chips' ticket but not the pool's difficulty
is simply not sent. Work from before a clean_jobs (or from another pool or session) is
stale: counted, never submitted, and every slot is told to fetch fresh work at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import structlog

from hashbay.agent.mining.pool_quota import SmoothRoundRobin
from hashbay.agent.mining.stratum_protocol import Notify, difficulty_of
from hashbay.agent.mining.stratum_work import chip_job, share_hash
from hashbay.agent.mining.work import LocalWork
from hashbay.drivers.bm13xx.chain import DEFAULT_VERSION_MASK
from hashbay.drivers.bm13xx.frames import Job, NonceReply
from hashbay.drivers.bm13xx.work import rolled_version

log = structlog.get_logger("hashbay.work")

RECENT_SHARES = 4096  # shares remembered to drop duplicates
PATH_SAMPLES = 2048


@dataclass(frozen=True, slots=True)
class Share:
    """A nonce that meets the pool's target, in the pool's terms."""

    job_id: str
    extranonce2: bytes
    ntime: int
    nonce: int
    version_bits: int | None  # the rolled bits (version & mask); None without rolling
    difficulty: float  # the pool difficulty its hash achieves
    slot: int
    chip: int


class ShareSink(Protocol):
    """Where a template's shares go (a live pool session)."""

    @property
    def target(self) -> int: ...

    def submit(self, share: Share) -> bool: ...

    def stale(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Template:
    """What the active pool offers now: its latest job and the terms it comes with."""

    notify: Notify
    extranonce1: bytes
    extranonce2_size: int
    version_mask: int  # granted by the pool; 0 = no version rolling
    target: int  # share target when the job arrived
    sink: ShareSink


@dataclass
class WorkCounters:
    nonces: int = 0  # verified nonces the chains handed over
    submitted: int = 0
    below_target: int = 0  # met the chips' ticket, not the pool's difficulty
    stale: int = 0
    duplicates: int = 0
    outside_mask: int = 0  # rolled bits the pool did not grant
    unsent: int = 0  # the pool connection was gone
    no_pool: int = 0  # for stand-in work while no pool was active
    errors: int = 0


@dataclass(frozen=True, slots=True)
class _Issued:
    template: Template
    job: Job
    extranonce2: bytes
    lane: int
    generation: int


class PoolWork:
    """Implements the WorkSource protocol on top of whichever pools the manager makes active.

    Work comes in lanes, one per pool that gets work: lane 0 for the one active pool of
    failover, a lane per pool when pools split the hashrate by quota (`weigh`), each chip
    job then built from the lane `pool_quota.SmoothRoundRobin` picks. A lane's clean job
    makes only that lane's work stale."""

    def __init__(self, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._lanes: dict[int, Template] = {}
        self._lane_generation: dict[int, int] = {}
        self._weights: dict[int, int] = {0: 1}
        self._picker: SmoothRoundRobin[int] = SmoothRoundRobin()
        self._generation = 0
        self._issued: dict[tuple[int, int], _Issued] = {}
        self._slot_generation: dict[int, int] = {}
        self._extranonce2 = 0
        self._recent: dict[tuple[str, bytes, int, int], None] = {}
        self._available = True
        self._availability = asyncio.Event()
        self._stand_in = LocalWork()
        self.counters = WorkCounters()
        self.jobs: dict[int, int] = {}  # chip jobs built per lane
        self.share_path_s: deque[float] = deque(maxlen=PATH_SAMPLES)
        self.on_fresh: Callable[[], None] = lambda: None
        self.on_availability: Callable[[bool], None] = lambda available: None

    # -- what the pool manager tells it ------------------------------------------------

    def use(self, template: Template | None, *, clean: bool, lane: int = 0) -> None:
        """A lane's current job (None: that pool gives no work now). Fresh work when
        anything that makes the lane's older work worthless changed: clean_jobs, another
        pool or session, new extranonce or version mask."""
        old = self._lanes.get(lane)
        if template is None:
            self._lanes.pop(lane, None)
            return
        self._lanes[lane] = template
        if (
            clean
            or old is None
            or old.sink is not template.sink
            or old.extranonce1 != template.extranonce1
            or old.extranonce2_size != template.extranonce2_size
            or old.version_mask != template.version_mask
        ):
            self._generation += 1
            self._lane_generation[lane] = self._generation
            self._recent.clear()
            self.on_fresh()

    def weigh(self, weights: Mapping[int, int]) -> None:
        """The lanes that get new work and their quotas ({0: 1}: lane 0 alone). A lane
        left out keeps what it was given valid until its pool says otherwise."""
        self._weights = {lane: weight for lane, weight in weights.items() if weight > 0}
        if not self._weights:
            self._weights = {0: 1}

    def set_available(self, available: bool) -> None:
        if available == self._available:
            return
        self._available = available
        self._availability.set()
        self._availability = asyncio.Event()
        log.info("work availability", available=available)
        self.on_availability(available)

    @property
    def pool_job(self) -> str | None:
        """The pool job id the next chip job of the first lane is built from (None: no pool)."""
        template = self._first()
        return None if template is None else template.notify.job_id

    @property
    def available(self) -> bool:
        """False once no pool has delivered work for stratum.idle_after_s."""
        return self._available

    async def wait_available(self, available: bool) -> None:
        while self._available != available:
            await self._availability.wait()

    def _first(self) -> Template | None:
        for lane in self._weights:
            if lane in self._lanes:
                return self._lanes[lane]
        return None

    def _pick(self) -> tuple[int, Template] | None:
        """The lane the next job comes from: by quota among the lanes with work."""
        ready = {lane: w for lane, w in self._weights.items() if lane in self._lanes}
        if not ready:
            return None
        lane = next(iter(ready)) if len(ready) == 1 else self._picker.pick(ready)
        return lane, self._lanes[lane]

    # -- the WorkSource protocol, for the slots -------------------------------------------

    @property
    def version_mask(self) -> int:
        """The bits the chips may roll: what every pool getting work granted that the
        chips can roll."""
        mask = DEFAULT_VERSION_MASK
        for lane in self._weights:
            template = self._lanes.get(lane)
            if template is not None:
                mask &= template.version_mask
        return mask

    def fresh(self, slot: int) -> bool:
        """Whether this slot's chips work on something older than the current work."""
        return self._slot_generation.get(slot, self._generation) != self._generation

    def next_job(self, slot: int, job_id: int) -> Job:
        picked = self._pick()
        self._slot_generation[slot] = self._generation
        if picked is None:
            self._issued.pop((slot, job_id), None)
            return self._stand_in.next_job(slot, job_id)
        lane, template = picked
        self.jobs[lane] = self.jobs.get(lane, 0) + 1
        size = template.extranonce2_size
        self._extranonce2 = (self._extranonce2 + 1) % (1 << (8 * size))
        extranonce2 = self._extranonce2.to_bytes(size, "big")
        job = chip_job(template.notify, template.extranonce1, extranonce2, job_id)
        generation = self._lane_generation[lane]
        self._issued[(slot, job_id)] = _Issued(template, job, extranonce2, lane, generation)
        return job

    def on_nonce(self, slot: int, chip: int, reply: NonceReply, version_mask: int) -> None:
        """A nonce the chain verified against its ticket; submit it if the pool wants it.

        Runs inside the chain's read callback, so it never raises.
        """
        started = self._clock()
        counters = self.counters
        counters.nonces += 1
        issued = self._issued.get((slot, reply.job_id))
        if issued is None:
            counters.no_pool += 1
            return
        try:
            self._check(issued, reply, slot=slot, chip=chip, mask=version_mask, started=started)
        except Exception:
            counters.errors += 1
            log.exception("nonce check failed", slot=slot, chip=chip)

    def _check(
        self, issued: _Issued, reply: NonceReply, *, slot: int, chip: int, mask: int, started: float
    ) -> None:
        counters = self.counters
        template = issued.template
        if issued.generation != self._lane_generation[issued.lane]:
            counters.stale += 1
            template.sink.stale()
            return
        job = issued.job
        version = rolled_version(job, reply.version_bits, mask)
        if (version ^ job.version) & ~template.version_mask:
            counters.outside_mask += 1
            return
        value = share_hash(job, version, reply.nonce)
        if value > min(template.target, template.sink.target):
            counters.below_target += 1
            return
        key = (template.notify.job_id, issued.extranonce2, reply.nonce, version)
        if key in self._recent:
            counters.duplicates += 1
            return
        self._recent[key] = None
        if len(self._recent) > RECENT_SHARES:
            del self._recent[next(iter(self._recent))]
        share = Share(
            job_id=template.notify.job_id,
            extranonce2=issued.extranonce2,
            ntime=job.ntime,
            nonce=reply.nonce,
            version_bits=version & template.version_mask if template.version_mask else None,
            difficulty=difficulty_of(value),
            slot=slot,
            chip=chip,
        )
        if template.sink.submit(share):
            counters.submitted += 1
            self.share_path_s.append(self._clock() - started)
        else:
            counters.unsent += 1

    def stats_json(self) -> dict[str, object]:
        return {"available": self._available, "pool_work": bool(self._lanes)}
