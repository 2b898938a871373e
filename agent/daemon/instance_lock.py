"""One process drives the miner's hardware at a time: the daemon, or a self-test.

Both take an exclusive `flock` on RUNTIME_DIR/agent.lock before they touch a bus. The
kernel drops the lock when its holder exits, however it exits (even SIGKILL), so a stale
file never blocks anybody, and the check does not depend on the control socket being
enabled or reachable. The holder writes who it is into the file, so a refusal can name it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_NAME = "agent.lock"


class HardwareBusy(Exception):
    """Another hashbay process holds the hardware; the message names it."""


class InstanceLock:
    """The lock on one runtime directory's hardware, held until `release` (or exit)."""

    def __init__(self, runtime_dir: str | Path, holder: str) -> None:
        self.path = Path(runtime_dir) / LOCK_NAME
        self._holder = holder
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise HardwareBusy naming the holder (OSError if the file
        cannot be opened at all)."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise HardwareBusy(
                f"{holder or 'another hashbay process'} holds {self.path}: it is driving "
                "this hardware; stop it first (sudo systemctl stop hashbay-agent)"
            ) from None
        self._fd = fd
        with contextlib.suppress(OSError):  # read-only file: the lock still holds
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{self._holder} (pid {os.getpid()})\n".encode(), 0)

    def _open(self) -> int:
        flags = os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            return os.open(self.path, flags | os.O_RDWR | os.O_CREAT, 0o660)
        except PermissionError:
            # Made by another user (a root self-test before the daemon): locking needs
            # only an open file, not a writable one.
            return os.open(self.path, flags | os.O_RDONLY)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace")
    except OSError:
        return ""
    line = text.splitlines()[0] if text.strip() else ""
    return "".join(c for c in line if c.isprintable())[:120]
