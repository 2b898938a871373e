"""What the agent knows right now: the latest hardware snapshot and when it started.

Services read from here instead of touching hardware, so a slow reader (console, API,
MQTT) can never delay the hardware loop.
"""

from __future__ import annotations

import asyncio
import time

from hashbay.agent.rig import RigSnapshot


class AgentState:
    def __init__(self, name: str) -> None:
        self.name = name
        self.started_at = time.time()
        self.snapshot: RigSnapshot | None = None
        self.first_poll = asyncio.Event()

    def update(self, snapshot: RigSnapshot) -> None:
        self.snapshot = snapshot
        self.first_poll.set()

    def summary(self) -> str:
        """One line for systemd's STATUS= and the console title."""
        snap = self.snapshot
        if snap is None:
            return "starting"
        present = sum(s.present for s in snap.slots)
        powered = sum(s.powered for s in snap.slots)
        stalled = sum(f.stalled for f in snap.fans)
        fans = f"fans {len(snap.fans) - stalled}/{len(snap.fans)} ok"
        return f"slots {present}/{len(snap.slots)} present, {powered} powered; {fans}"
