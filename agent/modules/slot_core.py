"""One slot's shared state and how it is told: the lifecycle state and status, the seated
module, the operating point; transitions, events and log lines; interrupts of the loop.

The slot controller and its parts (power, tuning, the protection link, the hashing loop)
all work on one SlotCore, so each part reads and reports the slot the same way."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import structlog

from hashbay.agent.core.events import Event, EventKind
from hashbay.agent.core.fault_codes import Fault
from hashbay.agent.core.status import SlotState, SlotStatus
from hashbay.agent.hardware.slot_hw import SlotHardware
from hashbay.agent.modules.lifecycle import Trigger, next_state
from hashbay.agent.modules.seated import SeatedModule
from hashbay.agent.modules.slot_alarms import SlotAlarms
from hashbay.agent.modules.slot_services import Services, SlotSettings
from hashbay.agent.power.operating_point import OperatingPoint
from hashbay.drivers.bm13xx.chain import Bm13xxChain

log = structlog.get_logger("hashbay.slots")


class SlotCore:
    def __init__(self, hw: SlotHardware, settings: SlotSettings, services: Services) -> None:
        self.hw = hw
        self.index = hw.index
        self.settings = settings
        self.svc = services
        self.state = SlotState.EMPTY
        self.status = SlotStatus(self.index, SlotState.EMPTY, detail="no module", since=time.time())
        self.transitions: list[tuple[SlotState, SlotState, str]] = []
        self.module: SeatedModule | None = None  # from identify to pull
        self.point: OperatingPoint | None = None  # while powered
        self.throttle = 1.0  # protection's clock scale
        self.hashing_since_s: float | None = None
        self.fault_reason = ""
        self.fault_cause = Fault.INTERNAL_ERROR
        self.fault_retry = True  # False: only a technician's reset (or a new module) retries
        self.nudged = asyncio.Event()  # re-plan now: the governor or protection moved
        self.interrupt = asyncio.Event()
        self.interrupts: list[tuple[Trigger, asyncio.Future[SlotState]]] = []
        self.alarms = SlotAlarms(
            self.index,
            services.alarms,
            hw.pins,
            lambda: self.status.serial,
            services.alarm_settings.bus_window_s,
        )
        self.log = log.bind(slot=self.index)
        self._chain_stack = contextlib.AsyncExitStack()

    # -- what is seated ----------------------------------------------------------------

    @property
    def chain(self) -> Bm13xxChain | None:
        return self.module.chain if self.module is not None else None

    def seated(self) -> SeatedModule:
        if self.module is None:
            raise RuntimeError("no module in a state that needs one")
        return self.module

    def live_chain(self) -> Bm13xxChain:
        chain = self.chain
        if chain is None:
            raise RuntimeError("no chain in a state that needs one")
        return chain

    async def attach(self, chain: Bm13xxChain) -> None:
        """The seated module's chain from now: its port closed and its reader detached
        by `close_chain`."""
        self._chain_stack.callback(chain.port.close)
        await self._chain_stack.enter_async_context(chain.attached())
        self.seated().chain = chain

    async def close_chain(self) -> None:
        if self.module is not None:
            self.module.chain = None
        await self._chain_stack.aclose()
        self._chain_stack = contextlib.AsyncExitStack()

    # -- telling -----------------------------------------------------------------------

    def go(self, trigger: Trigger, why: str, **status: Any) -> None:
        before = self.state
        after = next_state(before, trigger)
        self.state = after
        self.transitions.append((before, after, why))
        status = {"fault_code": None, **status}  # a code outlives no transition
        self.set_status(state=after, detail=why, since=time.time(), **status)
        self.log.info(
            "slot state", serial=self.status.serial, state=str(after), was=str(before), why=why
        )

    def set_status(self, **changes: Any) -> None:
        self.status = replace(self.status, **changes)
        self.svc.on_change()

    def event(self, kind: EventKind, message: str, **details: Any) -> None:
        self.svc.events.publish(
            Event(kind, self.index, message, serial=self.status.serial, details=details)
        )

    # -- interrupting the loop -----------------------------------------------------------

    def nudge(self) -> None:
        """The governor (or protection) changed its mind: re-plan now, not at the next sample."""
        self.nudged.set()

    async def request(self, trigger: Trigger) -> SlotState:
        """Interrupt whatever the slot is doing with `trigger`; the state it leads to."""
        future: asyncio.Future[SlotState] = asyncio.get_running_loop().create_future()
        self.interrupts.append((trigger, future))
        self.interrupt.set()
        return await future

    def request_fault(self, why: str, cause: Fault) -> None:
        """Fault the slot from outside its loop (a protection cut), without waiting."""
        self.fault_reason, self.fault_cause, self.fault_retry = why, cause, True
        future: asyncio.Future[SlotState] = asyncio.get_running_loop().create_future()
        self.interrupts.append((Trigger.FAULT, future))
        self.interrupt.set()

    def expect_volts(self, volts: float) -> None:
        """The rail is being set to `volts`: health judges the measured rail against it."""
        if self.module is not None:
            self.module.health.set_board_v_target(volts)

    async def keep_prediction(self, state_of: Callable[[str], object | None]) -> None:
        """Write the module's predictor state under its serial, off the event loop."""
        serial = self.module.serial if self.module is not None else None
        state = state_of(serial) if serial is not None else None
        if serial is not None and state is not None:
            await asyncio.to_thread(self.svc.predictions.save, serial, state)
