"""I2C: who answers on the bus, the PSU, each slot's hot-swap controller, and each seated
module's identity EEPROM and temperature sensors — all read without powering anything.

The scan probes every address the way `i2cdetect` does (a one-byte read in the EEPROM
ranges, a zero-length write elsewhere), so devices strapped to an address the config
does not name show up and a wrong `eeprom_address` is easy to spot.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Protocol, TypeVar

from smbus2 import i2c_msg

from hashbay.agent.daemon.config import EMC2305, Config
from hashbay.agent.selftest.report import Verdict
from hashbay.agent.selftest.session import Session
from hashbay.drivers.bm13xx.registers import CHIP_IDS
from hashbay.drivers.eeprom import BoardIdentity, IdentityError
from hashbay.drivers.errors import HardwareError, HashbayError, ProtocolError, SafetyViolation
from hashbay.drivers.i2c import I2CBus
from hashbay.drivers.pmbus import DeviceIdentity, Status

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

SCAN = range(0x08, 0x78)
READ_PROBED = (range(0x30, 0x38), range(0x50, 0x60))  # a write here can upset some EEPROMs
EEPROM_RANGE = range(0x50, 0x58)
OUTPUT_OFF_V = 5.0  # a slot's output below this is off (what makes a module safe to pull)
IDLE_TEMP_MIN_C = -20.0  # an unpowered board reads near the air around it


class PMBusPart(Protocol[T_co]):
    def identity(self) -> DeviceIdentity: ...

    def status(self) -> Status: ...

    def read_telemetry(self) -> T_co: ...


def survey(part: PMBusPart[T]) -> tuple[DeviceIdentity, Status, T]:
    """Which part answers, what its status words say, and its readings."""
    return part.identity(), part.status(), part.read_telemetry()


def hexes(addresses: Iterable[int]) -> str:
    return " ".join(f"0x{a:02x}" for a in sorted(addresses)) or "none"


def answers(bus: I2CBus, address: int, *, read: bool) -> bool:
    message = i2c_msg.read(address, 1) if read else i2c_msg.write(address, b"")
    try:
        bus.i2c_rdwr(message)
    except OSError:
        return False
    return True


def device_addresses(config: Config) -> tuple[set[int], set[int]]:
    """The addresses the config names: plain I2C parts (EEPROMs, sensors, a fan
    controller), PMBus parts."""
    plain, pmbus = set(), {config.hardware.psu_address}
    if config.hardware.fan_backend == EMC2305:
        plain.add(config.hardware.fan_controller_address)
    for slot in config.slot:
        plain |= {slot.eeprom_address, *slot.temp_addresses}
        pmbus |= {slot.hotswap_address, slot.dcdc_address}
    return plain, pmbus


async def scan_bus(session: Session) -> None:
    bus = session.buses.i2c
    plain, pmbus = device_addresses(session.config)
    # Read where i2cdetect reads, except at a PMBus part: a receive byte without a
    # command is a communication fault it would latch and report afterwards.
    reads = plain | {a for a in SCAN if a not in pmbus and any(a in r for r in READ_PROBED)}
    found = frozenset(
        await session.io(lambda: [a for a in SCAN if answers(bus, a, read=a in reads)])
    )
    session.answering = found
    stray = found - plain - pmbus
    item = f"scan of {session.config.hardware.i2c_bus}"
    data = {"answering": sorted(found), "not_configured": sorted(stray)}
    if not found:
        session.record(
            "i2c",
            item,
            Verdict.FAIL,
            "nothing answers: check SDA/SCL wiring and pull-ups, the backplane's standby "
            "power, and that I2C is enabled (dtparam=i2c_arm=on)",
            **data,
        )
    elif stray:
        session.record(
            "i2c",
            item,
            Verdict.LOOK,
            f"answering: {hexes(found)}; not in the config: {hexes(stray)} (a device strapped "
            "to another address than configured?)",
            **data,
        )
    else:
        session.record("i2c", item, Verdict.PASS, f"answering: {hexes(found)}", **data)


def status_words(status: Status) -> str:
    """A PMBus part's status in words; off and not power good are no news while off."""
    if status.ok:
        return "status ok, output off" if status.off else "status ok"
    return f"status: {status.describe()}"


async def check_psu(session: Session) -> None:
    rig = session.hardware()
    psu = rig.psu
    item = f"PMBus 0x{session.config.hardware.psu_address:02x}"
    try:
        identity, status, reading = await session.io(partial(survey, psu))
    except (HardwareError, ProtocolError) as exc:
        session.unsafe.append("the PSU cannot be read")
        session.record("psu", item, Verdict.FAIL, str(exc))
        return
    detail = (
        f"{identity}; {reading.vin_v:.0f} V in, {reading.vout_v:.1f} V out, "
        f"{reading.pin_w:.0f} W in, {reading.temp_c:.0f} °C, fan {reading.fan_rpm:.0f} rpm; "
        f"{status_words(status)}"
    )
    data = {
        "mfr_id": identity.mfr_id,
        "mfr_model": identity.mfr_model,
        "status_word": int(status.word),
        "vin_v": reading.vin_v,
        "vout_v": reading.vout_v,
        "pin_w": reading.pin_w,
        "temp_c": reading.temp_c,
        "fan_rpm": reading.fan_rpm,
    }
    if not status.ok:
        session.unsafe.append(f"the PSU reports {status.describe()}")
        session.record("psu", item, Verdict.FAIL, detail, **data)
    else:
        session.record("psu", item, Verdict.PASS, detail, **data)


async def check_hotswaps(session: Session) -> None:
    for hw in session.hardware().slots:
        address = session.config.slot[hw.index].hotswap_address
        part, item = f"slot {hw.index}", f"hot-swap 0x{address:02x}"
        hotswap = hw.hotswap
        try:
            identity, status, reading = await session.io(partial(survey, hotswap))
        except (HardwareError, ProtocolError) as exc:
            session.slot_unsafe[hw.index] = "its hot-swap controller cannot be read"
            session.record(part, item, Verdict.FAIL, str(exc))
            continue
        data = {
            "mfr_id": identity.mfr_id,
            "mfr_model": identity.mfr_model,
            "status_word": int(status.word),
            "vin_v": reading.vin_v,
            "vout_v": reading.vout_v,
        }
        detail = (
            f"{identity}; {reading.vin_v:.1f} V in, {reading.vout_v:.1f} V out; "
            f"{status_words(status)}"
        )
        power_pin = session.config.slot[hw.index].power_pin
        if reading.vout_v >= OUTPUT_OFF_V:
            session.slot_unsafe[hw.index] = "its output is live with the enable line low"
            session.record(
                part,
                item,
                Verdict.FAIL,
                f"{detail}: output live with its enable low (pin {power_pin}); "
                "a shorted FET or the enable not wired to that pin",
                **data,
            )
        elif not status.ok:
            session.slot_unsafe[hw.index] = "its hot-swap controller latched a fault"
            session.record(part, item, Verdict.FAIL, detail, **data)
        else:
            session.record(part, item, Verdict.PASS, detail, **data)


def describe_identity(identity: BoardIdentity) -> str:
    chip = CHIP_IDS.get(identity.chip_model, f"chip {identity.chip_model:#06x}")
    return (
        f"{identity.model} {identity.serial}: {identity.chip_count} {chip} chips, "
        f"{identity.nominal_vout_mv / 1000:.2f} V / {identity.nominal_freq_mhz} MHz nominal, "
        f"up to {identity.power_max_w} W; CRC ok"
    )


async def check_modules(session: Session) -> None:
    for hw in session.hardware().slots:
        n = hw.index
        part, pin = f"slot {n}", session.config.slot[n].presence_pin
        seated = session.seated.get(n, False)
        address = hw.eeprom.address
        if not seated:
            if address in session.answering:
                session.record(
                    part,
                    f"EEPROM 0x{address:02x}",
                    Verdict.FAIL,
                    f"answers although presence (pin {pin}) reads empty: check the presence "
                    "contact and its wiring",
                )
            else:
                session.record(part, "module", Verdict.SKIP, f"empty (presence pin {pin} high)")
            continue
        if await _check_identity(session, n):
            await _check_sensors(session, n)
        else:
            session.slot_unsafe.setdefault(n, "no trusted identity")


async def _check_identity(session: Session, n: int) -> bool:
    hw = session.hardware().slots[n]
    part, item = f"slot {n}", f"EEPROM 0x{hw.eeprom.address:02x}"
    try:
        identity = await session.io(hw.read_identity)
    except IdentityError as exc:
        session.record(part, item, Verdict.FAIL, str(exc))
        return False
    except HardwareError as exc:
        session.record(part, item, Verdict.FAIL, f"{exc}{_eeprom_hint(session, n)}")
        return False
    data = {
        "serial": identity.serial,
        "model": identity.model,
        "chip_model": CHIP_IDS.get(identity.chip_model, hex(identity.chip_model)),
        "chip_count": identity.chip_count,
        "nominal_v": identity.nominal_vout_mv / 1000,
        "power_max_w": identity.power_max_w,
    }
    try:
        session.hardware().envelope.admit_board(n, identity.limits)
    except SafetyViolation as exc:
        session.record(part, item, Verdict.FAIL, f"{describe_identity(identity)}; {exc}", **data)
        return False
    session.trusted[n] = identity
    session.record(part, item, Verdict.PASS, describe_identity(identity), **data)
    return True


def _eeprom_hint(session: Session, n: int) -> str:
    """Unconfigured EEPROM-range devices that answered: the likely right address."""
    configured = {s.eeprom_address for s in session.config.slot}
    candidates = [a for a in EEPROM_RANGE if a in session.answering and a not in configured]
    if not candidates:
        return ""
    return (
        f"; an EEPROM-range device answers at {hexes(candidates)}, which the config does not "
        f"name: is slot[{n}].eeprom_address wrong?"
    )


async def _check_sensors(session: Session, n: int) -> None:
    hw = session.hardware().slots[n]
    warn_c = session.config.protection.warn_c
    readings = await session.io(hw.read_temps)
    for k, (sensor, temp_c) in enumerate(zip(hw.sensors, readings, strict=True)):
        part, item = f"slot {n}", f"sensor {k} 0x{sensor.address:02x}"
        if temp_c is None:
            why = await _sensor_error(session, n, k)
            session.slot_unsafe.setdefault(n, f"sensor {k} (0x{sensor.address:02x}) is unreadable")
            session.record(part, item, Verdict.FAIL, why)
        elif not IDLE_TEMP_MIN_C <= temp_c < warn_c:
            session.slot_unsafe.setdefault(n, f"sensor {k} reads {temp_c:.1f} °C")
            session.record(
                part,
                item,
                Verdict.FAIL,
                f"{temp_c:.1f} °C on an unpowered board: outside {IDLE_TEMP_MIN_C:g} to "
                f"{warn_c:g} °C (protection.warn_c); a faulty sensor, or the board is hot",
                temp_c=temp_c,
            )
        else:
            session.record(part, item, Verdict.PASS, f"{temp_c:.1f} °C", temp_c=temp_c)


async def _sensor_error(session: Session, n: int, k: int) -> str:
    """Why a sensor gave no reading, in the driver's words (read again to get them)."""
    sensor = session.hardware().slots[n].sensors[k]
    try:
        await session.io(sensor.read_c)
    except HashbayError as exc:
        return str(exc)
    return "no reading (it answered only on the second try: a noisy bus?)"
