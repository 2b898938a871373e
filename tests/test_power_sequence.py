"""The power-up sequence the slot controllers and the self-test share, on the simulated
rig: each step that does not happen in time is named, nothing outside the envelope is
written, and a good module ends with its rail where it was asked to be."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from hashbay.agent.hardware.buses import open_buses
from hashbay.agent.hardware.power_sequence import PowerUpFailed, power_up
from hashbay.agent.hardware.rig import Rig
from hashbay.drivers.errors import SafetyViolation
from hashbay.tools.sim import faults
from tests.support import rig_config


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    config = rig_config(tmp_path, chips=42, modules=(0,), time_scale=20)
    made = Rig(config, open_buses(config))
    slot = made.slots[0]
    made.envelope.admit_board(0, slot.read_identity().limits)
    yield made
    made.safe_state()
    made.close()


def up(rig: Rig, volts: float) -> float:
    return asyncio.run(power_up(rig.slots[0], volts, call=rig.call, timeout_s=0.5))


def test_a_good_module_comes_up_with_its_rail_at_the_voltage_asked(rig: Rig) -> None:
    written = up(rig, 13.2)
    assert written == pytest.approx(13.2, abs=0.01)
    assert rig.slots[0].rail_v() == pytest.approx(13.2, rel=0.05)
    assert rig.slots[0].pins.power_enabled and rig.slots[0].pins.in_reset  # chain still held


def test_a_tripped_hot_swap_is_named(rig: Rig) -> None:
    rig.buses.sim.apply(faults.parse("hotswap-overcurrent 0"))
    with pytest.raises(PowerUpFailed, match=r"^hot-swap controller did not report power good$"):
        up(rig, 13.2)


def test_a_dcdc_that_never_joins_the_bus_is_named(rig: Rig) -> None:
    rig.buses.sim.slots[0].module.dcdc.lost = True
    with pytest.raises(PowerUpFailed, match=r"^DC-DC converter did not answer after power-up$"):
        up(rig, 13.2)


def test_a_latch_left_from_before_is_cleared_and_the_rail_comes_up(rig: Rig) -> None:
    rig.buses.sim.apply(faults.parse("dcdc-overcurrent 0"))
    assert up(rig, 13.2) == pytest.approx(13.2, abs=0.01)


def test_a_rail_that_trips_again_at_once_is_named(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shorted rail: its over-current latch sets again as soon as it is cleared."""
    dcdc = rig.buses.sim.slots[0].module.dcdc
    clear = dcdc.clear_faults

    def clear_but_still_shorted() -> None:
        clear()
        dcdc.inject_overcurrent()

    monkeypatch.setattr(dcdc, "clear_faults", clear_but_still_shorted)
    with pytest.raises(PowerUpFailed, match=r"^board rail did not reach 13\.20 V$"):
        up(rig, 13.2)


def test_a_voltage_outside_the_modules_limits_is_refused_before_the_dcdc_is_written(
    rig: Rig,
) -> None:
    dcdc = rig.buses.sim.slots[0].module.dcdc
    with pytest.raises(SafetyViolation):
        up(rig, rig.envelope.board(0).vout_max_v + 0.5)
    assert not dcdc.output_on
