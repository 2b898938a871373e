"""The safe envelope: which limits are accepted, what is refused, and what each refusal says."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import pytest

from hashbay.drivers.envelope import BoardLimits, FanLimits, SafetyEnvelope
from hashbay.drivers.errors import SafetyViolation

SITE = BoardLimits(
    vout_min_v=11.0, vout_max_v=15.5, freq_min_mhz=50, freq_max_mhz=800, power_max_w=1800
)
MODULE = BoardLimits(
    vout_min_v=12.0, vout_max_v=14.5, freq_min_mhz=400, freq_max_mhz=650, power_max_w=1600
)
SLOT = 1


@pytest.fixture
def envelope() -> SafetyEnvelope:
    envelope = SafetyEnvelope(FanLimits(0.2, 0.9), SITE, psu_power_max_w=4500)
    envelope.admit_board(SLOT, MODULE)
    return envelope


# -- limits that cannot be limits ---------------------------------------------------------


@pytest.mark.parametrize("duties", [(0.0, 0.0), (0.0, 1.0), (0.3, 0.3), (1.0, 1.0)])
def test_fan_limits_from_off_to_full_are_accepted(duties: tuple[float, float]) -> None:
    assert FanLimits(*duties).duty_max == duties[1]


@pytest.mark.parametrize("duties", [(0.6, 0.5), (-0.1, 0.5), (0.2, 1.01), (0.2, 2.0)])
def test_fan_limits_inverted_negative_or_above_full_are_refused(
    duties: tuple[float, float],
) -> None:
    with pytest.raises(ValueError, match="0 <= min <= max <= 1"):
        FanLimits(*duties)


def test_board_limits_just_above_zero_are_still_limits() -> None:
    tiny = BoardLimits(0.5, 0.8, 0.5, 0.9, 0.5)
    assert (tiny.vout_min_v, tiny.freq_min_mhz, tiny.power_max_w) == (0.5, 0.5, 0.5)


def test_board_limits_may_pin_a_single_value() -> None:
    pinned = BoardLimits(13.0, 13.0, 500, 500, 1000)
    assert (pinned.vout_max_v, pinned.freq_max_mhz) == (13.0, 500)


@pytest.mark.parametrize(
    "limits",
    [
        (14.0, 13.0, 400, 650, 1600),  # voltage inverted
        (12.0, 14.0, 650, 400, 1600),  # frequency inverted
        (0.0, 14.0, 400, 650, 1600),  # a rail at 0 V is no limit
        (-1.0, 14.0, 400, 650, 1600),
        (12.0, 14.0, 0, 650, 1600),  # a chip at 0 MHz is no limit
        (12.0, 14.0, 400, 650, 0),  # no power at all
        (12.0, 14.0, 400, 650, -5),
    ],
)
def test_board_limits_inverted_or_at_or_below_zero_are_refused(
    limits: tuple[float, float, float, float, float],
) -> None:
    with pytest.raises(ValueError, match="not ordered"):
        BoardLimits(*limits)


# -- admitting a module ---------------------------------------------------------------------


def test_a_module_gets_the_tighter_of_its_own_and_the_site_limits_on_every_side() -> None:
    envelope = SafetyEnvelope(FanLimits(0.2, 1.0), SITE, 4500)
    wide = BoardLimits(
        vout_min_v=10.0, vout_max_v=16.0, freq_min_mhz=20, freq_max_mhz=900, power_max_w=2000
    )
    assert envelope.admit_board(0, wide) == SITE
    assert envelope.admit_board(1, MODULE) == MODULE
    mixed = BoardLimits(
        vout_min_v=10.5, vout_max_v=14.0, freq_min_mhz=300, freq_max_mhz=1000, power_max_w=1900
    )
    assert envelope.admit_board(2, mixed) == BoardLimits(11.0, 14.0, 300, 800, 1800)
    assert envelope.board(2) == BoardLimits(11.0, 14.0, 300, 800, 1800)


@pytest.mark.parametrize(
    "declared",
    [
        BoardLimits(16.0, 17.0, 400, 650, 1600),  # only above the site's rail
        BoardLimits(12.0, 14.0, 900, 1000, 1600),  # only faster than the site allows
        BoardLimits(9.0, 10.5, 400, 650, 1600),  # only below the site's rail
    ],
)
def test_a_module_whose_limits_miss_the_site_caps_is_never_powered(declared: BoardLimits) -> None:
    envelope = SafetyEnvelope(FanLimits(0.2, 1.0), SITE, 4500)
    with pytest.raises(
        SafetyViolation,
        match=r"^slot 3: module limits .* do not overlap the site caps .*; it will not be powered$",
    ):
        envelope.admit_board(3, declared)
    with pytest.raises(SafetyViolation, match="no trusted module identity"):
        envelope.power_on(3)


def test_a_slot_whose_module_left_can_be_driven_no_more(envelope: SafetyEnvelope) -> None:
    assert envelope.power_on(SLOT) == MODULE
    envelope.forget_board(SLOT)
    envelope.forget_board(SLOT)  # forgetting twice is harmless
    for drive in (
        lambda: envelope.power_on(SLOT),
        lambda: envelope.board_voltage(SLOT, 13.0),
        lambda: envelope.chip_frequency(SLOT, 500),
        lambda: envelope.power_budget(SLOT, None),
    ):
        with pytest.raises(SafetyViolation, match=r"^slot 1: no trusted module identity"):
            drive()


# -- the checks -----------------------------------------------------------------------------


def test_fan_duty_is_allowed_up_to_both_limits_and_refused_past_them(
    envelope: SafetyEnvelope,
) -> None:
    assert envelope.fan_duty(0.2) == 0.2
    assert envelope.fan_duty(0.9) == 0.9
    with pytest.raises(
        SafetyViolation,
        match=r"^fan duty 0\.950 refused: allowed 0\.20 to 0\.90 \(limits\.fan_duty_min/max\)$",
    ):
        envelope.fan_duty(0.95)
    with pytest.raises(SafetyViolation, match=r"^fan2 duty 0\.100 refused"):
        envelope.fan_duty(0.1, what="fan2")


def test_board_voltage_and_clock_are_allowed_up_to_the_modules_limits(
    envelope: SafetyEnvelope,
) -> None:
    assert envelope.board_voltage(SLOT, 12.0) == 12.0
    assert envelope.board_voltage(SLOT, 14.5) == 14.5
    assert envelope.chip_frequency(SLOT, 400) == 400
    assert envelope.chip_frequency(SLOT, 650) == 650


def test_a_refusal_says_what_is_allowed_and_where_the_limit_comes_from(
    envelope: SafetyEnvelope,
) -> None:
    with pytest.raises(SafetyViolation) as too_high:
        envelope.board_voltage(SLOT, 14.5004)
    assert str(too_high.value) == (
        "slot 1 voltage 14.500 V refused: allowed 12.000 to 14.500 V (this module)"
    )
    with pytest.raises(SafetyViolation) as too_slow:
        envelope.chip_frequency(SLOT, 399.96)
    assert str(too_slow.value) == (
        "slot 1 frequency 400.0 MHz refused: allowed 400.0 to 650.0 MHz (this module)"
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, True, "13.0", None])
def test_what_is_not_a_finite_number_is_refused_as_such(
    envelope: SafetyEnvelope, bad: object
) -> None:
    value = cast(float, bad)
    checks: list[Callable[[], float]] = [
        lambda: envelope.board_voltage(SLOT, value),
        lambda: envelope.chip_frequency(SLOT, value),
        lambda: envelope.fan_duty(value),
    ]
    if bad is not None:
        checks.append(lambda: envelope.power_budget(SLOT, value))
    for check in checks:
        with pytest.raises(SafetyViolation, match="refused: not a finite number"):
            check()


# -- the per-board power cap ---------------------------------------------------------------


def test_a_board_without_a_budget_is_planned_at_its_power_cap(envelope: SafetyEnvelope) -> None:
    assert envelope.power_budget(SLOT, None) == 1600


def test_a_budget_above_the_boards_cap_is_cut_to_the_cap(envelope: SafetyEnvelope) -> None:
    assert envelope.power_budget(SLOT, 1700) == 1600
    assert envelope.power_budget(SLOT, 1600) == 1600
    assert envelope.power_budget(SLOT, 1250.5) == 1250.5


def test_the_site_cap_bounds_a_module_that_declares_more() -> None:
    envelope = SafetyEnvelope(FanLimits(0.2, 1.0), SITE, 4500)
    envelope.admit_board(0, BoardLimits(12.0, 14.5, 400, 650, 2500))
    assert envelope.power_budget(0, None) == 1800
    assert envelope.power_budget(0, 2400) == 1800


def test_a_negative_budget_plans_no_power(envelope: SafetyEnvelope) -> None:
    assert envelope.power_budget(SLOT, -50) == 0.0


@pytest.mark.parametrize(
    ("asked_w", "held_w"), [(2000.0, 2000.0), (4500.0, 4500.0), (9000.0, 4500.0), (-5.0, 0.0)]
)
def test_the_power_target_is_held_within_what_the_psu_may_deliver(
    asked_w: float, held_w: float
) -> None:
    envelope = SafetyEnvelope(FanLimits(0.2, 0.9), SITE, psu_power_max_w=4500)
    assert envelope.power_target(asked_w) == held_w


def test_a_power_target_that_is_not_a_number_is_refused() -> None:
    envelope = SafetyEnvelope(FanLimits(0.2, 0.9), SITE, psu_power_max_w=4500)
    with pytest.raises(SafetyViolation):
        envelope.power_target(math.nan)
