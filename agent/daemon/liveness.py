"""Is the daemon really making progress? The answer gates the systemd watchdog and the stall guard.

Two things must move: the event loop (a heartbeat task) and the hardware poll (each poll
that completes). A stalled loop stops the pings because the pinger cannot run; a stuck
poll stops them because the pinger refuses to vouch for it. Independently, a guard thread
that does not depend on the loop puts the hardware into its safe state when either stalls.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import structlog

from hashbay.agent.daemon.sdnotify import SystemdNotifier

log = structlog.get_logger("hashbay.liveness")

HEARTBEAT_PERIOD_S = 0.25


class BusProgress:
    """Whether the hardware thread gets through its work: a call that never returns (a
    device holding the bus) is stuck; calls that return late behind others are only slow.

    The hardware thread calls `begin` as it starts a call and `end` when it is done."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting = 0
        self._moved_at = clock()  # last time a call finished, or one started on an idle thread

    def begin(self) -> None:
        with self._lock:
            if self._waiting == 0:
                self._moved_at = self._clock()
            self._waiting += 1

    def end(self) -> None:
        with self._lock:
            self._waiting -= 1
            self._moved_at = self._clock()

    def stuck_for(self) -> float:
        """Seconds a started call has run with nothing finishing; 0 when idle."""
        with self._lock:
            return self._clock() - self._moved_at if self._waiting else 0.0


class Liveness:
    """Is the daemon progressing, or only slow?

    Stalled means no progress at all for `stall_timeout_s`: no loop heartbeat (the loop
    beats every HEARTBEAT_PERIOD_S, so even a loop ten times slower than usual beats many
    times within it), or a call on the hardware thread that has not returned.
    A late hardware poll behind other bus work is slow, not stalled: the poll's own
    overruns are logged, never an exit."""

    def __init__(
        self,
        stall_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        bus: BusProgress | None = None,
    ) -> None:
        self.stall_timeout_s = stall_timeout_s
        self._clock = clock
        self._bus = bus if bus is not None else BusProgress(clock)
        self._loop_beat = clock()
        self._polls = 0

    def loop_beat(self) -> None:
        self._loop_beat = self._clock()

    def poll_done(self) -> None:
        self._polls += 1

    @property
    def polls(self) -> int:
        return self._polls

    def stalled(self) -> str | None:
        """Why the daemon is not progressing, or None when it is."""
        now = self._clock()
        if now - self._loop_beat > self.stall_timeout_s:
            return f"event loop stalled for {now - self._loop_beat:.1f} s"
        stuck = self._bus.stuck_for()
        if stuck > self.stall_timeout_s:
            return f"hardware bus stuck for {stuck:.1f} s (a call has not returned)"
        return None


async def heartbeat(liveness: Liveness, period_s: float = HEARTBEAT_PERIOD_S) -> None:
    """Proves the loop runs: if this task cannot be scheduled, the loop is stalled."""
    while True:
        liveness.loop_beat()
        await asyncio.sleep(period_s)


async def watchdog_pings(liveness: Liveness, notifier: SystemdNotifier) -> None:
    """WATCHDOG=1 at half of WATCHDOG_USEC, but only while everything progresses."""
    interval = notifier.watchdog_interval_s
    if interval is None:
        return
    withheld = False
    while True:
        reason = liveness.stalled()
        if reason is None:
            notifier.watchdog()
            if withheld:
                log.info("watchdog pings resumed")
            withheld = False
        elif not withheld:
            log.error("withholding watchdog ping", reason=reason)
            withheld = True
        await asyncio.sleep(interval / 2)


class StallGuard:
    """A thread outside the event loop that trips once when the daemon stops progressing.

    `on_stall` runs in the guard thread: it must be thread-safe (apply the safe state,
    then ask the loop to stop through call_soon_threadsafe).
    """

    def __init__(
        self,
        liveness: Liveness,
        on_stall: Callable[[str], None],
        check_period_s: float = HEARTBEAT_PERIOD_S,
    ) -> None:
        self._liveness = liveness
        self._on_stall = on_stall
        self._period = check_period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-guard", daemon=True)
        self.tripped: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _watch(self) -> None:
        while not self._stop.wait(self._period):
            reason = self._liveness.stalled()
            if reason is not None:
                self.tripped = reason
                log.critical("stall guard tripped; hardware to safe state", reason=reason)
                self._on_stall(reason)
                return
