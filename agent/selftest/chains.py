"""Each trusted module powered at its nominal voltage, its chain counted, and powered off.

Only a module whose identity the envelope admitted, whose sensors all read, in a slot
whose hot-swap controller is sane, on a rig whose fans and PSU passed, is powered; one at
a time, with the fans at their safe duty, through the agent's own power-up sequence
(`agent/hardware/power_sequence.py`) and envelope, at the module's nominal voltage held within the
slot's limits as the agent holds it. The chips are never clocked up: the chain is reset
and asked for its chip id at the power-on baud rate, then (with `chain.fast_baud`)
addressed and asked again at the fast rate, as the agent brings it up. A module is
powered for a second or two; its sensors are read before it goes off again.
"""

from __future__ import annotations

import asyncio
from functools import partial

from hashbay.agent.hardware.power_sequence import power_up, until
from hashbay.agent.hardware.slot_hw import SlotHardware
from hashbay.agent.selftest.bus import OUTPUT_OFF_V, status_words, survey
from hashbay.agent.selftest.report import Verdict
from hashbay.agent.selftest.session import Session
from hashbay.drivers.bm13xx import registers
from hashbay.drivers.bm13xx.chain import Bm13xxChain
from hashbay.drivers.bm13xx.registers import CHIP_IDS, Reg
from hashbay.drivers.eeprom import BoardIdentity
from hashbay.drivers.errors import HardwareError, HashbayError, ProtocolError

RESET_HOLD_S = 0.02  # as the agent pulses the chain reset before enumerating
RESET_RELEASE_S = 0.15
READ_QUIET_S = 0.1
READ_TIMEOUT_S = 3.0


async def count_chains(session: Session) -> None:
    rig = session.hardware()
    for hw in rig.slots:
        n = hw.index
        identity = session.trusted.get(n)
        if identity is None:
            continue  # empty or untrusted: the slot's checks above say why
        why_not = _why_not_powered(session, n, identity)
        if why_not:
            session.record(f"chain {n}", "powered check", Verdict.SKIP, f"not powered: {why_not}")
            continue
        for fan in rig.fans:
            fan.set_duty(session.config.limits.safe_fan_duty)
        try:
            await _powered(session, hw, identity)
        finally:
            await _power_down(session, hw)


def _why_not_powered(session: Session, n: int, identity: BoardIdentity) -> str:
    if not session.power:
        return "--no-power"
    if session.unsafe:
        return f"{session.unsafe[0]}; no module is powered until that is fixed"
    if n in session.slot_unsafe:
        return session.slot_unsafe[n]
    budget = session.config.limits.psu_power_max_w
    if identity.power_max_w > budget:
        return (
            f"it may draw {identity.power_max_w} W, more than limits.psu_power_max_w ({budget:g} W)"
        )
    return ""


def board_volts(session: Session, n: int, identity: BoardIdentity) -> float:
    """The module's nominal rail voltage held within this slot's limits (the module's own
    intersected with the site caps), as the agent's operating-point planner holds it."""
    limits = session.hardware().envelope.board(n)
    nominal = identity.nominal_vout_mv / 1000
    return min(limits.vout_max_v, max(limits.vout_min_v, nominal))


async def _powered(session: Session, hw: SlotHardware, identity: BoardIdentity) -> None:
    n, config = hw.index, session.config
    volts = board_volts(session, n, identity)
    rig = session.hardware()
    try:
        written = await power_up(
            hw, volts, call=rig.call, timeout_s=config.chain.power_good_timeout_s
        )
    except HashbayError as exc:
        session.record(f"chain {n}", f"power-up to {volts:.2f} V", Verdict.FAIL, str(exc))
        return
    await _check_dcdc(session, hw, identity, written)
    await _count(session, hw, identity, config.chain.fast_baud)
    await _check_powered_temps(session, hw)


async def _check_dcdc(
    session: Session, hw: SlotHardware, module: BoardIdentity, written: float
) -> None:
    address = session.config.slot[hw.index].dcdc_address
    part, item = f"slot {hw.index}", f"DC-DC 0x{address:02x} (powered)"
    try:
        identity, status, reading = await session.io(partial(survey, hw.dcdc))
    except (HardwareError, ProtocolError) as exc:
        session.record(part, item, Verdict.FAIL, str(exc))
        return
    data = {
        "mfr_id": identity.mfr_id,
        "mfr_model": identity.mfr_model,
        "status_word": int(status.word),
        "vin_v": reading.vin_v,
        "vout_v": reading.vout_v,
        "vout_command_v": written,
    }
    nominal = module.nominal_vout_mv / 1000
    held = "" if abs(written - nominal) < 0.01 else f", its nominal {nominal:.2f} V held to limits"
    detail = (
        f"{identity}; {reading.vin_v:.1f} V in, {reading.vout_v:.2f} V out (set "
        f"{written:.2f} V{held}); {status_words(status)}"
    )
    verdict = Verdict.PASS if status.ok else Verdict.FAIL
    session.record(part, item, verdict, detail, **data)


async def _count(
    session: Session, hw: SlotHardware, identity: BoardIdentity, fast_baud: bool
) -> None:
    n = hw.index
    part = f"chain {n}"
    hw.pins.hold_reset(True)
    await asyncio.sleep(RESET_HOLD_S)
    hw.pins.hold_reset(False)
    await asyncio.sleep(RESET_RELEASE_S)
    try:
        port = session.buses.open_uart(n)
    except HardwareError as exc:
        session.record(part, f"UART {session.config.slot[n].uart}", Verdict.FAIL, str(exc))
        return
    chain = Bm13xxChain(
        port, slot=n, envelope=session.hardware().envelope, clock=session.buses.clock
    )
    try:
        async with chain.attached():
            if await _chip_ids(session, chain, identity, registers.DEFAULT_BAUD) and fast_baud:
                try:
                    await chain.enumerate(expected_chips=identity.chip_count)
                    await chain.set_fast_baud()
                except HashbayError as exc:
                    rate = f"{registers.FAST_BAUD} baud"
                    session.record(part, f"chip ids at {rate}", Verdict.FAIL, str(exc))
                    return
                await _chip_ids(session, chain, identity, registers.FAST_BAUD)
    finally:
        port.close()


async def _chip_ids(
    session: Session, chain: Bm13xxChain, identity: BoardIdentity, baud: int
) -> bool:
    """Ask every chip for its id at the port's present rate; whether all answered right."""
    n = chain.slot
    item = f"chip ids at {baud} baud"
    replies = await chain.read_all(Reg.CHIP_ID, quiet_s=READ_QUIET_S, timeout_s=READ_TIMEOUT_S)
    ids = sorted({registers.chip_id_of(r.value) for r in replies})
    declared = CHIP_IDS.get(identity.chip_model, f"{identity.chip_model:#06x}")
    names = ", ".join(CHIP_IDS.get(i, f"{i:#06x}") for i in ids)
    data = {"baud": baud, "chips": len(replies), "declared": identity.chip_count, "ids": ids}
    reset_pin = session.config.slot[n].reset_pin
    if not replies:
        problem = (
            "no chip answered the chip-id read: check the UART wiring (TX and RX crossed?), "
            f"the chain reset line (pin {reset_pin}) and the board rail"
        )
    elif ids != [identity.chip_model]:
        problem = f"chips answered as {names}; the EEPROM declares {declared}"
    elif len(replies) != identity.chip_count:
        problem = (
            f"{len(replies)} of the {identity.chip_count} chips the EEPROM declares answered: "
            f"the chain breaks after chip {len(replies) - 1} (a chip or its UART relay)"
        )
    else:
        detail = f"{len(replies)} {declared} chips answered, as the EEPROM declares"
        session.record(f"chain {n}", item, Verdict.PASS, detail, **data)
        return True
    session.record(f"chain {n}", item, Verdict.FAIL, problem, **data)
    return False


async def _check_powered_temps(session: Session, hw: SlotHardware) -> None:
    readings = await session.io(hw.read_rails)
    temps = [t for t in readings.temps_c if t is not None]
    hottest = max(temps, default=None)
    power_w = readings.hotswap.pin_w if readings.hotswap is not None else None
    cutoff = session.config.protection.cutoff_c
    detail = (
        f"hottest sensor {hottest:.1f} °C" if hottest is not None else "no sensor reading"
    ) + (f", {power_w:.0f} W drawn" if power_w is not None else "")
    ok = hottest is not None and hottest < cutoff and readings.fault is None
    if readings.fault:
        detail += f"; {readings.fault}"
    session.record(
        f"slot {hw.index}",
        "while powered",
        Verdict.PASS if ok else Verdict.FAIL,
        detail,
        hottest_c=hottest,
        power_w=power_w,
    )


async def _power_down(session: Session, hw: SlotHardware) -> None:
    """Always: the agent's own power-off, then proof that the output is really off."""
    rig = session.hardware()
    problems = await rig.call(hw.power_off)
    timeout_s = session.config.chain.power_good_timeout_s
    if await until(hw.output_off, call=rig.call, timeout_s=timeout_s):
        return  # a DC-DC that never came up cannot be switched off: no news then
    words = "; ".join(problems) or f"output still at or above {OUTPUT_OFF_V:g} V"
    session.record(
        f"slot {hw.index}",
        "powered off again",
        Verdict.FAIL,
        f"{words}: the enable line is low; do NOT remove the module until its output is off",
    )
