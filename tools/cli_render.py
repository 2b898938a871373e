"""Text for people: the tables and sentences `hashbay` prints (scripts use `--json`).

Everything here takes the agent's JSON as it arrives and copes with missing or extra
fields, so an older CLI still prints something sensible against a newer agent.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hashbay.agent.core.fault_codes import FaultCode, lookup

NONE = "-"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns padded to fit; numbers right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, text in enumerate(row[: len(widths)]):
            widths[i] = max(widths[i], len(text))
    numeric = [
        all(_is_number(row[i]) for row in cells if i < len(row) and row[i] != NONE)
        and any(i < len(row) and row[i] != NONE for row in cells)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = []
        for i, text in enumerate(values):
            width = widths[i] if i < len(widths) else len(text)
            parts.append(text.rjust(width) if numeric[i] else text.ljust(width))
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(headers)), *(line(row) for row in cells)])


def _cell(value: Any) -> str:
    if value is None or value == "":
        return NONE
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def ths(hashrate_hs: Any) -> str:
    return f"{hashrate_hs / 1e12:.2f}" if isinstance(hashrate_hs, int | float) else NONE


def hottest(temps: Any) -> float | None:
    readings = [t for t in temps or () if isinstance(t, int | float)]
    return max(readings) if readings else None


def clock(at: Any) -> str:
    if not isinstance(at, int | float) or at <= 0:
        return NONE
    return time.strftime("%H:%M:%S", time.localtime(at))


def _health(slot: Mapping[str, Any]) -> Mapping[str, Any]:
    health = slot.get("health")
    return health if isinstance(health, dict) else {}


def slots_table(slots: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for slot in slots:
        health = _health(slot)
        score = health.get("score")
        rows.append(
            (
                slot.get("slot"),
                slot.get("state"),
                slot.get("serial"),
                ths(health.get("hashrate_hs")) if health else None,
                f"{score:.0f}" if isinstance(score, int | float) else None,
                hottest(slot.get("temps_c")),
                slot.get("power_w"),
                slot.get("freq_mhz"),
                slot.get("locate") if slot.get("locate") != "off" else None,
                slot.get("detail"),
            )
        )
    headers = ("SLOT", "STATE", "SERIAL", "TH/s", "HEALTH", "TEMP°C", "POWER W", "MHz")
    return table((*headers, "LOCATE", "DETAIL"), rows)


def status_text(result: Mapping[str, Any]) -> str:
    miner = result.get("miner") or {}
    slots = result.get("slots") or []
    hashing = sum(1 for s in slots if s.get("state") in ("hashing", "degraded"))
    lines = [
        f"{miner.get('name', '?')}: {hashing}/{len(slots)} slots hashing, "
        f"{ths(miner.get('hashrate_hs'))} TH/s"
    ]
    psu = miner.get("psu")
    if isinstance(psu, dict):
        lines.append(
            f"PSU: {_num(psu.get('input_w'), 'W')} in, {_num(psu.get('output_w'), 'W')} out, "
            f"{_num(psu.get('vin_v'), 'V')}, {_num(psu.get('temp_c'), '°C')}"
        )
    for problem in miner.get("psu_problems") or []:
        lines.append(f"PSU problem: {problem}")
    fans = miner.get("fans") or []
    if fans:
        stalled = sum(1 for f in fans if f.get("stalled"))
        rpms = ", ".join(_num(f.get("rpm"), "") for f in fans)
        lines.append(f"Fans: {len(fans) - stalled}/{len(fans)} ok ({rpms} RPM)")
    lines += noise_and_blocks(miner, ("power", "thermal"))
    lines += ["", slots_table(slots)]
    return "\n".join(lines)


def slot_text(detail: Mapping[str, Any], *, all_chips: bool = False) -> str:
    slot = detail.get("status")
    if not isinstance(slot, dict):
        return "no such slot"
    n = slot.get("slot")
    lines = [f"Slot {n}: {slot.get('state')} since {clock(slot.get('since'))}"]
    if slot.get("detail"):
        lines[0] += f" — {slot['detail']}"
    known = lookup(slot["fault_code"]) if isinstance(slot.get("fault_code"), int) else None
    if known is not None:
        lines.append(f"  Fault code  {known.code} {known.name} ({known.severity}): {known.action}")
    if slot.get("serial"):
        lines.append(f"  Module      {slot['serial']} ({slot.get('model') or 'unknown model'})")
    health = _health(slot)
    if health:
        lines.append(
            f"  Health      {health.get('score', 0):.0f} ({health.get('level')}): "
            f"{ths(health.get('hashrate_hs'))} of {ths(health.get('expected_hs'))} TH/s, "
            f"{health.get('chips_answering')}/{health.get('chips_total')} chips answering, "
            f"hardware errors {100 * float(health.get('hw_error_rate') or 0):.2f} %"
        )
        for reason in health.get("reasons") or []:
            lines.append(f"    - {reason.get('text')} (-{reason.get('penalty', 0):.0f})")
        worst = health.get("worst_chips") or []
        if worst:
            named = ", ".join(f"chip {c} {100 * r:.1f} %" for c, r in worst[:5])
            lines.append(f"    worst chips: {named}")
    prediction = slot.get("prediction")
    if isinstance(prediction, dict):
        ttf = prediction.get("time_to_failure_s")
        when = f", failure in about {ttf / 3600:.1f} h" if isinstance(ttf, int | float) else ""
        flag = "DEGRADING" if prediction.get("degrading") else "stable"
        lines.append(f"  Prediction  {flag}: {prediction.get('trend') or NONE}{when}")
    temps = ", ".join(_num(t, "°C") for t in slot.get("temps_c") or []) or NONE
    lines.append(
        f"  Rails       {_num(slot.get('board_v'), 'V')}, {_num(slot.get('power_w'), 'W')}, "
        f"{_num(slot.get('freq_mhz'), 'MHz')}; temperatures {temps}"
    )
    extras = {
        k: slot.get(k) for k in ("point", "budget_w", "throttle_reason", "restarts", "tuning")
    }
    extras = {k: v for k, v in extras.items() if v not in (None, "", 0)}
    if extras:
        lines.append(f"  Control     {flat(extras)}")
    lines.append(f"  Locate LED  {slot.get('locate', 'off')}")
    lines += _bus_lines(slot.get("bus") or [])
    chips = detail.get("chips") or []
    if chips:
        shown = sorted(chips, key=lambda c: (-(c.get("hw_errors") or 0), c.get("chip", 0)))
        if not all_chips:
            shown = shown[:8]
        lines += ["", f"Chips ({len(chips)}; {'all' if all_chips else 'most errors first'}):"]
        lines.append(
            table(
                ("CHIP", "MHz", "NONCES", "HW ERR", "TIMEOUTS"),
                (
                    (
                        c.get("chip"),
                        c.get("freq_mhz"),
                        c.get("nonces"),
                        c.get("hw_errors"),
                        c.get("timeouts"),
                    )
                    for c in shown
                ),
            )
        )
    return "\n".join(lines)


def _bus_lines(devices: Sequence[Any]) -> list[str]:
    """The slot's I2C devices that failed any transaction, one line each."""
    lines = []
    for device in devices:
        if not isinstance(device, dict):
            continue
        kinds = [
            f"{device.get(key)} {name}"
            for key, name in (
                ("nacks", "NACKs"),
                ("pec_errors", "PEC errors"),
                ("timeouts", "timeouts"),
                ("bus_errors", "bus errors"),
            )
            if device.get(key)
        ]
        if not kinds:
            continue
        share = float(device.get("error_share") or 0)
        noisy = ", NOISY" if device.get("noisy") else ""
        address = device.get("address")
        where = f"0x{address:02x}" if isinstance(address, int) else "?"
        lines.append(
            f"  Bus         {device.get('device')} {where}: {', '.join(kinds)} "
            f"({100 * share:.1f} % failing lately{noisy})"
        )
    return lines


def fans_text(result: Mapping[str, Any]) -> str:
    fans = result.get("fans") or []
    rows = [
        (
            n,
            f"{100 * f.get('duty', 0):.0f}",
            _num(f.get("rpm"), ""),
            "STALLED" if f.get("stalled") else "ok",
        )
        for n, f in enumerate(fans)
    ]
    lines = [table(("FAN", "DUTY %", "RPM", "STATE"), rows)]
    psu = result.get("psu")
    if isinstance(psu, dict):
        lines.append(f"PSU: {_num(psu.get('input_w'), 'W')} in, {_num(psu.get('temp_c'), '°C')}")
    lines += noise_and_blocks(result, ("thermal", "power"))
    return "\n".join(lines)


def noise_and_blocks(data: Mapping[str, Any], keys: tuple[str, ...]) -> list[str]:
    """The fan noise estimate and the governor/thermal blocks, a line each."""
    lines = []
    noise = data.get("fan_noise_dba")
    if isinstance(noise, int | float):
        lines.append(f"Fan noise: about {noise:.0f} dBA")
    for key in keys:
        block = data.get(key)
        if isinstance(block, dict) and block:
            lines.append(f"{key.capitalize()}: {flat(block)}")
    return lines


def pools_text(pools: Sequence[Mapping[str, Any]] | None) -> str:
    """The pools in priority order with their state, quota and the split observed."""
    if not pools:
        return "no pools: the chains hash on local work"
    rows = [
        (
            p.get("pool"),
            p.get("url"),
            p.get("user"),
            p.get("state"),
            "*" if p.get("active") else "",
            p.get("quota") or "-",
            p.get("accepted"),
            f"{p.get('split_percent', 0):.1f} %",
            p.get("last_error") or "",
        )
        for p in pools
    ]
    headers = ("#", "url", "user", "state", "mining", "quota", "accepted", "split", "error")
    return table(headers, rows)


def codes_text(entries: Iterable[FaultCode]) -> str:
    lines = []
    for c in entries:
        lines += [f"{c.code} {c.name} ({c.severity})", f"  {c.meaning}", f"  Do: {c.action}"]
    return "\n".join(lines)


def _code_note(details: Any) -> str:
    code = details.get("code") if isinstance(details, Mapping) else None
    known = lookup(code) if isinstance(code, int) else None
    return f" [{known.code} {known.name}]" if known is not None else ""


def event_line(event: Mapping[str, Any]) -> str:
    slot = event.get("slot")
    where = f"slot {slot}" if slot is not None else "miner"
    serial = f" {event['serial']}" if event.get("serial") else ""
    note = _code_note(event.get("details"))
    kind = f"{event.get('kind')}{note}"
    return f"{clock(event.get('at'))}  {where}{serial}  {kind}: {event.get('message')}"


def change_text(name: str, result: Any) -> str:
    """What a change command did, in a line: `slot 1: draining`, `controls: quiet=on`."""
    if not isinstance(result, dict) or not result:
        return f"{name}: done"
    data = dict(result)
    if "slot" in data:
        slot = data.pop("slot")
        return f"slot {slot}: {flat(data) or 'done'}"
    return f"{name}: {flat(data)}"


def flat(data: Mapping[str, Any], prefix: str = "") -> str:
    """`a=1, b.c=2` from nested maps; None values left out."""
    parts = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            inner = flat(value, f"{name}.")
            if inner:
                parts.append(inner)
        elif value is not None and value != "":
            parts.append(f"{name}={_short(value)}")
    return ", ".join(parts)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)


def _num(value: Any, unit: str) -> str:
    if not isinstance(value, int | float):
        return NONE
    text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
    return f"{text} {unit}".strip()
