"""Thread names the kernel shows, so the simulator's threads can be told apart."""

from __future__ import annotations

import contextlib
import ctypes


def name_os_thread(name: str) -> None:
    """Give the calling thread a kernel-visible name, so per-thread CPU can be told apart
    from the agent's own (benchmarks read /proc/<pid>/task/*/comm)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
