"""The fault matrix: for every fault the simulator can make, what the agent must do about it,
how soon, and whether the module comes back by itself.

This table is the contract. The chaos suite (`tools/run chaos`, tests/chaos) injects each
row into a running agent on the simulated rig and checks the reaction within the time
given, and the README's fault table is generated from it (`tools/run docs`), so the
documentation and the tests cannot disagree.

Each time comes in two parts, computed from the configuration in force (the README shows
them for the defaults, the chaos suite for the configuration it runs): what runs on the
agent's clock (protection and health thresholds: the simulated rig's clock, so a run at
`sim.time_scale` 10 takes a tenth of it) and what runs on the event loop's (polls, chain
I/O, ramps, the stall guard: real time everywhere). On real hardware they simply add.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hashbay.agent.daemon.config import Config


@dataclass(frozen=True)
class Due:
    """A delay: so much on the agent's clock, so much on the event loop's."""

    clock_s: float = 0.0
    loop_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.clock_s + self.loop_s


Timing = Callable[["Config"], Due]


class Reaction(enum.StrEnum):
    CUT = "power cut"  # the board's enable line drops, the slot faults
    NEEDS_SERVICE = "cut, then off until serviced"  # it trips again at every restart
    NOT_POWERED = "never powered"  # no trusted identity: the module is not switched on
    REMOVED = "power cut, removed"  # a pull: cut at once, a `removed` event
    THROTTLE = "throttled"  # clocks scaled down; the boards keep hashing
    NAMED = "named"  # keeps hashing; the slot's health or bus status names the trouble
    RIDE_THROUGH = "rides through"  # nothing to do: no cut, no alarm, the boards hash on
    SAFE_STATE = "safe state"  # every board off, fans full, exit 70 (systemd restarts it)

    @property
    def cuts(self) -> bool:
        return self in (Reaction.CUT, Reaction.NEEDS_SERVICE, Reaction.REMOVED)


def _clock(seconds: float) -> Timing:
    return lambda config: Due(clock_s=seconds)


def _loop(seconds: float) -> Timing:
    return lambda config: Due(loop_s=seconds)


POWER_UP_S = 5.0  # identify, power, enumerate, ramp: real time (UART, ramp steps)


def _restart(cooling_s: float) -> Timing:
    """A cut board's way back: off restart_min_off_s, cooled, then up again."""
    return lambda c: Due(c.protection.restart_min_off_s + cooling_s, POWER_UP_S)


def _bus_quiet(c: Config) -> Due:
    """A device that failed its transactions is judged quiet again once its failures have
    left the judging window."""
    return Due(c.alarms.bus_window_s + 10.0, c.chain.sample_interval_s + 1.0)


def _chip_poll(extra_s: float) -> Timing:
    """Found at the next poll of every chip, told at the next health sample."""
    return lambda c: Due(loop_s=c.chain.chip_poll_interval_s + c.chain.sample_interval_s + extra_s)


@dataclass(frozen=True)
class Row:
    fault: str  # the `hashbay-sim inject` command that causes it
    slot: int  # the slot whose reaction is watched (every slot for miner-wide faults)
    reaction: Reaction
    within: Timing  # from injecting the fault to the reaction, at most
    heal: tuple[str, ...]  # commands that take the cause away (none: the module is the cause)
    back_by_itself: bool  # hashing again without a technician once healed
    back_within: Timing  # ...within this of the heal (or of the technician's action)
    why: str  # why this is the right reaction, in a line
    then: tuple[str, ...] = ()  # what makes the fault show (a re-seat, a power change)
    technician: tuple[str, ...] = ()  # what brings it back when it does not come by itself
    every_slot: bool = False  # the fault hits the whole miner
    quick: bool = False  # part of the quick subset `tools/run test` runs

    @property
    def command(self) -> str:
        return self.fault.split()[0]


# Commands that only undo a fault (or seat a module): each is some row's heal, then or
# technician step, and the test checks that.
HEALS = frozenset(
    {
        "insert",
        "insert-new",
        "chip-ok",
        "fan-ok",
        "sensor-ok",
        "psu-ok",
        "i2c-ok",
        "eeprom-ok",
        "device-ok",
    }
)

MATRIX: tuple[Row, ...] = (
    Row(
        "pull 2",
        2,
        Reaction.REMOVED,
        lambda c: Due(c.hardware.presence_debounce_s, 0.5),
        ("insert 2",),
        True,
        _loop(POWER_UP_S + 10.0),
        "a module pulled without a prepared swap: its slot's power goes off at once",
        quick=True,
    ),
    Row(
        "fan-stall 1",
        0,
        Reaction.THROTTLE,
        lambda c: Due(loop_s=c.agent.poll_interval_s + 1.0),
        ("fan-ok 1",),
        True,
        lambda c: Due(loop_s=c.agent.poll_interval_s + 5.0),
        "every board loses airflow: clocks to protection.stall_scale, the other fans full",
        every_slot=True,
        quick=True,
    ),
    Row(
        "overheat 0 2",
        0,
        Reaction.CUT,
        _clock(40.0),
        ("overheat 0 0",),
        True,
        _restart(90.0),
        "throttled from throttle_c, cut at cutoff_c; back once off and cooled",
    ),
    Row(
        "sensor-lost 1 0",
        1,
        Reaction.CUT,
        # Lost on the agent's clock, and read that many times at the sweep's (real) pace.
        lambda c: Due(
            c.protection.sensor_lost_s + 2.0,
            loop_s=c.protection.sensor_unreadable_reads * c.protection.backup_interval_s,
        ),
        ("sensor-ok 1 0",),
        True,
        _restart(30.0),
        "a board that cannot be watched is not powered",
        quick=True,
    ),
    Row(
        "sensor-stuck 1 1",
        1,
        Reaction.CUT,
        lambda c: Due(c.protection.sensor_stuck_s + 30.0, loop_s=5.0),
        ("sensor-ok 1 1", "fan-ok 3"),
        True,
        _restart(60.0),
        "a reading frozen while the board's power moves is not a temperature",
        then=("fan-stall 3",),  # the clocks drop to the stall scale: the power moves
    ),
    Row(
        "dcdc-overcurrent 2",
        2,
        Reaction.CUT,
        _loop(2.0),
        (),
        True,
        _restart(30.0),
        "a latched converter fault cuts the slot; losing its input clears the converter",
    ),
    Row(
        "hotswap-overcurrent 2",
        2,
        Reaction.CUT,
        _loop(2.0),
        (),
        True,
        _restart(30.0),
        "the latch is cleared (CLEAR_FAULTS) before the automatic restart",
        quick=True,
    ),
    Row(
        "module-short 2",
        2,
        Reaction.NEEDS_SERVICE,
        lambda c: Due(
            c.protection.max_restarts * (c.protection.restart_min_off_s + 30.0),
            (c.protection.max_restarts + 1) * POWER_UP_S,
        ),
        (),
        False,
        _loop(POWER_UP_S + 10.0),
        "it trips again at every restart: once the restarts are used up, needs_service",
        technician=("pull 2", "insert-new 2"),
    ),
    Row(
        "chip-dead 1 5",
        1,
        Reaction.NAMED,
        _chip_poll(2.0),
        ("chip-ok 1 5",),
        True,
        _chip_poll(2.0),
        "one chip of many: the module keeps hashing; health names it",
    ),
    Row(
        "uart-noise 1 0.0005 0.0005",
        1,
        Reaction.RIDE_THROUGH,
        _clock(30.0),
        ("uart-noise 1 0 0",),
        True,
        _loop(5.0),
        "the frame decoders resynchronise; errors are counted, nothing is cut",
    ),
    Row(
        "i2c-errors 0.2",
        0,
        Reaction.RIDE_THROUGH,
        _clock(30.0),
        ("i2c-ok",),
        True,
        _bus_quiet,
        "single failed reads are bus noise: no alarm, no cut (noisy devices are named)",
        every_slot=True,
    ),
    Row(
        "pec-errors 0.3 0x20",
        0,
        Reaction.NAMED,
        lambda c: Due(30.0, c.chain.sample_interval_s + 1.0),
        ("pec-errors 0 0x20",),
        True,
        _bus_quiet,
        "the PEC catches every damaged read; the DC-DC is named noisy, costs health points",
    ),
    Row(
        "i2c-stuck 0.5",
        0,
        Reaction.RIDE_THROUGH,
        _clock(30.0),
        ("i2c-ok",),
        True,
        _loop(5.0),
        "a bus held for less than the adapter's timeout only delays the reads",
        every_slot=True,
    ),
    Row(
        "device-silent 0x21",
        1,
        Reaction.NAMED,
        lambda c: Due(c.health.rail_unreadable_after_s + 5.0, c.chain.sample_interval_s + 1.0),
        ("device-ok 0x21",),
        True,
        _bus_quiet,
        "the converter still runs: the board hashes on, its rail is named unreadable",
    ),
    Row(
        "eeprom-corrupt 2",
        2,
        Reaction.NOT_POWERED,
        lambda c: Due(c.hardware.presence_debounce_s, POWER_UP_S),
        (),
        False,
        _loop(POWER_UP_S + 10.0),
        "a module without a trusted identity is never powered with guessed limits",
        then=("pull 2", "insert 2"),
        technician=("eeprom-ok 2", "hashbay reset 2"),
    ),
    Row(
        "eeprom-blank 2",
        2,
        Reaction.NOT_POWERED,
        lambda c: Due(c.hardware.presence_debounce_s, POWER_UP_S),
        (),
        False,
        _loop(POWER_UP_S + 10.0),
        "a blank identity is no identity",
        then=("pull 2", "insert 2"),
        technician=("eeprom-ok 2", "hashbay reset 2"),
    ),
    Row(
        "eeprom-silent 2",
        2,
        Reaction.NOT_POWERED,
        lambda c: Due(c.hardware.presence_debounce_s, POWER_UP_S),
        (),
        False,
        _loop(POWER_UP_S + 10.0),
        "an identity that cannot be read is no identity",
        then=("pull 2", "insert 2"),
        technician=("eeprom-ok 2", "hashbay reset 2"),
    ),
    Row(
        "psu-sag 190",
        0,
        Reaction.RIDE_THROUGH,
        _clock(30.0),
        ("psu-ok",),
        True,
        _loop(5.0),
        "an input under-voltage warning: the PSU still delivers; it is shown, not acted on",
        every_slot=True,
    ),
    Row(
        "psu-sag 160",
        0,
        Reaction.CUT,
        _chip_poll(5.0),
        ("psu-ok",),
        True,
        _restart(60.0),
        "the 54 V bus is gone: every board's chips stop answering and it is cut",
        every_slot=True,
    ),
    Row(
        "ambient 35",
        0,
        Reaction.RIDE_THROUGH,
        _clock(60.0),
        ("ambient 25",),
        True,
        _loop(5.0),
        "warmer air: the fans work harder, the boards stay below warn_c",
        every_slot=True,
    ),
    Row(
        "chip-degrade 1 17 10",
        1,
        Reaction.NAMED,
        _clock(600.0),
        ("chip-ok 1 17",),
        True,
        lambda c: Due(c.health.window_s + 60.0),
        "an aging chip errs more and more: health names it, and faults the module at "
        "chip_fault_error_rate",
    ),
    Row(
        "i2c-stuck 600",
        0,
        Reaction.SAFE_STATE,
        lambda c: Due(loop_s=c.agent.stall_timeout_s + 2.0),
        (),
        False,
        _loop(0.0),
        "no reading can complete: the stall guard cuts every board, fans full, exit 70",
        every_slot=True,
        technician=("systemd restarts the agent",),
    ),
)


def rows_for(command: str) -> list[Row]:
    return [row for row in MATRIX if row.command == command]


def covered_commands() -> set[str]:
    """Every fault command the matrix injects, heals with or uses on the way."""
    steps = [
        step
        for row in MATRIX
        for step in (row.fault, *row.heal, *row.then, *row.technician)
        if not step.startswith(("hashbay ", "systemd "))
    ]
    return {step.split()[0] for step in steps}
