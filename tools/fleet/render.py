"""The fleet view in words and in JSON: farm summary, swap queue, one miner in detail."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from hashbay.tools.cli_render import NONE, event_line, table
from hashbay.tools.fleet.model import FarmSummary, SwapItem

QUEUE_ROWS = 50  # the text view shows the head of the queue; --json has all of it


def snapshot(summary: FarmSummary, queue: Sequence[SwapItem]) -> dict[str, Any]:
    """Everything the view shows, as JSON (the queue in full)."""
    return {
        "generated_at": round(time.time(), 3),
        "summary": summary.to_json(),
        "swap_queue": [item.to_json() for item in queue],
    }


def farm_text(summary: FarmSummary, queue: Sequence[SwapItem], *, rows: int = QUEUE_ROWS) -> str:
    parts = [summary_text(summary), "", queue_text(queue, rows=rows)]
    return "\n".join(parts)


def summary_text(summary: FarmSummary) -> str:
    miners = (
        f"Miners: {summary.miners}  online {summary.online}  offline {summary.offline}  "
        f"stale {summary.stale}"
    )
    if summary.unknown:
        miners += f"  no status {summary.unknown}"
    j_per_th = f"{summary.j_per_th:.1f} J/TH" if summary.j_per_th is not None else NONE
    farm = f"Hashrate {hashrate(summary.hashrate_hs)}  power {power(summary.power_w)}  {j_per_th}"
    modules = "  ".join(f"{state} {n}" for state, n in summary.modules.items()) or NONE
    lines = [miners, farm, f"Modules: {modules}"]
    if summary.duplicates:
        lines.append(f"Events: {summary.events} taken, {summary.duplicates} duplicates dropped")
    if summary.rejected:
        lines.append(f"Unreadable messages ignored: {summary.rejected}")
    return "\n".join(lines)


def queue_text(queue: Sequence[SwapItem], *, rows: int = QUEUE_ROWS) -> str:
    if not queue:
        return "Swap queue: empty"
    head = f"Swap queue: {len(queue)} module{'s' if len(queue) != 1 else ''}"
    if len(queue) > rows:
        head += f" (first {rows}; --json for all)"
    body = table(
        ("#", "MINER", "SLOT", "SERIAL", "WHY", "CODE", "FAILS IN", "HEALTH", "REASON"),
        (
            (
                n,
                item.miner + ("" if item.miner_status == "online" else f" ({item.miner_status})"),
                item.slot,
                item.serial,
                item.category.replace("_", " "),
                item.code,
                duration(item.time_to_failure_s),
                None if item.score is None else round(item.score),
                item.reason,
            )
            for n, item in enumerate(queue[:rows], 1)
        ),
    )
    return f"{head}\n{body}"


def miner_text(detail: Mapping[str, Any]) -> str:
    age = detail.get("state_age_s")
    lines = [
        f"Miner {detail['miner']}: {detail['status']}"
        + (f" (state {age:.0f} s old)" if isinstance(age, float) else ""),
        f"Hashrate {hashrate(detail.get('hashrate_hs'))}  power {power(detail.get('power_w'))}  "
        f"hottest {_num(detail.get('hottest_c'), '°C')}",
        "",
        table(
            ("SLOT", "STATE", "SERIAL", "HEALTH", "TH/S", "POWER W", "HOTTEST °C", "DETAIL"),
            (
                (
                    s["slot"],
                    s["state"],
                    s["serial"],
                    None if s["score"] is None else round(s["score"]),
                    None if s["hashrate_hs"] is None else round(s["hashrate_hs"] / 1e12, 2),
                    s["power_w"],
                    _hottest(s["temps_c"]),
                    s["detail"],
                )
                for s in detail.get("slots", [])
            ),
        ),
    ]
    events = detail.get("events") or []
    if events:
        lines += ["", "Recent events:", *(event_line(e) for e in events)]
    return "\n".join(lines)


def hashrate(value: Any) -> str:
    if not isinstance(value, int | float):
        return NONE
    for unit, scale in (("EH/s", 1e18), ("PH/s", 1e15), ("TH/s", 1e12)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value / 1e12:.3f} TH/s"


def power(value: Any) -> str:
    if not isinstance(value, int | float):
        return NONE
    if value >= 1e6:
        return f"{value / 1e6:.2f} MW"
    if value >= 1e3:
        return f"{value / 1e3:.1f} kW"
    return f"{value:.0f} W"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _hottest(temps: Any) -> float | None:
    readings = [t for t in temps or () if isinstance(t, int | float)]
    return max(readings) if readings else None


def _num(value: Any, unit: str) -> str:
    return f"{value:.1f} {unit}" if isinstance(value, int | float) else NONE
