"""The sd_notify protocol in plain Python: one datagram per state change to $NOTIFY_SOCKET.

Plain socket code instead of a dependency: the protocol is a few `KEY=value` lines over
an AF_UNIX datagram socket, and it must keep working when everything else is failing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger("hashbay.sdnotify")


class SystemdNotifier:
    """Talks to the service manager; silent no-op when not started by systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_s = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        if self._address is not None:
            # Non-blocking: a service manager that is slow to read must never stall the loop.
            self._sock = socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            )

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """WATCHDOG_USEC in seconds, when the watchdog is armed for this process."""
        return self._watchdog_s

    def notify(self, **fields: str) -> bool:
        """Send one message; returns False (and logs) if it could not be delivered."""
        if self._sock is None or self._address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:
            log.warning("sd_notify failed", error=str(exc))
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify(READY="1", STATUS=status)

    def status(self, status: str) -> bool:
        return self.notify(STATUS=status)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG="1")

    def stopping(self, status: str) -> bool:
        return self.notify(STOPPING="1", STATUS=status)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _socket_address(value: str) -> str | None:
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    log.warning("ignoring NOTIFY_SOCKET that is neither a path nor abstract", value=value)
    return None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000
