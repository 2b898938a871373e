"""The autotuner's view of a live board: its chain on the UART and its rail on PMBus.

The slot controller keeps the board hashing (jobs flow, nonces are verified and counted
per chip) while the tuner moves clocks and the voltage through this adapter; every value
still passes the safety envelope in the drivers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from hashbay.agent.hardware.slot_hw import SlotHardware
from hashbay.drivers.bm13xx.chain import Bm13xxChain
from hashbay.drivers.envelope import SafetyEnvelope
from hashbay.drivers.errors import HardwareError, ProtocolError

RAIL_SETTLE_TOLERANCE_V = 0.05
RAIL_SETTLE_TIMEOUT_S = 2.0
POWER_READINGS = 3
WAIT_POLL_S = 0.02


class ChainTuneTarget:
    def __init__(
        self,
        slot: int,
        chain: Bm13xxChain,
        hw: SlotHardware,
        envelope: SafetyEnvelope,
        call: Callable[[Callable[[], Any]], Awaitable[Any]],
        *,
        hashes_per_mhz: float,
        ramp_step_mhz: float,
        ramp_step_delay_s: float,
        clock: Callable[[], float],
        volts_now: float,
        on_voltage: Callable[[float], None] = lambda volts: None,
    ) -> None:
        self._slot = slot
        self._chain = chain
        self._hw = hw
        self._envelope = envelope
        self._call = call
        self._hashes_per_mhz = hashes_per_mhz
        self._ramp_step_mhz = ramp_step_mhz
        self._ramp_step_delay_s = ramp_step_delay_s
        self._on_voltage = on_voltage
        self._clock = clock
        self.voltage_now = volts_now  # where the tuner leaves the rail, for the caller

    @property
    def chip_count(self) -> int:
        return len(self._chain.counters.chips)

    @property
    def voltage_range_v(self) -> tuple[float, float]:
        limits = self._envelope.board(self._slot)
        return limits.vout_min_v, limits.vout_max_v

    @property
    def freq_range_mhz(self) -> tuple[float, float]:
        limits = self._envelope.board(self._slot)
        return limits.freq_min_mhz, limits.freq_max_mhz

    @property
    def hashes_per_mhz(self) -> float:
        return self._hashes_per_mhz

    async def set_board_voltage(self, volts: float) -> float:
        applied: float = await self._call(lambda: self._hw.set_rail_v(volts))
        self.voltage_now = applied
        self._on_voltage(applied)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RAIL_SETTLE_TIMEOUT_S
        while loop.time() < deadline:
            try:
                if abs(await self._call(self._hw.rail_v) - applied) <= RAIL_SETTLE_TOLERANCE_V:
                    break
            except (HardwareError, ProtocolError):
                pass
            await asyncio.sleep(0.05)
        return applied

    async def set_chip_freqs(self, freqs_mhz: Sequence[float]) -> list[float]:
        return await self._chain.ramp_chips(
            freqs_mhz, step_mhz=self._ramp_step_mhz, step_delay_s=self._ramp_step_delay_s
        )

    def chip_counters(self) -> list[tuple[int, int]]:
        return [(chip.nonces, chip.hw_errors) for chip in self._chain.counters.chips]

    async def board_power_w(self) -> float | None:
        readings = []
        for _ in range(POWER_READINGS):
            try:
                rails = await self._call(self._hw.read_rails)
            except (HardwareError, ProtocolError):
                continue
            if rails.dcdc is not None:
                readings.append(rails.dcdc.vout_v * rails.dcdc.iout_a)
            await asyncio.sleep(0.1)
        return sum(readings) / len(readings) if readings else None

    def now_s(self) -> float:
        return self._clock()

    async def wait(self, seconds: float) -> None:
        """Wait in the rig's clock (simulated seconds run faster than real ones)."""
        until = self._clock() + seconds
        while (left := until - self._clock()) > 0:  # noqa: ASYNC110 - a clock, not an event
            await asyncio.sleep(min(left, WAIT_POLL_S))
