"""The miner's hardware as the agent sees it: drivers built from config on the opened buses.

All blocking bus traffic runs on one worker thread (`call`), so transactions never
interleave on a bus and never block the event loop. `safe_state` is the exception: it
may run from any thread (stall guard, shutdown deadline) and must never raise; it first
cuts power at the hot-swap controllers over GPIO, without needing the I2C bus, then sets
the fans (over I2C with the `emc2305` backend: if that bus is stuck, the controller's
own watchdog runs the fans at full speed).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import structlog

from hashbay.agent.daemon.config import Config, site_caps
from hashbay.agent.daemon.liveness import BusProgress
from hashbay.agent.hardware.bus_backends import Buses
from hashbay.agent.hardware.fans import FanReader, build_fans
from hashbay.agent.hardware.slot_hw import SlotHardware
from hashbay.drivers.envelope import FanLimits, SafetyEnvelope
from hashbay.drivers.errors import HardwareError, ProtocolError
from hashbay.drivers.fan import FanDevice, FanReading
from hashbay.drivers.pmbus import Psu, PsuTelemetry

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
    psu: PsuTelemetry | None = None
    psu_problems: tuple[str, ...] = ()


def envelope_from(config: Config) -> SafetyEnvelope:
    limits = config.limits
    return SafetyEnvelope(
        FanLimits(limits.fan_duty_min, limits.fan_duty_max),
        site_caps(config),
        limits.psu_power_max_w,
    )


class Rig:
    def __init__(self, config: Config, buses: Buses) -> None:
        self.buses = buses
        self.clock = buses.clock
        self._safe_fan_duty = config.limits.safe_fan_duty
        self.envelope = envelope_from(config)
        factory = buses.pin_factory
        self.fans: list[FanDevice] = build_fans(config, buses, self.envelope)
        self._fan_reader = FanReader(self.fans)
        pec = config.hardware.pmbus_pec
        self.psu = Psu(buses.i2c, config.hardware.psu_address, pec=pec)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._presence_listeners: dict[int, Callable[[], None]] = {}
        self._alert_listeners: dict[int, Callable[[], None]] = {}
        self.slots = [
            SlotHardware(
                i,
                s,
                buses.i2c,
                factory,
                self.envelope,
                pec=pec,
                debounce_s=config.hardware.presence_debounce_s,
                clock=buses.clock,
                on_presence_edge=self._relay(self._presence_listeners, i),
                on_alert=self._relay(self._alert_listeners, i),
                bus_errors=buses.i2c.errors,
            )
            for i, s in enumerate(config.slot)
        ]
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hw-bus")
        self.progress = BusProgress()
        self.last: RigSnapshot | None = None

    # -- threads -----------------------------------------------------------------------

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def on_presence_edge(self, slot: int, listener: Callable[[], None]) -> None:
        """Run `listener` in the event loop whenever slot's presence line moves."""
        self._presence_listeners[slot] = listener

    def on_alert(self, slot: int, listener: Callable[[], None]) -> None:
        """Run `listener` in the event loop after slot's alert line has cut its power."""
        self._alert_listeners[slot] = listener

    def _relay(self, listeners: dict[int, Callable[[], None]], slot: int) -> Callable[[], None]:
        def relay() -> None:  # runs in the GPIO library's (or the simulator's) thread
            listener = listeners.get(slot)
            loop = self._loop
            if listener is not None and loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(listener)

        return relay

    async def call(self, fn: Callable[[], T]) -> T:
        """Run blocking bus I/O on the hardware thread. Each call is timed from when the
        thread starts it: one that never returns is a stuck bus (the stall guard's
        concern); calls that wait in the queue behind others are only slow."""
        progress = self.progress

        def tracked() -> T:
            progress.begin()
            try:
                return fn()
            finally:
                progress.end()

        context = contextvars.copy_context()  # the caller's log context (slot, serial)
        return await asyncio.get_running_loop().run_in_executor(self._worker, context.run, tracked)

    # -- reading -----------------------------------------------------------------------

    def poll(self) -> RigSnapshot:
        psu: PsuTelemetry | None = None
        problems: tuple[str, ...] = ()
        try:
            psu = self.psu.read_telemetry()
            problems = self.psu.status().problems()
        except (HardwareError, ProtocolError) as exc:
            problems = (f"PSU unreadable: {exc}",)
        snapshot = RigSnapshot(
            taken_at=time.time(),
            fans=self._fan_reader.read_all(),
            slots=tuple(
                SlotReading(hw.index, hw.pins.present(), hw.pins.power_enabled) for hw in self.slots
            ),
            psu=psu,
            psu_problems=problems,
        )
        self.last = snapshot
        return snapshot

    def fans_stalled(self) -> int:
        last = self.last
        return sum(f.stalled for f in last.fans) if last is not None else 0

    # -- the safe state ----------------------------------------------------------------

    def safe_state(self) -> None:
        """Fans to the safe duty, every board unpowered and held in reset. Never raises."""
        for hw in self.slots:
            try:
                hw.safe()
            except Exception:
                log.critical("safe state: slot not powered off", slot=hw.index, exc_info=True)
        for fan in self.fans:
            try:
                fan.set_duty(self._safe_fan_duty)
            except Exception:
                log.critical("safe state: fan not set", fan=fan.name, exc_info=True)

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
        for fan in self.fans:
            fan.close()
        for hw in self.slots:
            hw.close()
        self.buses.close()
