"""The fleet view as one self-contained HTML page, for a screen on the shift lead's wall.

No server, no script, no external asset: inline CSS and SVG only, so the file opens from
disk anywhere and leaks nothing. With `--every`, the page asks the browser to reload it
at that interval, and `write_atomically` replaces it in one rename, so a reload never
sees half a page. Every string from the broker (miner names, reasons, serials) is
escaped: they come from outside.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path

from hashbay.tools.fleet.model import FarmPoint, FarmSummary, FleetModel, SwapItem
from hashbay.tools.fleet.render import duration, hashrate, power

QUEUE_ROWS = 200
CHART_W, CHART_H = 360, 110
SPARK_W, SPARK_H = 110, 22

STYLE = """
body{font:14px/1.35 system-ui,sans-serif;margin:16px;background:#111;color:#ddd}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:18px 0 6px}
.when{color:#999;margin-bottom:12px}
.tiles{display:flex;flex-wrap:wrap;gap:8px}
.tile{background:#1d1d1d;border-radius:6px;padding:8px 12px;min-width:120px}
.tile b{display:block;font-size:22px;color:#fff}
.charts{display:flex;flex-wrap:wrap;gap:12px}
.chart{background:#1d1d1d;border-radius:6px;padding:6px}
table{border-collapse:collapse;width:100%}
th,td{padding:3px 8px;text-align:left;border-bottom:1px solid #2a2a2a;white-space:nowrap}
td.reason{white-space:normal}
tr.needs_service td,tr.fault td{color:#ff7b72}tr.degrading td{color:#f2cc60}
tr.low_health td{color:#d2a8ff}tr.offline td,tr.stale td{color:#888}
.num{text-align:right}
svg text{fill:#aaa;font:11px system-ui,sans-serif}
"""


def page(
    model: FleetModel,
    summary: FarmSummary,
    queue: Sequence[SwapItem],
    *,
    refresh_s: float | None = None,
    now: Callable[[], float] = time.time,
) -> str:
    title = f"hashbay fleet: {model.prefix}"
    refresh = (
        f'<meta http-equiv="refresh" content="{max(1, round(refresh_s))}">' if refresh_s else ""
    )
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now()))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        refresh,
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<div class="when">as of {stamp}</div>',
        _tiles(summary),
        '<h2>Recent window</h2><div class="charts">',
        _farm_chart(model, "Farm hashrate", lambda p: p.hashrate_hs, hashrate),
        _farm_chart(model, "Farm power", lambda p: p.power_w, power),
        _farm_chart(model, "Modules needing a swap", lambda p: float(p.swap_queue), _count),
        "</div>",
        _queue_table(queue),
        _miners_table(model),
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part)


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` in one rename: a reader sees the old page or the new, never half."""
    directory = path.parent if str(path.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _tiles(summary: FarmSummary) -> str:
    j_per_th = f"{summary.j_per_th:.1f} J/TH" if summary.j_per_th is not None else "-"
    tiles = [
        ("Miners", str(summary.miners)),
        ("Online", str(summary.online)),
        ("Offline", str(summary.offline)),
        ("Stale", str(summary.stale)),
        ("Hashrate", hashrate(summary.hashrate_hs)),
        ("Power", power(summary.power_w)),
        ("Efficiency", j_per_th),
        ("Swap queue", str(summary.swap_queue)),
    ]
    tiles += [(f"Modules {state}", str(n)) for state, n in summary.modules.items()]
    cells = "".join(
        f'<div class="tile" data-tile="{escape(name)}">{escape(name)}<b>{escape(value)}</b></div>'
        for name, value in tiles
    )
    return f'<h2>Farm</h2><div class="tiles">{cells}</div>'


def _farm_chart(
    model: FleetModel,
    title: str,
    value: Callable[[FarmPoint], float],
    label: Callable[[float], str],
) -> str:
    points = [(p.at, value(p)) for p in model.history]
    return f'<div class="chart">{line_chart(points, title, label)}</div>'


def line_chart(
    points: Sequence[tuple[float, float]],
    title: str,
    label: Callable[[float], str],
    width: int = CHART_W,
    height: int = CHART_H,
) -> str:
    """An SVG line chart of (time, value), with its range and time span in words."""
    top, bottom, left = 18, height - 16, 4
    head = f'<text x="{left}" y="12">{escape(title)}</text>'
    if len(points) < 2:
        body = f'<text x="{left}" y="{height // 2}">collecting…</text>'
        return _svg(width, height, title, head + body)
    times = [t for t, _ in points]
    values = [v for _, v in points]
    low, high = min(values), max(values)
    span_t = (times[-1] - times[0]) or 1.0
    span_v = (high - low) or 1.0
    coords = " ".join(
        f"{left + (t - times[0]) / span_t * (width - 2 * left):.1f},"
        f"{bottom - (v - low) / span_v * (bottom - top):.1f}"
        for t, v in points
    )
    body = (
        f'<polyline fill="none" stroke="#58a6ff" stroke-width="1.5" points="{coords}"/>'
        f'<text x="{width - left}" y="12" text-anchor="end">{escape(label(values[-1]))}</text>'
        f'<text x="{left}" y="{height - 3}">{escape(duration(span_t))} · '
        f"{escape(label(low))} to {escape(label(high))}</text>"
    )
    return _svg(width, height, title, head + body)


def sparkline(values: Sequence[float | None], title: str) -> str:
    known = [v for v in values if v is not None and math.isfinite(v)]
    if len(known) < 2:
        return ""
    low, high = min(known), max(known)
    span = (high - low) or 1.0
    step = (SPARK_W - 2) / (len(values) - 1)
    coords = " ".join(
        f"{1 + n * step:.1f},{SPARK_H - 2 - (v - low) / span * (SPARK_H - 4):.1f}"
        for n, v in enumerate(values)
        if v is not None and math.isfinite(v)
    )
    line = f'<polyline fill="none" stroke="#7ee787" stroke-width="1.2" points="{coords}"/>'
    return _svg(SPARK_W, SPARK_H, title, line, css="spark")


def _svg(width: int, height: int, title: str, body: str, css: str = "") -> str:
    kind = f' class="{css}"' if css else ""
    return (
        f'<svg{kind} xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img"><title>{escape(title)}</title>{body}</svg>'
    )


def _queue_table(queue: Sequence[SwapItem]) -> str:
    head = f"Swap queue: {len(queue)} module{'s' if len(queue) != 1 else ''}"
    if len(queue) > QUEUE_ROWS:
        head += f" (first {QUEUE_ROWS})"
    rows = "".join(
        f'<tr class="{escape(item.category)} {escape(item.miner_status)}">'
        f'<td class="num">{n}</td><td>{escape(item.miner)}</td><td class="num">{item.slot}</td>'
        f"<td>{escape(item.serial or '-')}</td><td>{escape(item.category.replace('_', ' '))}</td>"
        f"<td>{escape(_text(item.code))}</td><td>{escape(duration(item.time_to_failure_s))}</td>"
        f'<td class="num">{"-" if item.score is None else round(item.score)}</td>'
        f"<td>{escape(item.miner_status)}</td>"
        f'<td class="reason">{escape(item.reason)}</td></tr>'
        for n, item in enumerate(queue[:QUEUE_ROWS], 1)
    )
    header = "".join(
        f"<th>{h}</th>"
        for h in (
            "#",
            "Miner",
            "Slot",
            "Serial",
            "Why",
            "Code",
            "Fails in",
            "Health",
            "Miner is",
            "Reason",
        )
    )
    return f'<h2 id="queue">{head}</h2><table id="swap-queue"><tr>{header}</tr>{rows}</table>'


def _miners_table(model: FleetModel) -> str:
    rows = []
    for name in sorted(model.miners):
        miner = model.miners[name]
        status = model.miner_status(miner)
        state = miner.state or {}
        rate, watts = state.get("hashrate_hs"), state.get("psu_input_power_w")
        slots = " ".join(
            escape(str(miner.slots[n].status.get("state", "?"))) for n in sorted(miner.slots)
        )
        history = list(miner.history)
        rows.append(
            f'<tr class="{escape(status)}"><td>{escape(name)}</td><td>{escape(status)}</td>'
            f'<td class="num">{escape(hashrate(rate))}</td>'
            f'<td class="num">{escape(power(watts))}</td>'
            f"<td>{sparkline([h for _, h, _ in history], f'{name} hashrate')}</td>"
            f"<td>{sparkline([c for _, _, c in history], f'{name} hottest temperature')}</td>"
            f"<td>{slots}</td></tr>"
        )
    header = "".join(
        f"<th>{h}</th>"
        for h in (
            "Miner",
            "Status",
            "Hashrate",
            "Power",
            "Hashrate (recent)",
            "Hottest °C (recent)",
            "Slots",
        )
    )
    return (
        f"<h2>Miners ({len(model.miners)})</h2>"
        f'<table id="miners"><tr>{header}</tr>{"".join(rows)}</table>'
    )


def _count(value: float) -> str:
    return f"{value:.0f}"


def _text(value: object) -> str:
    return "-" if value is None else str(value)
