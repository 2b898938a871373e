"""The configured pools in priority order: which one gets the work, and the state of each.

Failover is immediate: when the active pool's connection fails, the best pool that is
up takes over; pools below it are only connected while nothing above them is. Failback
waits: a higher-priority pool that comes back must stay up for `failback_delay_s` before
work moves back, so a flapping pool cannot bounce the miner. A pool that fails is
retried after a delay doubling from `backoff_min_s` to `backoff_max_s`. When no pool has
delivered work for `idle_after_s`, work is marked unavailable and the power governor
idles the boards until one returns.

A pool is judged by what it delivers, not by its socket (`pool_judge.py`): one that
refuses our shares, accepts none for too long or loops on `client.reconnect` is given up
like one whose connection failed, and its backoff keeps doubling however long its
connections stayed up. Losing the active pool raises a `pool_failed` event (through the
alarm gate) and leaves the reason in its status (`failover_reason`).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import itertools
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import structlog

from hashbay.agent.core.alarms import AlarmGate
from hashbay.agent.core.events import Event, EventKind
from hashbay.agent.interfaces.miner_api_replies import PoolView
from hashbay.agent.mining.pool_judge import PoolJudge
from hashbay.agent.mining.pool_quota import split_percent
from hashbay.agent.mining.pool_session import PoolSession
from hashbay.agent.mining.pool_settings import (
    Endpoint,
    PoolSettings,
    authority_key,
    parse_url,
)
from hashbay.agent.mining.pool_work import PoolWork
from hashbay.agent.mining.stratum_client import (
    PoolCounters,
    PoolError,
    PoolProtocolError,
    PoolUnproductive,
    ReconnectRequested,
    StratumSession,
)
from hashbay.agent.mining.stratum_settings import StratumSettings
from hashbay.agent.mining.sv2.session import Sv2Session

log = structlog.get_logger("hashbay.pools")

REPORT_S = 60.0  # share counts go to the log this often (when they moved)


class PoolState(enum.StrEnum):
    STANDBY = "standby"  # not needed: a pool above it is active
    CONNECTING = "connecting"
    ALIVE = "alive"  # authorized and delivering work
    BACKOFF = "backoff"  # failed; waiting to retry
    DISABLED = "disabled"  # listed with enabled = false: never connected


@dataclass(frozen=True)
class PoolStatus:
    """One pool as the CLI, MQTT and the miner API show it."""

    index: int  # also its priority: 0 is tried first
    url: str
    user: str
    state: PoolState
    active: bool
    since: float  # unix time of the last state change
    last_error: str
    backoff_s: float  # the wait before the next try, while in backoff
    difficulty: float | None
    version_mask: int
    counters: PoolCounters
    failover_reason: str = ""  # why work last left this pool (kept after it comes back)
    failover_at: float | None = None  # unix time of that
    quota: int = 0
    split_percent: float = 0.0  # its part of all the shares the pools accepted

    def to_json(self) -> dict[str, Any]:
        c = self.counters
        return {
            "pool": self.index,
            "url": self.url,
            "user": self.user,
            "state": self.state.value,
            "active": self.active,
            "since": round(self.since),
            "last_error": self.last_error,
            "backoff_s": self.backoff_s,
            "difficulty": self.difficulty,
            "version_mask": f"{self.version_mask:08x}",
            "accepted": c.accepted,
            "rejected": c.rejected,
            "stale": c.stale,
            "unanswered": c.unanswered,
            "accepted_difficulty": c.accepted_difficulty,
            "rejected_difficulty": c.rejected_difficulty,
            "best_share": c.best_share,
            "last_share_at": None if c.last_share_at is None else round(c.last_share_at),
            "reject_reasons": dict(c.reasons),
            "protocol_errors": c.protocol_errors,
            "connects": c.connects,
            "failures": c.failures,
            "failover_reason": self.failover_reason,
            "failover_at": None if self.failover_at is None else round(self.failover_at),
            "quota": self.quota,
            "split_percent": self.split_percent,
        }


_LANES = itertools.count(1)  # lane 0 is the failover pool's


def _connection_key(settings: PoolSettings) -> tuple[str, str, str, str]:
    """What a pool's connection depends on: a pool that keeps it keeps its session."""
    return (settings.url, settings.user, settings.password, settings.ca_file)


class _Pool:
    """A configured pool's runtime record (owned by the manager's loop)."""

    def __init__(self, index: int, settings: PoolSettings, judge: PoolJudge) -> None:
        self.index = index
        self.judge = judge
        self.failover_reason = ""
        self.failover_at: float | None = None
        self.lost = ""  # set when the active pool was just lost, for the event
        self.settings = settings
        self.endpoint = parse_url(settings.url)
        self.authority = authority_key(settings.url)  # Stratum V2 when set
        self.counters = PoolCounters()
        self.state = PoolState.STANDBY
        self.since = time.time()
        self.last_error = ""
        self.session: PoolSession | None = None
        self.alive_at = 0.0
        self.failing = False  # failed since it was last alive: the pools below may connect
        self.delay_s = 0.0  # the backoff, doubling
        self.wait_s = 0.0  # the wait in progress (a backoff, or what the pool asked for)
        self.configure = True
        self.redirect_port: int | None = None
        self.lane = next(_LANES)  # its work's lane while it splits the hashrate by quota
        self.task: asyncio.Task[None] | None = None
        self.log = log.bind(pool=index, url=settings.url)

    @property
    def quota(self) -> int:
        """Its quota when it takes part in a split (enabled, with a quota), else 0."""
        return self.settings.quota if self.settings.enabled else 0

    def listed_as(self, index: int, settings: PoolSettings) -> None:
        """Kept through a new pool list (same connection): its new place and settings."""
        self.index = index
        self.settings = settings
        self.log = log.bind(pool=index, url=settings.url)

    def set_state(self, state: PoolState) -> None:
        if state is not self.state:
            self.state = state
            self.since = time.time()


class PoolManager:
    def __init__(
        self,
        pools: tuple[PoolSettings, ...],
        settings: StratumSettings,
        work: PoolWork,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[], None] = lambda: None,
        hashrate: Callable[[], float] = lambda: 0.0,
        alarms: AlarmGate | None = None,
    ) -> None:
        if not pools:
            raise ValueError("a pool manager needs at least one pool")
        self.settings = settings
        self.work = work
        self._clock = clock
        self._on_change = on_change
        self._hashrate = hashrate  # the rig's nominal H/s, for Stratum V2 channels
        self._alarms = alarms
        self._pools = [_Pool(i, p, PoolJudge(settings.judge)) for i, p in enumerate(pools)]
        self._active: _Pool | None = None
        self._serving: dict[_Pool, int] = {}  # the pools splitting the work, by quota
        self._group: asyncio.TaskGroup | None = None
        self._lost_at = clock()
        self._changed = asyncio.Event()
        self._ssl: dict[str, ssl.SSLContext] = {}

    # -- what others read ----------------------------------------------------------------

    @property
    def active(self) -> int | None:
        """The pool mining (with a quota split: the first of those splitting)."""
        if self._serving:
            return min(pool.index for pool in self._serving)
        return None if self._active is None else self._active.index

    @property
    def listed(self) -> tuple[PoolSettings, ...]:
        """The pool list in force, in priority order."""
        return tuple(pool.settings for pool in self._pools)

    def status(self) -> list[PoolStatus]:
        found = []
        split = split_percent({p: p.counters.accepted for p in self._pools})
        for pool in self._pools:
            session = pool.session
            live = session is not None and session.ready
            found.append(
                PoolStatus(
                    index=pool.index,
                    url=pool.settings.url,
                    user=pool.settings.user,
                    state=pool.state,
                    active=pool is self._active or pool in self._serving,
                    since=pool.since,
                    last_error=pool.last_error,
                    backoff_s=pool.wait_s if pool.state is PoolState.BACKOFF else 0.0,
                    difficulty=session.difficulty if live and session else None,
                    version_mask=session.version_mask if live and session else 0,
                    counters=replace(pool.counters, reasons=dict(pool.counters.reasons)),
                    failover_reason=pool.failover_reason,
                    failover_at=pool.failover_at,
                    quota=pool.settings.quota,
                    split_percent=split[pool],
                )
            )
        return found

    def status_json(self) -> list[dict[str, Any]]:
        return [status.to_json() for status in self.status()]

    def work_json(self) -> dict[str, Any]:
        return {"source": "pool", "available": self.work.available, "active_pool": self.active}

    # -- the service ---------------------------------------------------------------------

    async def run(self) -> None:
        self._lost_at = self._clock()
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for pool in self._pools:
                    self._start(pool)
                group.create_task(self._watch(), name="pool-watch")
        finally:
            self._group = None
            for pool in self._pools:
                pool.task = None
                if pool.session is not None:
                    pool.session.stop()
            self._active = None
            self.work.use(None, clean=False)
            for pool in self._serving:
                self.work.use(None, clean=False, lane=pool.lane)
            self._serving = {}
            self.work.weigh({0: 1})

    def _start(self, pool: _Pool) -> None:
        if self._group is not None:
            pool.task = self._group.create_task(self._keep(pool), name=f"pool-{pool.lane}")

    def replace(self, pools: tuple[PoolSettings, ...]) -> None:
        """Mine on this list from now on (already checked by `check_pools`). Pools whose
        connection is unchanged keep their session, counters and work; removed ones are
        stopped, new ones started; the choice is made again, with no clean job forced
        on a pool that stays."""
        if not pools:
            raise ValueError("a pool manager needs at least one pool")
        kept = {_connection_key(pool.settings): pool for pool in self._pools}
        listed: list[_Pool] = []
        for index, settings in enumerate(pools):
            pool = kept.pop(_connection_key(settings), None)
            if pool is None:
                pool = _Pool(index, settings, PoolJudge(self.settings.judge))
            else:
                pool.listed_as(index, settings)
            listed.append(pool)
        self._pools = listed
        for pool in kept.values():  # removed
            pool.log.info("pool removed from the list")
            if pool.session is not None:
                pool.session.stop()
                pool.session = None
            if pool.task is not None:
                pool.task.cancel()
                pool.task = None
        for pool in listed:
            if not pool.settings.enabled and pool.session is not None:
                pool.session.stop()
            if pool.task is None:
                self._start(pool)
        log.info("pool list replaced", pools=[p.settings.url for p in listed])
        self._select()
        self._notify()

    async def _keep(self, pool: _Pool) -> None:
        """Connect this pool whenever it is wanted; back off after each failure."""
        while True:
            while not self._wanted(pool):
                idle = PoolState.STANDBY if pool.settings.enabled else PoolState.DISABLED
                pool.set_state(idle)
                await self._change()
            pool.set_state(PoolState.CONNECTING)
            self._notify()
            delay_s = await self._connection(pool)
            pool.session = None
            if pool is self._active or pool in self._serving:
                self._select()
            if pool.lost:
                self._tell_lost(pool)
            if delay_s is None:
                continue
            pool.wait_s = delay_s
            pool.set_state(PoolState.BACKOFF)
            self._notify()
            await asyncio.sleep(delay_s)

    async def _connection(self, pool: _Pool) -> float | None:
        """Run one connection; the delay before the next try, None if it was stopped."""
        endpoint = pool.endpoint
        if pool.redirect_port is not None:
            endpoint = Endpoint(endpoint.host, pool.redirect_port, endpoint.tls)
            pool.redirect_port = None
        stage = "connecting"
        configure, pool.configure = pool.configure, True  # going without is a one-off
        try:
            open_session = StratumSession if pool.authority is None else self._sv2_session(pool)
            session = open_session(
                endpoint,
                user=pool.settings.user,
                password=pool.settings.password,
                settings=self.settings,
                counters=pool.counters,
                on_ready=lambda s: self._ready(pool),
                on_work=lambda s, clean: self._work(pool, s, clean),
                ssl_context=self._ssl_context(pool) if endpoint.tls else None,
                configure=configure,
                name=f"{pool.index}",
                judge=pool.judge,
            )
            pool.session = session
            try:
                await session.run()
            finally:
                stage = session.stage
            return None
        except ReconnectRequested as exc:
            verdict = pool.judge.reconnect(self._clock())
            if verdict is None:
                return self._reconnect(pool, exc)
            return self._failed(pool, f"given up: {verdict}", judged=True)
        except PoolUnproductive as exc:
            return self._failed(pool, f"given up: {exc}", judged=True)
        except PoolError as exc:
            why = str(exc)
            if stage == "configure" and not isinstance(exc, PoolProtocolError):
                pool.configure = False  # some pools hang up on methods they do not know
                why += " (retrying once without mining.configure)"
            return self._failed(pool, why)
        except (OSError, ssl.SSLError) as exc:  # the CA file
            return self._failed(pool, f"TLS set-up failed: {exc}")
        except Exception as exc:  # a bug must not take the other pools down
            pool.log.exception("pool connection failed unexpectedly")
            return self._failed(pool, f"internal error: {exc!r}")

    def _reconnect(self, pool: _Pool, exc: ReconnectRequested) -> float:
        """The pool asked us to come back (not in a loop): when to."""
        settings, request = self.settings, exc.request
        if request.host is not None and request.host != pool.endpoint.host:
            pool.log.warning(
                "pool asked to reconnect elsewhere; staying with the configured host",
                host=request.host,
            )
        elif request.port is not None:
            pool.redirect_port = request.port
        pool.last_error = str(exc)
        pool.alive_at = 0.0
        pool.failing = request.wait_s > 0  # a pause is worth a failover; a bounce is not
        pool.log.info("pool asked to reconnect", wait_s=request.wait_s)
        # Never sooner than the backoff floor: a pool cannot make us reconnect fast.
        return min(max(request.wait_s, settings.backoff_min_s), settings.backoff_max_s)

    def _failed(self, pool: _Pool, why: str, *, judged: bool = False) -> float:
        """A failed connection, or a pool judged useless: the delay before trying again.
        The backoff starts afresh after a connection that stayed up long enough, unless
        the pool was judged (it was up, but useless)."""
        settings = self.settings
        long_up = pool.alive_at and self._clock() - pool.alive_at >= settings.failback_delay_s
        if long_up and not judged:
            pool.delay_s = 0.0
        if pool is self._active or pool in self._serving or judged:
            pool.lost = why
        pool.alive_at = 0.0
        pool.failing = True
        pool.delay_s = min(settings.backoff_max_s, max(settings.backoff_min_s, pool.delay_s * 2))
        pool.counters.failures += 1
        pool.last_error = why
        pool.log.warning("pool connection failed", error=why, retry_in_s=pool.delay_s)
        return pool.delay_s

    def _tell_lost(self, pool: _Pool) -> None:
        """Work left this pool (or it was judged useless): its status keeps the reason,
        and an event says it, once per alarm interval per pool."""
        why, pool.lost = pool.lost, ""
        pool.failover_reason, pool.failover_at = why, time.time()
        active = self._active
        if self._serving:
            after = "the other pools with a quota split the work"
        elif active is not None:
            after = f"mining on pool {active.index} ({active.settings.url})"
        elif len(self._pools) > 1:
            after = "failing over to the next pool that delivers"
        else:
            after = "no other pool to fail over to"
        pool.log.warning("pool failed", reason=why, now=after)
        if self._alarms is not None:
            event = Event(
                EventKind.POOL_FAILED,
                None,
                f"pool {pool.index} ({pool.settings.url}) failed: {why}; {after}",
                details={
                    "pool": pool.index,
                    "url": pool.settings.url,
                    "reason": why,
                    "active_pool": self.active,
                },
            )
            self._alarms.raise_event(f"pool {pool.index}", event, 1)

    def _ready(self, pool: _Pool) -> None:
        pool.alive_at = self._clock()
        pool.last_error = ""
        pool.failing = False
        pool.set_state(PoolState.ALIVE)
        self._select()

    def _sv2_session(self, pool: _Pool) -> Callable[..., PoolSession]:
        """Stratum V2 sessions take what V1 ones do, plus the pool's key and our hashrate."""
        assert pool.authority is not None
        return functools.partial(Sv2Session, authority_key=pool.authority, hashrate=self._hashrate)

    def _work(self, pool: _Pool, session: PoolSession, clean: bool) -> None:
        if session.template is None:
            return
        if pool is self._active:
            self.work.use(session.template, clean=clean)
        elif pool in self._serving:
            self.work.use(session.template, clean=clean, lane=pool.lane)

    async def _watch(self) -> None:
        """Failback after its delay, and work marked unavailable after idle_after_s."""
        reported: dict[int, tuple[int, int, int]] = {}
        next_report = self._clock() + REPORT_S
        while True:
            self._select()
            now = self._clock()
            if now >= next_report:
                next_report = now + REPORT_S
                self._report(reported)
            due = [now + 1.0]
            if self._active is None and not self._serving and self.work.available:
                due.append(self._lost_at + self.settings.idle_after_s)
            active = self._active
            for pool in self._pools:
                if pool.state is not PoolState.ALIVE:
                    continue
                if (active is not None and pool.index < active.index) or (
                    pool.quota and pool not in self._serving
                ):
                    due.append(pool.alive_at + self.settings.failback_delay_s)
            try:
                async with asyncio.timeout(max(0.0, min(due) - now)):
                    await self._change()
            except TimeoutError:
                pass

    def _report(self, reported: dict[int, tuple[int, int, int]]) -> None:
        for pool in self._pools:
            c = pool.counters
            counts = (c.accepted, c.rejected, c.stale)
            if counts != reported.get(pool.index, (0, 0, 0)):
                reported[pool.index] = counts
                pool.log.info(
                    "shares",
                    accepted=c.accepted,
                    rejected=c.rejected,
                    stale=c.stale,
                    active=pool is self._active or pool in self._serving,
                )

    # -- choosing ------------------------------------------------------------------------

    def _wanted(self, pool: _Pool) -> bool:
        """Pools with a quota always; the others up to the active one, and while no pool
        is active each once those above it failed; a disabled pool never."""
        if not pool.settings.enabled:
            return False
        if pool.quota:
            return True
        if self._serving:
            return False
        if self._active is not None:
            return pool.index <= self._active.index
        above = self._pools[: pool.index]
        return all(p.failing or not p.settings.enabled for p in above)

    def _split(self, now: float) -> dict[_Pool, int]:
        """The pools that split the work now: the alive ones with a quota. One that
        failed before joins after staying up `failback_delay_s`, as a failback would."""
        mining = bool(self._serving) or self._active is not None
        chosen: dict[_Pool, int] = {}
        for pool in self._pools:
            if not pool.quota or pool.state is not PoolState.ALIVE or pool.session is None:
                continue
            proven = now - pool.alive_at >= self.settings.failback_delay_s
            if pool in self._serving or not mining or not pool.counters.failures or proven:
                chosen[pool] = pool.quota
        return chosen

    def _serve(self, chosen: dict[_Pool, int]) -> None:
        """Hand the work to these pools by quota (none: back to failover)."""
        before = self._serving
        if chosen == before:
            return
        if chosen and self._active is not None:
            self._active = None  # the split takes over from the failover pool
            self.work.use(None, clean=False)
        for pool in before:
            if pool not in chosen:
                self.work.use(None, clean=False, lane=pool.lane)
        for pool in chosen:
            if pool not in before and pool.session is not None:
                self.work.use(pool.session.template, clean=False, lane=pool.lane)
        self.work.weigh({pool.lane: quota for pool, quota in chosen.items()})
        self._serving = dict(chosen)
        log.info("splitting the work", quotas={p.index: q for p, q in chosen.items()})
        if chosen:
            for pool in self._pools:  # failover pools are not needed while pools split
                if not pool.quota and pool.session is not None:
                    pool.session.stop()
        self._notify()

    def _select(self) -> None:
        now = self._clock()
        self._serve(self._split(now))
        if self._serving:
            self._lost_at = now
            self.work.set_available(True)
            return
        current = self._active
        choice = current if current is not None and current.state is PoolState.ALIVE else None
        if current is not None and (current.session is None or current not in self._pools):
            choice = None
        for pool in self._pools:
            if not pool.settings.enabled:
                continue
            if choice is not None and pool.index >= choice.index:
                break
            if pool.state is not PoolState.ALIVE or pool.session is None:
                continue
            if choice is None or now - pool.alive_at >= self.settings.failback_delay_s:
                choice = pool
                break
        if choice is not current:
            self._switch(current, choice)
        if self._active is not None:
            self._lost_at = now
            self.work.set_available(True)
        elif now - self._lost_at >= self.settings.idle_after_s:
            self.work.set_available(False)

    def _switch(self, before: _Pool | None, after: _Pool | None) -> None:
        self._active = after
        if after is None:
            self._lost_at = self._clock()
            log.warning(
                "no pool is delivering work",
                was=before.settings.url if before else None,
                idle_after_s=self.settings.idle_after_s,
            )
            self.work.use(None, clean=False)
        else:
            log.info(
                "mining on pool",
                pool=after.index,
                url=after.settings.url,
                was=before.settings.url if before else None,
            )
            template = after.session.template if after.session else None
            self.work.use(template, clean=True)
            for pool in self._pools:  # pools below the active one are not needed
                if pool.index > after.index and pool.session is not None and not pool.quota:
                    pool.session.stop()
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        self._on_change()

    async def _change(self) -> None:
        await self._changed.wait()

    def _ssl_context(self, pool: _Pool) -> ssl.SSLContext:
        ca_file = pool.settings.ca_file
        context = self._ssl.get(ca_file)
        if context is None:
            context = ssl.create_default_context(cafile=ca_file or None)
            self._ssl[ca_file] = context
        return context


def pool_views(statuses: list[PoolStatus]) -> list[PoolView]:
    """The pools as the cgminer-style API reports them ("Dead" = failing right now)."""
    return [
        PoolView(
            url=s.url,
            user=s.user,
            alive=s.state is PoolState.ALIVE or not s.last_error,
            stratum_active=s.active,
            priority=s.index,
            accepted=s.counters.accepted,
            rejected=s.counters.rejected,
            stale=s.counters.stale,
            difficulty_accepted=s.counters.accepted_difficulty,
            difficulty_rejected=s.counters.rejected_difficulty,
            last_share_time=round(s.counters.last_share_at or 0),
            quota=s.quota,
            split_percent=s.split_percent,
            enabled=s.state is not PoolState.DISABLED,
        )
        for s in statuses
    ]
