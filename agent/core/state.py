"""What the agent knows right now: the latest rig snapshot and every slot's status.

Publishers and displays read from here instead of touching hardware, so a slow reader
(console, API, MQTT) can never delay the hardware loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from hashbay.agent.core.status import SlotState, SlotStatus
from hashbay.agent.hardware.rig import RigSnapshot

HASHING = (SlotState.HASHING, SlotState.DEGRADED)


class AgentState:
    def __init__(self, name: str) -> None:
        self.name = name
        self.started_at = time.time()
        self.snapshot: RigSnapshot | None = None
        self.first_poll = asyncio.Event()
        self.slot_statuses: Callable[[], list[SlotStatus]] = list
        self.extra: dict[str, Callable[[], Any]] = {}  # other services' figures for status
        self.on_update: Callable[[], None] = lambda: None  # publishers waiting for news
        self.noise_estimate: Callable[[], float | None] = lambda: None  # the thermal service's

    def update(self, snapshot: RigSnapshot) -> None:
        self.snapshot = snapshot
        self.first_poll.set()
        self.on_update()

    def hashrate_hs(self) -> float:
        return sum(
            s.health.hashrate_hs for s in self.slot_statuses() if s.health and s.state in HASHING
        )

    def noise_dba(self) -> float | None:
        """Estimated fan noise (from the fans' measured speeds); None when unknown or silent."""
        return self.noise_estimate()

    def summary(self) -> str:
        """One line for systemd's STATUS= and the console title."""
        snap = self.snapshot
        if snap is None:
            return "starting"
        slots = self.slot_statuses()
        hashing = sum(s.state in HASHING for s in slots)
        stalled = sum(f.stalled for f in snap.fans)
        parts = [f"{hashing}/{len(snap.slots)} slots hashing {self.hashrate_hs() / 1e12:.1f} TH/s"]
        if snap.psu is not None:
            parts.append(f"PSU {snap.psu.pin_w:.0f} W")
        parts.append(f"fans {len(snap.fans) - stalled}/{len(snap.fans)} ok")
        return "; ".join(parts)

    def miner_json(self) -> dict[str, Any]:
        """The miner-level summary that MQTT and the APIs publish."""
        snap = self.snapshot
        data: dict[str, Any] = {
            "name": self.name,
            "started_at": round(self.started_at),  # not uptime: a constant keeps state quiet
            "hashrate_hs": self.hashrate_hs(),
            "psu_input_power_w": snap.psu.pin_w if snap and snap.psu else None,
            "fan_noise_dba": self.noise_dba(),
            "slots": {str(s.slot): s.state.value for s in self.slot_statuses()},
        }
        if snap is not None:
            data["fans"] = [
                {"duty": round(f.duty, 2), "rpm": round(f.rpm, -2), "stalled": f.stalled}
                for f in snap.fans
            ]
            if snap.psu is not None:
                data["psu"] = {  # floats, so publishers apply their deadbands
                    "input_w": round(snap.psu.pin_w, 0),
                    "output_w": round(snap.psu.pout_w, 0),
                    "vin_v": round(snap.psu.vin_v, 1),
                    "temp_c": round(snap.psu.temp_c, 1),
                }
            data["psu_problems"] = list(snap.psu_problems)
        for key, figure in self.extra.items():
            data[key] = figure()
        return data
