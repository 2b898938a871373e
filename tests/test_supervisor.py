"""Supervisor: restart policies, ordered shutdown with the safe state first, bounded in time."""

from __future__ import annotations

import asyncio
import itertools
import threading

import pytest
from structlog.testing import capture_logs

from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.agent.daemon.supervisor import EXIT_SOFTWARE, Backoff, Policy, Service, Supervisor

FAST = Backoff(initial_s=0.01, max_s=0.04, stable_s=10)


def make(
    services: list[Service], journal: list[str], timeout_s: float = 1.0, **kwargs: object
) -> Supervisor:
    return Supervisor(
        services,
        lambda: journal.append("safe-state"),
        SystemdNotifier({}),
        shutdown_timeout_s=timeout_s,
        backoff=FAST,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_restartable_service_is_restarted_with_growing_backoff() -> None:
    journal: list[str] = []
    starts: list[float] = []

    async def flaky() -> None:
        starts.append(asyncio.get_running_loop().time())
        raise RuntimeError("broker went away")

    supervisor = make([Service("mqtt", flaky, Policy.RESTART, "test")], journal)
    with capture_logs() as logs:
        task = asyncio.create_task(supervisor.run())
        async with asyncio.timeout(5):
            while len(starts) < 5:  # noqa: ASYNC110 - polling a plain list the service appends to
                await asyncio.sleep(0.01)
        supervisor.request_stop("test over")
        assert await task == 0
    delays = [e["delay_s"] for e in logs if e["event"] == "service crashed; restarting"]
    assert delays[:4] == [0.01, 0.02, 0.04, 0.04]  # doubling, capped at max_s
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= delay - 0.005 for gap, delay in zip(gaps, delays, strict=False))
    assert supervisor.restarts["mqtt"] >= 4


async def test_critical_failure_applies_safe_state_and_exits_nonzero() -> None:
    journal: list[str] = []

    async def poll() -> None:
        await asyncio.sleep(0.05)
        raise OSError("I2C bus gone")

    async def publisher() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            journal.append("publisher-cancelled")

    supervisor = make(
        [
            Service("publisher", publisher, Policy.RESTART, "test"),
            Service("poll", poll, Policy.CRITICAL, "test"),
        ],
        journal,
    )
    assert await supervisor.run() == EXIT_SOFTWARE
    assert journal == ["safe-state", "publisher-cancelled"]


async def test_shutdown_puts_hardware_safe_before_stopping_services_in_reverse_order() -> None:
    journal: list[str] = []

    def service(name: str) -> Service:
        async def run() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                journal.append(f"{name}-stopped")

        return Service(name, run, Policy.RESTART, "test")

    supervisor = make([service("first"), service("second"), service("third")], journal)
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.05)
    supervisor.request_stop("SIGTERM")
    assert await task == 0
    assert journal == ["safe-state", "third-stopped", "second-stopped", "first-stopped"]


async def test_a_service_that_ignores_cancellation_cannot_hold_shutdown_forever() -> None:
    journal: list[str] = []
    exited = threading.Event()
    codes: list[int] = []

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                journal.append("ignored-cancel")
                await asyncio.to_thread(exited.wait, 5)
                return

    def hard_exit(code: int) -> None:
        codes.append(code)
        exited.set()

    supervisor = make(
        [Service("stubborn", stubborn, Policy.RESTART, "test")],
        journal,
        timeout_s=0.3,
        hard_exit=hard_exit,
    )
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    supervisor.request_stop("SIGTERM")
    await task
    assert loop.time() - started < 2.0
    # The deadline thread applied the safe state a second time, then forced the exit.
    assert journal.count("safe-state") == 2
    assert codes == [EXIT_SOFTWARE]


async def test_safe_state_that_hangs_does_not_hang_shutdown() -> None:
    release = threading.Event()

    def stuck_safe_state() -> None:
        release.wait(3)

    async def idle() -> None:
        await asyncio.Event().wait()

    supervisor = Supervisor(
        [Service("idle", idle, Policy.RESTART, "test")],
        stuck_safe_state,
        SystemdNotifier({}),
        shutdown_timeout_s=0.4,
    )
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    supervisor.request_stop("SIGTERM")
    assert await task == 0
    assert loop.time() - started < 1.0
    release.set()


async def test_request_stop_outside_run_is_an_error() -> None:
    supervisor = make([], [])
    with pytest.raises(RuntimeError, match="not running"):
        supervisor.request_stop("early")
