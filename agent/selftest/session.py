"""What the steps of a self-test share: the config, the opened buses, the rig once it is
built, what earlier steps learned (who answers, which modules are trusted, what makes
powering unsafe), and the report they add to."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hashbay.agent.daemon.config import Config
from hashbay.agent.hardware.bus_backends import Buses
from hashbay.agent.hardware.rig import Rig
from hashbay.agent.selftest.report import Check, Report, Verdict
from hashbay.agent.selftest.settings import SelfTestSettings
from hashbay.drivers.eeprom import BoardIdentity

T = TypeVar("T")
WAIT_POLL_S = 0.01


@dataclass
class Session:
    config: Config
    buses: Buses
    power: bool  # whether modules may be powered to count their chains
    report: Report
    on_check: Callable[[Check], None] = lambda check: None
    rig: Rig | None = None
    answering: frozenset[int] = frozenset()  # I2C addresses that answered the scan
    seated: dict[int, bool] = field(default_factory=dict)
    trusted: dict[int, BoardIdentity] = field(default_factory=dict)  # admitted by the envelope
    unsafe: list[str] = field(default_factory=list)  # why no module may be powered
    slot_unsafe: dict[int, str] = field(default_factory=dict)  # why this slot's may not

    def record(self, part: str, item: str, verdict: Verdict, detail: str, **data: Any) -> Check:
        check = Check(part, item, verdict, detail, data)
        self.report.checks.append(check)
        self.on_check(check)
        return check

    def hardware(self) -> Rig:
        if self.rig is None:
            raise RuntimeError("the rig is not built")  # the walk skips such steps
        return self.rig

    async def io(self, fn: Callable[[], T]) -> T:
        """Blocking bus I/O on the rig's hardware thread, as the agent does it."""
        return await self.hardware().call(fn)

    @property
    def timings(self) -> SelfTestSettings:
        """Waits in seconds of the bus clock: real seconds on a board, simulated seconds
        on the simulated rig."""
        return self.config.selftest

    async def wait_s(self, seconds: float) -> None:
        """Let `seconds` pass on the bus clock (which the simulated rig may run faster)."""
        clock = self.buses.clock
        end = clock() + seconds
        while clock() < end:  # noqa: ASYNC110 - the bus clock has no events to wait on
            await asyncio.sleep(WAIT_POLL_S)
