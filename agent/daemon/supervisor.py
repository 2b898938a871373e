"""Runs the agent's services in one TaskGroup and owns the ordered, bounded shutdown.

Shutdown order: hardware to its safe state first (fans up, boards off), then the services
are cancelled in reverse start order so that late ones (publishers) can report the end.
Each service has a written-down policy for crashes: RESTART with backoff when carrying on
is harmless, CRITICAL (safe state, non-zero exit) when the daemon would otherwise run
blind. If the shutdown itself hangs, a deadline thread applies the safe state again and
ends the process.
"""

from __future__ import annotations

import asyncio
import enum
import os
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from hashbay.agent.daemon.sdnotify import SystemdNotifier

log = structlog.get_logger("hashbay.supervisor")

EXIT_OK = 0
EXIT_SOFTWARE = 70  # sysexits EX_SOFTWARE: a critical service failed or the daemon stalled


class Policy(enum.Enum):
    RESTART = "restart"
    CRITICAL = "critical"


@dataclass(frozen=True)
class Service:
    name: str
    run: Callable[[], Coroutine[Any, Any, None]]
    policy: Policy
    why: str


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 0.5
    max_s: float = 30.0
    stable_s: float = 60.0  # a run at least this long resets the delay


class Supervisor:
    def __init__(
        self,
        services: list[Service],
        safe_state: Callable[[], None],
        notifier: SystemdNotifier,
        *,
        shutdown_timeout_s: float,
        backoff: Backoff | None = None,
        hard_exit: Callable[[int], None] = os._exit,
    ) -> None:
        self._services = services
        self._safe_state = safe_state
        self._notifier = notifier
        self._timeout = shutdown_timeout_s
        self._backoff = backoff or Backoff()
        self._hard_exit = hard_exit
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit_code = EXIT_OK
        self._reason = ""
        self.restarts: dict[str, int] = {s.name: 0 for s in services}

    def request_stop(self, reason: str, exit_code: int = EXIT_OK) -> None:
        """Begin the ordered shutdown; the first non-zero exit code wins. Loop thread only."""
        if self._stop is None:
            raise RuntimeError("supervisor is not running")
        if exit_code != EXIT_OK and self._exit_code == EXIT_OK:
            self._exit_code = exit_code
        if self._stop.is_set():
            log.info("already stopping", reason=reason)
            return
        self._reason = reason
        self._stop.set()

    def request_stop_threadsafe(self, reason: str, exit_code: int = EXIT_OK) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.request_stop, reason, exit_code)

    async def run(self) -> int:
        """Run every service until a stop is requested; returns the process exit code."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        # Leave room after the deadline for the last safe-state attempt to finish.
        deadline = threading.Timer(self._timeout + 1.0, self._deadline_passed)
        deadline.daemon = True
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._keep(s), name=s.name) for s in self._services]
                await self._stop.wait()
                deadline.start()
                await self._shut_down(tasks)
        finally:
            deadline.cancel()
        log.info("stopped", reason=self._reason, exit_code=self._exit_code)
        return self._exit_code

    async def _shut_down(self, tasks: list[asyncio.Task[None]]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        log.info("stopping", reason=self._reason)
        self._notifier.stopping(f"stopping: {self._reason}")
        await self._apply_safe_state(self._timeout / 2)
        for task in reversed(tasks):
            task.cancel()
            remaining = deadline - loop.time()
            done, _ = await asyncio.wait({task}, timeout=max(remaining, 0.0))
            if not done:
                log.error("service did not stop in time", service=task.get_name())

    async def _apply_safe_state(self, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.to_thread(self._safe_state)
            log.info("hardware in safe state")
        except TimeoutError:
            log.critical("safe state not confirmed in time", timeout_s=timeout_s)
        except Exception:
            log.critical("safe state failed", exc_info=True)

    def _deadline_passed(self) -> None:
        log.critical("shutdown overran its deadline; forcing safe state and exit")
        try:
            self._safe_state()
        finally:
            self._hard_exit(self._exit_code or EXIT_SOFTWARE)

    async def _keep(self, service: Service) -> None:
        loop = asyncio.get_running_loop()
        delay = self._backoff.initial_s
        bound = log.bind(service=service.name)
        while True:
            started = loop.time()
            try:
                await service.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if service.policy is Policy.CRITICAL:
                    bound.critical("critical service failed", exc_info=True)
                    self.request_stop(f"{service.name} failed: {exc}", EXIT_SOFTWARE)
                    return
                if loop.time() - started >= self._backoff.stable_s:
                    delay = self._backoff.initial_s
                self.restarts[service.name] += 1
                bound.error("service crashed; restarting", delay_s=delay, exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff.max_s)
            else:
                bound.info("service finished")
                return
