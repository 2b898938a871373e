"""Log lines say which slot (and which module) they are about, whoever logs them: the
slot's task binds `slot` and `serial` in structlog's context, and it follows the slot's
work into the hardware thread."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from hashbay.agent.core.status import SlotState
from hashbay.agent.daemon.app import Agent
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.agent.hardware.buses import open_buses
from hashbay.agent.hardware.rig import Rig

from .support import rig_config
from .test_lifecycle import until

SERIAL = "HB0100001"  # the first module the simulated rig (seed 1) makes


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    config = rig_config(tmp_path, chips=42, modules=(0,), time_scale=20)
    made = Rig(config, open_buses(config))
    yield made
    made.safe_state()
    made.close()


async def test_a_line_logged_on_the_hardware_thread_carries_the_callers_slot(rig: Rig) -> None:
    def read() -> None:
        structlog.get_logger("hashbay.test").info("read on the hardware thread")

    async def slot_work() -> None:
        structlog.contextvars.bind_contextvars(slot=2, serial="HB0000042")
        await rig.call(read)

    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await asyncio.create_task(slot_work())
        await rig.call(read)  # from outside any slot: no slot
    mine, other = [line for line in logs if line["event"] == "read on the hardware thread"]
    assert (mine["slot"], mine["serial"]) == (2, "HB0000042")
    assert "slot" not in other and "serial" not in other


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    config = rig_config(tmp_path, chips=42, modules=(0,), time_scale=10)
    tune_dir = Path(config.agent.state_dir) / "tune"
    tune_dir.mkdir(parents=True, exist_ok=True)
    (tune_dir / f"{SERIAL}.json").write_text("{not a profile")  # the tune store complains
    made = Agent(config, notifier=SystemdNotifier({}))
    task = asyncio.create_task(made.run())
    yield made
    made.supervisor.request_stop("test over")
    assert await asyncio.wait_for(task, 15) == 0


async def test_lines_from_a_slots_task_carry_the_slot_whoever_logs_them(agent: Agent) -> None:
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await until(lambda: agent.controllers[0].state is SlotState.HASHING, what="hashing")
    ignored = [line for line in logs if line["event"].startswith("tune profile ignored")]
    assert ignored, "the tune store said nothing about the bad profile"
    assert all(line.get("slot") == 0 for line in ignored)  # the store knows nothing of slots
    states = [line for line in logs if line["event"] == "slot state"]
    hashing = [line for line in states if line["state"] == "hashing"]
    assert hashing and hashing[-1]["serial"] == SERIAL
