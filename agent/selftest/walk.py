"""The self-test's steps, in order, as data; and the walk through them that always ends
with the hardware in its safe state.

Each step records its checks in the session and may leave facts for the steps after it
(who answered on the bus, which modules are trusted, what makes powering unsafe). A step
that crashes is a failed check, not the end of the test, and it makes powering unsafe.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from hashbay.agent.daemon.config import Config
from hashbay.agent.hardware.bus_backends import Buses
from hashbay.agent.hardware.buses import open_buses
from hashbay.agent.selftest.bus import (
    OUTPUT_OFF_V,
    check_hotswaps,
    check_modules,
    check_psu,
    scan_bus,
)
from hashbay.agent.selftest.chains import count_chains
from hashbay.agent.selftest.lines import claim_lines
from hashbay.agent.selftest.motion import blink_leds, spin_fans
from hashbay.agent.selftest.report import Check, Report, Verdict
from hashbay.agent.selftest.session import Session

log = structlog.get_logger("hashbay.selftest")


@dataclass(frozen=True)
class Step:
    name: str
    what: str
    run: Callable[[Session], Awaitable[None]]
    needs_rig: bool = True


STEPS = (
    Step("gpio", "every GPIO line claimed in its safe role; presence read", claim_lines, False),
    Step("i2c", "which addresses answer on the I2C bus", scan_bus),
    Step("psu", "the PSU's MFR_ID/MODEL, status words and readings", check_psu),
    Step(
        "hot-swap", "each slot's hot-swap controller: identity, status, output off", check_hotswaps
    ),
    Step("modules", "each seated module's EEPROM identity (CRC) and its sensors", check_modules),
    Step("fans", "each fan turned down and up again, its tachometer following", spin_fans),
    Step("leds", "each slot's locate LED blinked", blink_leds),
    Step("chains", "each trusted module powered at nominal voltage, chips counted", count_chains),
)


async def run_self_test(
    config: Config,
    *,
    source: str,
    buses: Buses | None = None,
    power: bool = True,
    on_check: Callable[[Check], None] = lambda check: None,
) -> Report:
    """Walk every step; the hardware is left in its safe state however the walk ends.
    Opening the buses may raise DeviceMissingError (nothing has been touched then)."""
    opened = buses if buses is not None else open_buses(config)
    session = Session(config, opened, power, Report(config.agent.name, source), on_check)
    try:
        for step in STEPS:
            await _run_step(session, step)
    finally:
        if session.rig is not None:
            _leave_safe(session)
            session.rig.close()  # closes the buses too
        else:
            opened.close()
    return session.report


async def _run_step(session: Session, step: Step) -> None:
    if step.needs_rig and session.rig is None:
        session.record(
            step.name, "not run", Verdict.SKIP, "needs every GPIO line above to be claimable"
        )
        return
    try:
        await step.run(session)
    except Exception as exc:  # one broken step must not stop the others or the safe state
        log.error("self-test step failed", step=step.name, exc_info=True)
        session.unsafe.append(f"the {step.name} step did not finish")
        session.record(step.name, "step", Verdict.FAIL, f"stopped by an error: {exc!r}")


def _leave_safe(session: Session) -> None:
    """The safe state, then proof of it: every slot's enable low and chain in reset, its
    output off, every fan at the safe duty. Runs on any exit, so it blocks and never
    awaits (the walk may be being cancelled)."""
    rig = session.hardware()
    rig.safe_state()
    duty = session.config.limits.safe_fan_duty
    problems: list[str] = []
    for fan in rig.fans:
        try:
            fan.set_duty(duty)
        except Exception as exc:
            problems.append(f"{fan.name} not set: {exc}")
    for hw in rig.slots:
        if hw.pins.power_enabled or not hw.pins.in_reset:
            problems.append(f"slot {hw.index}: enable still high or chain out of reset")
        try:
            vout = hw.hotswap.read_telemetry().vout_v
        except Exception:  # noqa: S112 - unreadable was reported by the hot-swap check
            continue
        if vout >= OUTPUT_OFF_V:
            problems.append(f"slot {hw.index}: output at {vout:.1f} V with its enable low")
    if problems:
        session.record("safe state", "on exit", Verdict.FAIL, "; ".join(problems))
        return
    session.record(
        "safe state",
        "on exit",
        Verdict.PASS,
        f"fans at {duty:.0%}, every slot's enable low and chain held in reset, outputs off",
    )
