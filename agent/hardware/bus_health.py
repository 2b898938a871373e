"""Bus health of one slot's devices: how their transactions went, and which are noisy.

The I2C bus wrapper counts every transaction per address and how the failed ones failed
(NACK, PEC error, timeout, other bus error). A single failure is noise; a device that
fails a steady share of its transactions is a connector, a cable or a part going bad,
and a technician should hear of it before it costs a board. This module keeps a window
of those counts per device and judges the share that failed over it.

Pure logic over counts and a clock, like the health model: no I/O of its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from hashbay.agent.core.alarm_settings import AlarmSettings
from hashbay.agent.core.status import BusDevice
from hashbay.drivers.i2c import DeviceCounts

SLICES = 20  # the window moves in this many steps


def describe(device: BusDevice, window_s: float) -> str:
    """A noisy device in words, for the health reason, the event and the log."""
    kinds = [
        f"{count} {name}"
        for count, name in (
            (device.nacks, "NACKs"),
            (device.pec_errors, "PEC errors"),
            (device.timeouts, "timeouts"),
            (device.bus_errors, "bus errors"),
        )
        if count
    ]
    return (
        f"{device.device} (0x{device.address:02x}): {device.error_share:.0%} of its "
        f"transactions failed over the last {_duration(window_s)} "
        f"({', '.join(kinds) or 'none'} since start)"
    )


class BusNoise:
    """The devices of one slot, judged every time `update` is called (each health sample)."""

    def __init__(self, settings: AlarmSettings) -> None:
        self.settings = settings
        self._history: dict[int, deque[tuple[float, DeviceCounts]]] = {}
        self._noisy: set[int] = set()

    def update(
        self, now_s: float, devices: Sequence[tuple[str, int, DeviceCounts]]
    ) -> tuple[BusDevice, ...]:
        s = self.settings
        slice_s = s.bus_window_s / SLICES
        found = []
        for name, address, counts in devices:
            history = self._history.setdefault(address, deque())
            if history and now_s < history[-1][0]:
                history.clear()  # the clock went back: start afresh
            if not history or now_s - history[-1][0] >= slice_s:
                history.append((now_s, counts))
            while len(history) >= 2 and history[1][0] <= now_s - s.bus_window_s:
                history.popleft()
            base = history[0][1]
            transactions = counts.transactions - base.transactions
            failed = counts.failed - base.failed
            share = failed / transactions if transactions >= s.bus_min_transactions else 0.0
            noisy = share >= s.bus_error_share
            # Back below half the threshold before it is quiet again: no flapping.
            if address in self._noisy and not noisy and share >= s.bus_error_share / 2:
                noisy = True
            if noisy:
                self._noisy.add(address)
            else:
                self._noisy.discard(address)
            found.append(
                BusDevice(
                    name,
                    address,
                    counts.nacks,
                    counts.pec_errors,
                    counts.timeouts,
                    counts.bus_errors,
                    round(share, 4),
                    noisy,
                )
            )
        return tuple(found)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
