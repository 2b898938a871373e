"""Bringing a module's power up, step by step: the one sequence every caller uses.

Hot-swap enable and OPERATION on (chain held in reset), power good from the hot-swap
controller, then the module's DC-DC — which only joins the bus once its input is up —
programmed to the rail voltage and switched on, and the rail read back within
RAIL_TOLERANCE. Every value passes the safe envelope inside the drivers; each step has
`timeout_s`. A step that fails raises PowerUpFailed naming it; powering off again is
the caller's job (SlotHardware.power_off tries every step).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from hashbay.drivers.errors import HardwareError, ProtocolError

RAIL_TOLERANCE = 0.05
DCDC_ANSWER_TRIES = 50
POLL_S = 0.02

Call = Callable[[Callable[[], Any]], Awaitable[Any]]


class PowerUpFailed(HardwareError):
    """A step of the power-up did not happen in time; the message says which."""


class PoweredSlot(Protocol):
    def hotswap_on(self) -> None: ...

    def power_good(self) -> bool: ...

    def rail_on(self, volts: float) -> float: ...

    def rail_v(self) -> float: ...


async def power_up(slot: PoweredSlot, volts: float, *, call: Call, timeout_s: float) -> float:
    """Power the slot's module to `volts` on its board rail; returns the volts written."""
    await call(slot.hotswap_on)
    if not await until(slot.power_good, call=call, timeout_s=timeout_s):
        raise PowerUpFailed("hot-swap controller did not report power good")
    written: float | None = None
    for _ in range(DCDC_ANSWER_TRIES):  # the DC-DC joins the bus once its input is up
        try:
            written = await call(lambda: slot.rail_on(volts))
            break
        except (HardwareError, ProtocolError):  # not on the bus yet, or a noisy read
            await asyncio.sleep(POLL_S)
    if written is None:
        raise PowerUpFailed("DC-DC converter did not answer after power-up")

    def rail_ok() -> bool:
        return abs(slot.rail_v() - volts) <= volts * RAIL_TOLERANCE

    if not await until(rail_ok, call=call, timeout_s=timeout_s):
        raise PowerUpFailed(f"board rail did not reach {volts:.2f} V")
    return float(written)


async def until(check: Callable[[], bool], *, call: Call, timeout_s: float) -> bool:
    """Ask `check` on the hardware thread until it holds or `timeout_s` has passed; a
    device that does not answer yet, or a read garbled on a noisy bus, counts as not yet."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            if await call(check):
                return True
        except (HardwareError, ProtocolError):
            pass
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(POLL_S)
