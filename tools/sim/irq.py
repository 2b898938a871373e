"""Edges of the simulated rig's interrupt lines, delivered from a thread of their own.

On a real board a GPIO edge reaches the agent through the GPIO library's callback thread
(lgpio's), which the kernel wakes when the line moves; a mock pin instead runs the
callbacks in whichever thread drives it. Driving the over-temperature alert lines from
this thread, not the simulator's stepping thread, keeps what the agent does on that edge
(power off, tell the loop) from waiting for the simulator and measurable apart from it —
as it is on hardware, where it competes for the CPU like any other thread.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

from hashbay.tools.sim.threads import name_os_thread

Drive = tuple[Any, bool, Callable[[], None] | None]  # pin, level, what to do right after


class IrqLines:
    """Drives pins to levels in order, on the `sim-irq` thread once started (inline
    before that, so a rig stepped by hand behaves the same)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Drive | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def drive(self, pin: Any, level: bool, after: Callable[[], None] | None = None) -> None:
        if self._thread is None:
            _drive(pin, level, after)
        else:
            self._queue.put((pin, level, after))

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sim-irq", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=2)

    def _run(self) -> None:
        name_os_thread("sim-irq")
        while (item := self._queue.get()) is not None:
            with contextlib.suppress(Exception):  # a host callback's failure is the host's
                _drive(*item)


def _drive(pin: Any, level: bool, after: Callable[[], None] | None) -> None:
    if level:
        pin.drive_high()
    else:
        pin.drive_low()
    if after is not None:
        after()
