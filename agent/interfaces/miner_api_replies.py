"""The cgminer RPC API's replies, built from what the agent knows; pure, no I/O.

Fleet tools (pyasic, Home Assistant integrations, cgminer monitors) parse these by field
name, so names and units follow cgminer 4.x (`MHS` = megahashes per second, `Elapsed` =
seconds, temperatures in °C) with the bmminer-style `stats` keys (`chain_rate1` in GH/s,
`fan1` in RPM, `temp1`) that Antminer-oriented tools read. Slot N is device `ASC` N, every
slot is listed (an empty one as not enabled), so an id never changes meaning.

Honesty over flattery: until a pool is configured the chains hash on locally generated
work, so there are no shares: `Accepted`, `Rejected`, `Utility` are 0 and `pools` lists
none. `Diff1 Work` counts the difficulty-1 shares the verified nonces stand for. The
rolling rates (`MHS 5s`, `1m`, `5m`, `15m`) are the health model's windowed rate;
`MHS av` and `Total MH` come from the chains' cumulative work since the agent started
(a module's own since its chain came up).

Replies end in a NUL byte; plain-text replies use cgminer's `KEY=value,...|` sections
with `,` `|` `=` `\\` escaped by a backslash.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hashbay.agent.core.status import SlotState, SlotStatus

API_VERSION = "3.7"  # the cgminer RPC API level whose commands and fields we follow
MAX_REQUEST_BYTES = 8192
MAX_JOINED = 16  # commands in one "a+b+c" request
DIFF1_HASHES = 2.0**32


class Code:
    """cgminer's status codes (api.c), so clients that switch on them keep working."""

    POOL = 7
    DEVS = 9
    NODEVS = 10
    SUMMARY = 11
    INVALID_COMMAND = 14
    MISSING_ID = 15
    VERSION = 22
    INVALID_JSON = 23
    MISSING_COMMAND = 24
    CONFIG = 33
    ACCESS_DENIED = 45
    ACCESS_OK = 46
    PGA_NONE = 56
    PGA_COUNT = 59
    DEVDETAILS = 69
    STATS = 70
    CHECK = 72
    COIN = 78
    ASC_COUNT = 104
    ASC_DEVICE = 106
    INVALID_ASC = 107
    ASC_ENABLED = 110
    ASC_DISABLED = 111
    ASC_IDENTIFY = 113
    TEMPS = 201  # as Braiins OS
    FANS = 202
    POWER = 203
    REFUSED = 300  # hashbay: a valid change the agent cannot carry out now


class Severity:
    SUCCESS = "S"
    INFO = "I"
    WARNING = "W"
    ERROR = "E"


# Sections whose plain-text form is prefixed with the section name ("SUMMARY,Elapsed=...|");
# the others' items start with their own id key ("ASC=0,...|"), as in cgminer.
_NAMED_IN_TEXT = frozenset({"SUMMARY", "VERSION", "CONFIG", "COIN", "ASCS", "PGAS", "CHECK"})


@dataclass(frozen=True)
class ApiReply:
    severity: str
    code: int
    message: str
    section: str | None = None
    items: tuple[Mapping[str, Any], ...] = ()

    @property
    def ok(self) -> bool:
        return self.severity in (Severity.SUCCESS, Severity.INFO)


def error(code: int, message: str) -> ApiReply:
    return ApiReply(Severity.ERROR, code, message)


# -- requests -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiRequest:
    """One request: its commands (several only for JSON "a+b"), the parameter, the form."""

    commands: tuple[str, ...]
    parameter: str | None
    json: bool


class RequestError(ValueError):
    """The request cannot be understood; carries the reply that says why."""

    def __init__(self, reply: ApiReply, *, json: bool) -> None:
        super().__init__(reply.message)
        self.reply = reply
        self.json = json


def parse_request(raw: bytes) -> ApiRequest:
    """JSON `{"command": "summary+devs", "parameter": "0"}` or plain text `pga|0`."""
    text = _text(raw)
    if text.startswith("{") or text.startswith("["):
        return _parse_json(text)
    command, _, parameter = text.partition("|")
    command = command.strip().lower()
    if not command or not _is_name(command):
        raise RequestError(error(Code.INVALID_COMMAND, "Invalid command"), json=False)
    return ApiRequest((command,), parameter if "|" in text else None, json=False)


def _text(raw: bytes) -> str:
    if len(raw) > MAX_REQUEST_BYTES:
        raise RequestError(error(Code.INVALID_JSON, "Request too long"), json=raw[:1] == b"{")
    try:
        return raw.decode("utf-8").strip().strip("\0").strip()
    except UnicodeDecodeError:
        raise RequestError(error(Code.INVALID_COMMAND, "Invalid command"), json=False) from None


def _parse_json(text: str) -> ApiRequest:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise RequestError(error(Code.INVALID_JSON, "Invalid JSON"), json=True) from None
    if not isinstance(data, dict):
        raise RequestError(error(Code.INVALID_JSON, "Invalid JSON"), json=True)
    command = data.get("command")
    if not isinstance(command, str) or not command:
        raise RequestError(error(Code.MISSING_COMMAND, "Missing JSON 'command'"), json=True)
    parts = tuple(part.strip().lower() for part in command.split("+"))
    if len(parts) > MAX_JOINED or not all(_is_name(part) for part in parts):
        raise RequestError(error(Code.INVALID_COMMAND, "Invalid command"), json=True)
    parameter = data.get("parameter")
    if isinstance(parameter, bool) or (
        parameter is not None and not isinstance(parameter, str | int | float)
    ):
        raise RequestError(error(Code.INVALID_JSON, "Invalid JSON"), json=True)
    return ApiRequest(parts, None if parameter is None else str(parameter), json=True)


def _is_name(word: str) -> bool:
    return 0 < len(word) <= 32 and word.isascii() and word.replace("_", "").isalnum()


# -- what the replies are built from ------------------------------------------------------


@dataclass(frozen=True)
class DeviceCounters:
    """Cumulative counters of a module's chain since it was enumerated (from memory)."""

    nonces: int
    hw_errors: int
    work_hashes: float
    chips: int
    freq_mhz: float  # mean over the chips


@dataclass(frozen=True)
class FanView:
    duty: float  # 0..1
    rpm: float
    stalled: bool


@dataclass(frozen=True)
class PoolView:
    """One pool as the pool client (a later issue) reports it."""

    url: str
    user: str
    alive: bool
    stratum_active: bool
    priority: int = 0
    accepted: int = 0
    rejected: int = 0
    stale: int = 0
    difficulty_accepted: float = 0.0
    difficulty_rejected: float = 0.0
    last_share_time: int = 0
    quota: int = 0  # its share of the hashrate when pools split it (0: failover only)
    split_percent: float = 0.0  # its part of the shares all pools accepted
    enabled: bool = True


@dataclass(frozen=True)
class Totals:
    work_hashes: float = 0.0
    nonces: int = 0
    hw_errors: int = 0


class WorkMeter:
    """Work since the agent started, across module swaps and re-enumerations.

    A chain's counters start from zero each time it is enumerated; the meter notices the
    restart (a counter went down, or the module went away) and keeps what the old chain
    had done. Observed on every API request and every few seconds besides.
    """

    def __init__(self) -> None:
        self._last: dict[int, DeviceCounters] = {}
        self._since: dict[int, float] = {}
        self._retired = Totals()

    def observe(self, now: float, devices: Sequence[DeviceCounters | None]) -> None:
        for slot, device in enumerate(devices):
            previous = self._last.get(slot)
            restarted = previous is not None and (
                device is None
                or device.work_hashes < previous.work_hashes
                or device.nonces < previous.nonces
                or device.hw_errors < previous.hw_errors
            )
            if restarted and previous is not None:
                self._retired = _add(self._retired, previous)
                del self._last[slot]
                self._since.pop(slot, None)
            if device is not None:
                self._since.setdefault(slot, now)
                self._last[slot] = device

    def totals(self) -> Totals:
        totals = self._retired
        for device in self._last.values():
            totals = _add(totals, device)
        return totals

    def since(self, slot: int) -> float | None:
        """When the meter first saw the slot's current chain."""
        return self._since.get(slot)


def _add(totals: Totals, device: DeviceCounters) -> Totals:
    return Totals(
        totals.work_hashes + device.work_hashes,
        totals.nonces + device.nonces,
        totals.hw_errors + device.hw_errors,
    )


@dataclass(frozen=True)
class MinerView:
    """Everything one reply needs, taken at one moment from the agent's state."""

    now: float
    started_at: float
    version: str
    name: str
    slots: tuple[SlotStatus, ...]
    devices: tuple[DeviceCounters | None, ...]
    device_since: tuple[float | None, ...]
    totals: Totals
    fans: tuple[FanView, ...] = ()
    psu_input_w: float | None = None
    pools: tuple[PoolView, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    mode: str = "run"  # the power governor's: run, min (held at minimum) or sleep
    power_limit_w: float | None = None  # the governor's input-power target, if any
    hostname: str = ""
    psu_problems: tuple[str, ...] = ()
    build: str = ""  # when this agent's code was built, for CompileTime

    @property
    def description(self) -> str:
        return f"hashbay {self.version}"

    @property
    def elapsed_s(self) -> int:
        return max(0, int(self.now - self.started_at))


# -- replies ------------------------------------------------------------------------------

HASHING = frozenset({SlotState.HASHING.value, SlotState.DEGRADED.value})
# (Enabled, Status) as cgminer says them, by slot state; anything else is ("Y", "Unknown").
_DEVICE_STATUS: Mapping[str, tuple[str, str]] = {
    "empty": ("N", "NoStart"),
    "inserted": ("Y", "Initialising"),
    "identifying": ("Y", "Initialising"),
    "powering": ("Y", "Initialising"),
    "enumerating": ("Y", "Initialising"),
    "ramping": ("Y", "Initialising"),
    "hashing": ("Y", "Alive"),
    "degraded": ("Y", "Sick"),
    "fault": ("Y", "Dead"),
    "sleeping": ("N", "NoStart"),
    "draining": ("N", "Alive"),
    "safe_to_remove": ("N", "NoStart"),
}


def version(view: MinerView) -> ApiReply:
    """`Miner` and `Firmware` carry the marker fleet tools recognise hashbay by ("hashbay");
    bmminer-style tools show `CompileTime` as the firmware version (pyasic's `fw_ver`)."""
    item = {
        "CGMiner": view.version,
        "API": API_VERSION,
        "Miner": f"hashbay {view.version}",
        "Firmware": f"hashbay {view.version}",
        "CompileTime": view.build or f"hashbay {view.version}",
        "Type": f"hashbay {_models(view)}".strip(),
    }
    return ApiReply(Severity.SUCCESS, Code.VERSION, "CGMiner versions", "VERSION", (item,))


def config(view: MinerView) -> ApiReply:
    item = {
        "ASC Count": len(view.slots),
        "PGA Count": 0,
        "Pool Count": len(view.pools),
        "Strategy": "Failover",
        "Log Interval": 5,
        "Device Code": "ASC",
        "OS": "Linux",
        "Hotplug": "Slots",
        "Hostname": view.hostname,
        # LuxOS's name: the locate LEDs, "off" unless one of them is lit or blinking.
        "RedLed": _red_led(view),
    }
    return ApiReply(Severity.SUCCESS, Code.CONFIG, "CGMiner config", "CONFIG", (item,))


def summary(view: MinerView) -> ApiReply:
    rate_mhs = sum(_rate_hs(s) for s in view.slots) / 1e6
    total_mh = view.totals.work_hashes / 1e6
    elapsed = view.elapsed_s
    av_mhs = total_mh / elapsed if elapsed else 0.0
    diff1 = view.totals.work_hashes / DIFF1_HASHES
    item = {
        "Elapsed": elapsed,
        "MHS av": round(av_mhs, 2),
        "MHS 5s": round(rate_mhs, 2),
        "MHS 1m": round(rate_mhs, 2),
        "MHS 5m": round(rate_mhs, 2),
        "MHS 15m": round(rate_mhs, 2),
        "GHS 5s": round(rate_mhs / 1e3, 2),
        "GHS av": round(av_mhs / 1e3, 2),
        "Found Blocks": 0,
        "Getworks": 0,
        "Accepted": sum(p.accepted for p in view.pools),
        "Rejected": sum(p.rejected for p in view.pools),
        "Hardware Errors": view.totals.hw_errors,
        "Utility": 0.0,
        "Discarded": 0,
        "Stale": sum(p.stale for p in view.pools),
        "Get Failures": 0,
        "Local Work": 0,
        "Remote Failures": 0,
        "Network Blocks": 0,
        "Total MH": round(total_mh, 4),
        "Work Utility": round(diff1 / elapsed * 60, 2) if elapsed else 0.0,
        "Difficulty Accepted": sum(p.difficulty_accepted for p in view.pools),
        "Difficulty Rejected": sum(p.difficulty_rejected for p in view.pools),
        "Difficulty Stale": 0.0,
        "Best Share": 0,
        "Device Hardware%": _percent(view.totals.hw_errors, view.totals.nonces),
        "Device Rejected%": 0.0,
        "Pool Rejected%": 0.0,
        "Pool Stale%": 0.0,
        "Last getwork": 0,
        # Where btminer-family tools read power: watts at the PSU input, the target.
        "Power": round(view.psu_input_w) if view.psu_input_w is not None else 0,
        "Power Limit": round(view.power_limit_w) if view.power_limit_w else 0,
        "Power Mode": view.mode,
    }
    return ApiReply(Severity.SUCCESS, Code.SUMMARY, "Summary", "SUMMARY", (item,))


def devs(view: MinerView, *, enabled_only: bool = False) -> ApiReply:
    items = tuple(
        _device(view, status)
        for status in view.slots
        if not enabled_only or _DEVICE_STATUS.get(status.state.value, ("Y", ""))[0] == "Y"
    )
    if not items:
        return ApiReply(Severity.ERROR, Code.NODEVS, "No ASCs")
    return ApiReply(Severity.SUCCESS, Code.DEVS, f"{len(items)} ASC(s)", "DEVS", items)


def asc(view: MinerView, parameter: str | None) -> ApiReply:
    slot = device_id(view, parameter)
    if isinstance(slot, ApiReply):
        return slot
    item = _device(view, view.slots[slot])
    return ApiReply(Severity.SUCCESS, Code.ASC_DEVICE, f"ASC{slot}", "ASC", (item,))


def asccount(view: MinerView) -> ApiReply:
    item = {"Count": len(view.slots)}
    return ApiReply(Severity.SUCCESS, Code.ASC_COUNT, "ASC count", "ASCS", (item,))


def pgacount(view: MinerView) -> ApiReply:
    return ApiReply(Severity.SUCCESS, Code.PGA_COUNT, "PGA count", "PGAS", ({"Count": 0},))


def pga(view: MinerView) -> ApiReply:
    return error(Code.PGA_NONE, "No PGAs")


def _device(view: MinerView, status: SlotStatus) -> dict[str, Any]:
    slot = status.slot
    enabled, alive = _DEVICE_STATUS.get(status.state.value, ("Y", "Unknown"))
    counters = view.devices[slot] if slot < len(view.devices) else None
    since = view.device_since[slot] if slot < len(view.device_since) else None
    elapsed = max(0.0, view.now - since) if since is not None else 0.0
    work = counters.work_hashes if counters else 0.0
    nonces = counters.nonces if counters else 0
    hw = counters.hw_errors if counters else 0
    rate_mhs = _rate_hs(status) / 1e6
    health = status.health
    return {
        "ASC": slot,
        "Name": "HBY",
        "ID": slot,
        "Enabled": enabled,
        "Status": alive,
        "Temperature": _hottest(status.temps_c),
        "MHS av": round(work / elapsed / 1e6, 2) if elapsed > 0 else 0.0,
        "MHS 5s": round(rate_mhs, 2),
        "MHS 1m": round(rate_mhs, 2),
        "MHS 5m": round(rate_mhs, 2),
        "MHS 15m": round(rate_mhs, 2),
        "Nominal MHS": round(health.expected_hs / 1e6, 2) if health else 0.0,
        "Accepted": 0,
        "Rejected": 0,
        "Hardware Errors": hw,
        "Utility": 0.0,
        "Last Share Pool": -1,
        "Last Share Time": 0,
        "Total MH": round(work / 1e6, 4),
        "Diff1 Work": round(work / DIFF1_HASHES, 2),
        "Difficulty Accepted": 0.0,
        "Difficulty Rejected": 0.0,
        "Last Share Difficulty": 0.0,
        "Last Valid Work": int(view.now) if status.state.value in HASHING else 0,
        "Device Hardware%": _percent(hw, nonces),
        "Device Rejected%": 0.0,
        "Device Elapsed": int(elapsed),
        "Serial": status.serial or "",
        "Slot State": status.state.value,
        "Health": round(health.score, 1) if health else 0.0,
        # The slot's I2C devices (EEPROM, sensors, DC-DC, hot-swap) since the agent started.
        "Bus NACKs": sum(d.nacks for d in status.bus),
        "Bus PEC Errors": sum(d.pec_errors for d in status.bus),
        "Bus Timeouts": sum(d.timeouts for d in status.bus),
        "Bus Errors": sum(d.bus_errors for d in status.bus),
        "Bus Noisy Devices": ", ".join(
            f"{d.device} 0x{d.address:02x}" for d in status.bus if d.noisy
        ),
    }


def devdetails(view: MinerView) -> ApiReply:
    items = []
    for status in view.slots:
        counters = view.devices[status.slot] if status.slot < len(view.devices) else None
        chips = status.health.chips_total if status.health else (counters.chips if counters else 0)
        items.append(
            {
                "DEVDETAILS": status.slot,
                "Name": "HBY",
                "ID": status.slot,
                "Driver": "hashbay",
                "Kernel": "",
                "Model": status.model or "",
                "Device Path": f"slot{status.slot}",
                "Chips": chips,
                "Serial": status.serial or "",
            }
        )
    return ApiReply(Severity.SUCCESS, Code.DEVDETAILS, "Device Details", "DEVDETAILS", tuple(items))


def stats(view: MinerView) -> ApiReply:
    """cgminer's header entry, then one bmminer-style entry for the whole miner."""
    header = {
        "CGMiner": view.version,
        "Miner": f"hashbay {view.version}",
        "CompileTime": view.build or f"hashbay {view.version}",
        "Type": f"hashbay {_models(view)}".strip(),
    }
    rate_ghs = sum(_rate_hs(s) for s in view.slots) / 1e9
    elapsed = view.elapsed_s
    av_ghs = view.totals.work_hashes / elapsed / 1e9 if elapsed else 0.0
    freqs = [d.freq_mhz for d in view.devices if d is not None and d.freq_mhz > 0]
    entry: dict[str, Any] = {
        "STATS": 0,
        "ID": "HBY0",
        "Elapsed": elapsed,
        "Calls": 0,
        "Wait": 0.0,
        "Max": 0.0,
        "Min": 99999999.0,
        "GHS 5s": round(rate_ghs, 2),
        "GHS av": round(av_ghs, 2),
        "rate_unit": "GH",
        "total_rate": round(rate_ghs, 2),
        "total_rateideal": round(
            sum(s.health.expected_hs for s in view.slots if s.health and _hashing(s)) / 1e9, 2
        ),
        "miner_count": len(view.slots),
        "frequency": round(sum(freqs) / len(freqs)) if freqs else 0,
        "fan_num": len(view.fans),
        "total_power": round(view.psu_input_w) if view.psu_input_w is not None else 0,
        "chain_power": f"{view.psu_input_w or 0:.0f} W",
    }
    for n, fan in enumerate(view.fans, start=1):
        entry[f"fan{n}"] = round(fan.rpm)
    temps = [t for s in view.slots for t in s.temps_c if t is not None]
    entry["temp_num"] = len(view.slots)
    entry["temp_max"] = round(max(temps)) if temps else 0
    for status in view.slots:
        n = status.slot + 1
        readings = [t for t in status.temps_c if t is not None]
        counters = view.devices[status.slot] if status.slot < len(view.devices) else None
        health = status.health
        answering = health.chips_answering if health else 0
        total = health.chips_total if health else 0
        entry[f"temp{n}"] = round(max(readings)) if readings else 0
        entry[f"temp2_{n}"] = round(min(readings)) if readings else 0
        entry[f"chain_acn{n}"] = answering if _present(status) else 0
        entry[f"chain_acs{n}"] = _chip_map(answering, total) if _present(status) else ""
        entry[f"chain_hw{n}"] = counters.hw_errors if counters else 0
        entry[f"chain_rate{n}"] = f"{_rate_hs(status) / 1e9:.2f}" if _present(status) else ""
        entry[f"chain_rateideal{n}"] = round(health.expected_hs / 1e9, 2) if health else 0.0
        entry[f"freq_avg{n}"] = round(counters.freq_mhz) if counters else 0
        entry[f"chain_power{n}"] = round(status.power_w or 0.0, 1)
        entry[f"chain_serial{n}"] = status.serial or ""
        entry[f"chain_acn_expected{n}"] = total
    return ApiReply(Severity.SUCCESS, Code.STATS, "CGMiner stats", "STATS", (header, entry))


def fans(view: MinerView) -> ApiReply:
    items = tuple(
        {"FAN": n, "ID": n, "RPM": round(fan.rpm), "Speed": round(fan.duty * 100)}
        for n, fan in enumerate(view.fans)
    )
    return ApiReply(Severity.SUCCESS, Code.FANS, f"{len(items)} Fan(s)", "FANS", items)


def temps(view: MinerView) -> ApiReply:
    items: list[dict[str, Any]] = []
    for status in view.slots:
        readings = [t for t in status.temps_c if t is not None]
        if not readings:
            continue
        items.append(
            {
                "TEMP": len(items),
                "ID": status.slot,
                "Board": round(min(readings), 2),
                "Chip": round(max(readings), 2),
            }
        )
    return ApiReply(Severity.SUCCESS, Code.TEMPS, f"{len(items)} Temp(s)", "TEMPS", tuple(items))


def power(view: MinerView) -> ApiReply:
    watts = round(view.psu_input_w) if view.psu_input_w is not None else 0
    item = {"POWER": 0, "PSU": view.psu_input_w is not None, "Watts": watts}
    return ApiReply(Severity.SUCCESS, Code.POWER, "Power", "POWER", (item,))


def pools(view: MinerView) -> ApiReply:
    items = tuple(
        {
            "POOL": n,
            "URL": pool.url,
            "Status": "Disabled" if not pool.enabled else "Alive" if pool.alive else "Dead",
            "Priority": pool.priority,
            "Quota": pool.quota,
            "Split%": pool.split_percent,
            "Long Poll": "N",
            "Getworks": 0,
            "Accepted": pool.accepted,
            "Rejected": pool.rejected,
            "Works": 0,
            "Discarded": 0,
            "Stale": pool.stale,
            "Get Failures": 0,
            "Remote Failures": 0,
            "User": pool.user,
            "Last Share Time": pool.last_share_time,
            "Diff1 Shares": 0,
            "Proxy Type": "",
            "Proxy": "",
            "Difficulty Accepted": pool.difficulty_accepted,
            "Difficulty Rejected": pool.difficulty_rejected,
            "Difficulty Stale": 0.0,
            "Last Share Difficulty": 0.0,
            "Has Stratum": True,
            "Stratum Active": pool.stratum_active,
            "Stratum URL": pool.url.split("://", 1)[-1] if pool.stratum_active else "",
            "Has GBT": False,
            "Best Share": 0,
            "Pool Rejected%": _percent(pool.rejected, pool.accepted),
            "Pool Stale%": _percent(pool.stale, pool.accepted),
        }
        for n, pool in enumerate(view.pools)
    )
    return ApiReply(Severity.SUCCESS, Code.POOL, f"{len(items)} Pool(s)", "POOLS", items)


def coin(view: MinerView) -> ApiReply:
    item = {
        "Hash Method": "sha256",
        "Current Block Time": 0.0,
        "Current Block Hash": "",
        "LP": False,
        "Network Difficulty": 0.0,
    }
    return ApiReply(Severity.SUCCESS, Code.COIN, "CGMiner coin", "COIN", (item,))


READS: Mapping[str, Callable[[MinerView, str | None], ApiReply]] = {
    "version": lambda v, p: version(v),
    "config": lambda v, p: config(v),
    "summary": lambda v, p: summary(v),
    "devs": lambda v, p: devs(v),
    "edevs": lambda v, p: devs(v, enabled_only=True),
    "asc": asc,
    "asccount": lambda v, p: asccount(v),
    "pga": lambda v, p: pga(v),
    "pgacount": lambda v, p: pgacount(v),
    "pools": lambda v, p: pools(v),
    "stats": lambda v, p: stats(v),
    "estats": lambda v, p: stats(v),
    "devdetails": lambda v, p: devdetails(v),
    "fans": lambda v, p: fans(v),
    "temps": lambda v, p: temps(v),
    "power": lambda v, p: power(v),
    "coin": lambda v, p: coin(v),
}


def check(command: str | None, *, exists: bool, allowed: bool) -> ApiReply:
    if not command:
        return error(71, "Missing check cmd")
    item = {"Exists": "Y" if exists else "N", "Access": "Y" if exists and allowed else "N"}
    return ApiReply(Severity.SUCCESS, Code.CHECK, "Check command", "CHECK", (item,))


def device_id(view: MinerView, parameter: str | None) -> int | ApiReply:
    """The slot an `asc|N`-style parameter names, or the error reply cgminer would give."""
    if parameter is None or not parameter.strip():
        return error(Code.MISSING_ID, "Missing device id parameter")
    text = parameter.strip()
    last = len(view.slots) - 1
    if not (text.isascii() and text.isdigit() and len(text) <= 6):
        return error(Code.INVALID_ASC, f"Invalid ASC id {text[:12]} - range is 0 - {last}")
    slot = int(text)
    if slot > last:
        return error(Code.INVALID_ASC, f"Invalid ASC id {slot} - range is 0 - {last}")
    return slot


def _rate_hs(status: SlotStatus) -> float:
    return status.health.hashrate_hs if status.health and _hashing(status) else 0.0


def _hashing(status: SlotStatus) -> bool:
    return status.state.value in HASHING


def _present(status: SlotStatus) -> bool:
    return status.state is not SlotState.EMPTY


def _hottest(temps_c: Iterable[float | None]) -> float:
    readings = [t for t in temps_c if t is not None and math.isfinite(t)]
    return round(max(readings), 2) if readings else 0.0


def _percent(part: float, whole: float) -> float:
    total = part + whole
    return round(part / total * 100, 4) if total else 0.0


def _red_led(view: MinerView) -> str:
    modes = {s.locate for s in view.slots} - {"off"}
    return "blink" if "blink" in modes else "on" if modes else "off"


def _chip_map(answering: int, total: int) -> str:
    """bmminer's chip status string: `o` per answering chip, `x` per silent one, in 8s."""
    marks = "o" * answering + "x" * max(0, total - answering)
    return " " + " ".join(marks[i : i + 8] for i in range(0, len(marks), 8)) if marks else ""


def _models(view: MinerView) -> str:
    models = sorted({s.model for s in view.slots if s.model})
    return "/".join(models)


# -- rendering ----------------------------------------------------------------------------


def status_entry(reply: ApiReply, view_now: float, description: str) -> dict[str, Any]:
    return {
        "STATUS": reply.severity,
        "When": int(view_now),
        "Code": reply.code,
        "Msg": reply.message,
        "Description": description,
    }


def reply_object(reply: ApiReply, now: float, description: str) -> dict[str, Any]:
    data: dict[str, Any] = {"STATUS": [status_entry(reply, now, description)]}
    if reply.section is not None:
        data[reply.section] = [{k: _finite(v) for k, v in item.items()} for item in reply.items]
    data["id"] = 1
    return data


def render_json(
    replies: Sequence[tuple[str, ApiReply]], now: float, description: str, *, joined: bool
) -> bytes:
    """One reply, or for "a+b" requests `{"a": [reply], "b": [reply], "id": 1}`."""
    if joined:
        data: dict[str, Any] = {
            name: [reply_object(reply, now, description)] for name, reply in replies
        }
        data["id"] = 1
    else:
        data = reply_object(replies[0][1], now, description)
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, default=str)
    return text.encode() + b"\0"


def render_text(reply: ApiReply, now: float, description: str) -> bytes:
    parts = [_text_item(None, status_entry(reply, now, description))]
    for item in reply.items:
        prefix = reply.section if reply.section in _NAMED_IN_TEXT else None
        parts.append(_text_item(prefix, item))
    return "".join(parts).encode() + b"\0"


def _text_item(prefix: str | None, item: Mapping[str, Any]) -> str:
    fields = [prefix] if prefix else []
    fields += [f"{_escape(str(key))}={_escape(_text_value(value))}" for key, value in item.items()]
    return ",".join(fields) + "|"


def _text_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _escape(text: str) -> str:
    for char in ("\\", ",", "|", "="):
        text = text.replace(char, "\\" + char)
    return text


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity; such a number is reported as 0."""
    if isinstance(value, float) and not math.isfinite(value):
        return 0.0
    return value
