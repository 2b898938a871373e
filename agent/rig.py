"""The miner's hardware as the agent sees it: drivers built from config on the opened buses.

All blocking bus traffic runs on one worker thread (`call`), so transactions never
interleave on a bus and never block the event loop. `safe_state` is the exception: it
may run from any thread (stall guard, shutdown deadline) and must never raise.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import structlog

from hashbay.agent.buses import Buses
from hashbay.agent.config import Config
from hashbay.drivers.envelope import BoardLimits, FanLimits, SafetyEnvelope
from hashbay.drivers.fan import Fan, FanReading
from hashbay.drivers.slot_pins import SlotPins

log = structlog.get_logger("hashbay.rig")
T = TypeVar("T")


@dataclass(frozen=True)
class SlotReading:
    slot: int
    present: bool
    powered: bool


@dataclass(frozen=True)
class RigSnapshot:
    taken_at: float
    fans: tuple[FanReading, ...]
    slots: tuple[SlotReading, ...]


def envelope_from(config: Config) -> SafetyEnvelope:
    limits = config.limits
    caps = BoardLimits(
        vout_min_v=limits.board_vout_min_v,
        vout_max_v=limits.board_vout_max_v,
        freq_min_mhz=limits.chip_freq_min_mhz,
        freq_max_mhz=limits.chip_freq_max_mhz,
        power_max_w=limits.board_power_max_w,
    )
    return SafetyEnvelope(
        FanLimits(limits.fan_duty_min, limits.fan_duty_max), caps, limits.psu_power_max_w
    )


class Rig:
    def __init__(self, config: Config, buses: Buses) -> None:
        self._buses = buses
        self._safe_fan_duty = config.limits.safe_fan_duty
        self.envelope = envelope_from(config)
        factory = buses.pin_factory
        self.fans = [
            Fan(f"fan{i}", f.pwm_pin, f.tach_pin, factory, self.envelope, clock=buses.clock)
            for i, f in enumerate(config.fan)
        ]
        self.slots = [
            SlotPins(s.presence_pin, s.power_pin, s.reset_pin, s.led_pin, factory)
            for s in config.slot
        ]
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hw-bus")

    async def call(self, fn: Callable[[], T]) -> T:
        """Run blocking bus I/O on the hardware thread."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn)

    def poll(self) -> RigSnapshot:
        return RigSnapshot(
            taken_at=time.time(),
            fans=tuple(fan.read() for fan in self.fans),
            slots=tuple(
                SlotReading(i, pins.present(), pins.power_enabled)
                for i, pins in enumerate(self.slots)
            ),
        )

    def safe_state(self) -> None:
        """Fans to the safe duty, every board unpowered and held in reset. Never raises."""
        for fan in self.fans:
            try:
                fan.set_duty(self._safe_fan_duty)
            except Exception:
                log.critical("safe state: fan not set", fan=fan.name, exc_info=True)
        for slot, pins in enumerate(self.slots):
            try:
                pins.safe()
            except Exception:
                log.critical("safe state: slot not powered off", slot=slot, exc_info=True)

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
        for fan in self.fans:
            fan.close()
        for pins in self.slots:
            pins.close()
        self._buses.close()
