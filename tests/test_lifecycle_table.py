"""The slot lifecycle table on its own: every path the module docstring promises, and
that a trigger the table does not know is refused rather than guessed at."""

from __future__ import annotations

import pytest

from hashbay.agent.core.status import SlotState as S
from hashbay.agent.modules.lifecycle import IllegalTransition, Trigger, allowed, next_state

T = Trigger
WORKING = [S.POWERING, S.ENUMERATING, S.RAMPING, S.HASHING, S.DEGRADED]


def walk(state: S, *triggers: Trigger) -> list[S]:
    seen = []
    for trigger in triggers:
        assert allowed(state, trigger), (state, trigger)
        state = next_state(state, trigger)
        seen.append(state)
    return seen


def test_a_seated_module_is_identified_powered_enumerated_ramped_and_hashes() -> None:
    assert walk(
        S.EMPTY, T.SEATED, T.IDENTIFY, T.IDENTIFIED, T.POWER_GOOD, T.ENUMERATED, T.RAMPED
    ) == [S.INSERTED, S.IDENTIFYING, S.POWERING, S.ENUMERATING, S.RAMPING, S.HASHING]


def test_a_hashing_module_degrades_and_recovers() -> None:
    assert walk(S.HASHING, T.DEGRADED, T.HEALTHY) == [S.DEGRADED, S.HASHING]


def test_an_untrusted_identity_is_a_fault_and_a_fault_may_be_retried() -> None:
    assert walk(S.IDENTIFYING, T.UNTRUSTED, T.RETRY) == [S.FAULT, S.INSERTED]


@pytest.mark.parametrize("state", [*WORKING, S.DRAINING, S.SLEEPING])
def test_a_fault_is_reached_from_every_state_with_power(state: S) -> None:
    assert next_state(state, T.FAULT) is S.FAULT


@pytest.mark.parametrize("state", WORKING)
def test_any_working_board_may_be_put_to_sleep_and_wakes_through_powering(state: S) -> None:
    assert walk(state, T.SLEEP, T.WAKE) == [S.SLEEPING, S.POWERING]


@pytest.mark.parametrize("state", [*WORKING, S.FAULT, S.SLEEPING, S.INSERTED, S.IDENTIFYING])
def test_a_prepared_swap_drains_then_is_safe_to_remove_then_empty(state: S) -> None:
    assert walk(state, T.PREPARE, T.DRAINED, T.PULLED) == [
        S.DRAINING,
        S.SAFE_TO_REMOVE,
        S.EMPTY,
    ]


def test_a_cancelled_swap_starts_the_module_over() -> None:
    assert walk(S.DRAINING, T.CANCEL) == [S.INSERTED]
    assert walk(S.SAFE_TO_REMOVE, T.CANCEL) == [S.INSERTED]


@pytest.mark.parametrize("state", [s for s in S if s is not S.EMPTY])
def test_a_module_pulled_in_any_state_leaves_an_empty_slot(state: S) -> None:
    assert next_state(state, T.PULLED) is S.EMPTY


@pytest.mark.parametrize(
    ("state", "trigger"),
    [
        (S.EMPTY, T.PULLED),  # nothing to pull
        (S.EMPTY, T.POWER_GOOD),
        (S.INSERTED, T.IDENTIFIED),  # identified without being asked
        (S.HASHING, T.RETRY),  # only a fault is retried
        (S.SLEEPING, T.RAMPED),
        (S.FAULT, T.WAKE),
    ],
)
def test_a_trigger_the_table_does_not_know_is_a_bug_not_a_guess(state: S, trigger: T) -> None:
    assert not allowed(state, trigger)
    with pytest.raises(IllegalTransition, match=f"^no transition from {state} on {trigger}$"):
        next_state(state, trigger)


@pytest.mark.parametrize("state", [S.INSERTED, S.IDENTIFYING, S.FAULT])
def test_a_failure_before_power_or_while_faulted_is_a_fault_too(state: S) -> None:
    """Every state that touches hardware can fault: identifying reads the EEPROM, a
    faulted slot still drives its LED and pins; a failure there must end as a fault (and
    an event), never as an illegal transition that crashes the slot's controller."""
    assert next_state(state, T.FAULT) is S.FAULT
