"""The slot lifecycle as one table: which trigger moves a slot from which state to which.

Everything that changes a slot's state goes through `next_state`, so an impossible move
is a bug caught at once, and the table below is the whole story a technician needs:

    empty ──seated──▶ inserted ──identify──▶ identifying ──identified──▶ powering
    powering ──power_good──▶ enumerating ──enumerated──▶ ramping ──ramped──▶ hashing
    hashing ⇄ degraded (health)         any powered state ──fault──▶ fault (power off)
    inserted, identifying ──fault──▶ fault   (the bus or the agent failed before power)
    fault ──fault──▶ fault         (a failure while off: it waits for a technician)
    fault ──retry──▶ inserted      (cooled down, within the restart limit)
    powering…degraded ──sleep──▶ sleeping ──wake──▶ powering   (curtailed, or unprofitable)
    hashing/degraded/fault/… ──prepare──▶ draining ──drained──▶ safe_to_remove
    safe_to_remove ──pulled──▶ empty     draining/safe_to_remove ──cancel──▶ inserted
    any state ──pulled──▶ empty (a surprise pull when no swap was prepared)
"""

from __future__ import annotations

import enum

from hashbay.agent.core.status import SlotState as S


class Trigger(enum.StrEnum):
    SEATED = "seated"
    IDENTIFY = "identify"
    IDENTIFIED = "identified"
    UNTRUSTED = "untrusted"
    POWER_GOOD = "power_good"
    ENUMERATED = "enumerated"
    RAMPED = "ramped"
    DEGRADED = "degraded"
    HEALTHY = "healthy"
    FAULT = "fault"
    PREPARE = "prepare"
    DRAINED = "drained"
    CANCEL = "cancel"
    PULLED = "pulled"
    RETRY = "retry"
    SLEEP = "sleep"
    WAKE = "wake"


_WORKING = (S.POWERING, S.ENUMERATING, S.RAMPING, S.HASHING, S.DEGRADED)
TOUCHES_HARDWARE = frozenset(S) - {S.EMPTY, S.SAFE_TO_REMOVE}
"""States whose work uses the buses or pins: each has a fault transition, so whatever goes
wrong in one (a bus error, a bug) ends with the slot powered off and a `fault` event.
An empty slot has nothing to power; a module safe to remove is already off."""

TRANSITIONS: dict[tuple[S, Trigger], S] = {
    (S.EMPTY, Trigger.SEATED): S.INSERTED,
    (S.INSERTED, Trigger.IDENTIFY): S.IDENTIFYING,
    (S.IDENTIFYING, Trigger.IDENTIFIED): S.POWERING,
    (S.IDENTIFYING, Trigger.UNTRUSTED): S.FAULT,
    (S.POWERING, Trigger.POWER_GOOD): S.ENUMERATING,
    (S.ENUMERATING, Trigger.ENUMERATED): S.RAMPING,
    (S.RAMPING, Trigger.RAMPED): S.HASHING,
    (S.HASHING, Trigger.DEGRADED): S.DEGRADED,
    (S.DEGRADED, Trigger.HEALTHY): S.HASHING,
    (S.DRAINING, Trigger.DRAINED): S.SAFE_TO_REMOVE,
    (S.DRAINING, Trigger.FAULT): S.FAULT,
    (S.DRAINING, Trigger.CANCEL): S.INSERTED,
    (S.SAFE_TO_REMOVE, Trigger.CANCEL): S.INSERTED,
    (S.FAULT, Trigger.PREPARE): S.DRAINING,
    (S.FAULT, Trigger.RETRY): S.INSERTED,
    (S.SLEEPING, Trigger.WAKE): S.POWERING,
    (S.SLEEPING, Trigger.PREPARE): S.DRAINING,
    (S.SLEEPING, Trigger.FAULT): S.FAULT,
    (S.INSERTED, Trigger.PREPARE): S.DRAINING,
    (S.IDENTIFYING, Trigger.PREPARE): S.DRAINING,
    (S.INSERTED, Trigger.FAULT): S.FAULT,
    (S.IDENTIFYING, Trigger.FAULT): S.FAULT,
    (S.FAULT, Trigger.FAULT): S.FAULT,
    **{(state, Trigger.FAULT): S.FAULT for state in _WORKING},
    **{(state, Trigger.PREPARE): S.DRAINING for state in _WORKING},
    **{(state, Trigger.SLEEP): S.SLEEPING for state in _WORKING},
    **{(state, Trigger.PULLED): S.EMPTY for state in S if state is not S.EMPTY},
}


class IllegalTransition(RuntimeError):
    """A trigger that cannot happen in this state: a bug in the agent, not in hardware."""


def next_state(state: S, trigger: Trigger) -> S:
    try:
        return TRANSITIONS[(state, trigger)]
    except KeyError:
        raise IllegalTransition(f"no transition from {state} on {trigger}") from None


def allowed(state: S, trigger: Trigger) -> bool:
    return (state, trigger) in TRANSITIONS
