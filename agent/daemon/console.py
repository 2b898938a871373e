"""Live status in the terminal (`hashbay-agent --live`, used by `tools/run demo`).

Redraws a small panel once a second from AgentState; it never touches hardware. When
stdout is not a terminal it prints the panel as plain text instead of redrawing.
"""

from __future__ import annotations

import asyncio
import time
from typing import TextIO

from hashbay import __version__
from hashbay.agent.core.state import AgentState
from hashbay.agent.daemon.logsetup import RecentEvents

CLEAR = "\x1b[H\x1b[J"


def render(state: AgentState, recent: RecentEvents, now: float) -> str:
    uptime = int(now - state.started_at)
    lines = [
        f"hashbay {__version__} · {state.name} · up {uptime // 3600:02d}:"
        f"{uptime // 60 % 60:02d}:{uptime % 60:02d} · Ctrl-C stops",
        state.summary(),
        "",
        "SLOT  STATE           MODULE      HEALTH   TH/s   TEMP °C  POWER W  DETAIL",
    ]
    for slot in state.slot_statuses():
        health = slot.health
        score = f"{health.score:5.0f}" if health else "    -"
        ths = f"{health.hashrate_hs / 1e12:6.1f}" if health else "     -"
        temps = [t for t in slot.temps_c if t is not None]
        temp = f"{max(temps):7.1f}" if temps else "      -"
        power = f"{slot.power_w:7.0f}" if slot.power_w else "      -"
        lines.append(
            f"{slot.slot:<5} {slot.state.value:<15} {slot.serial or '-':<11} {score}   {ths}  "
            f"{temp}  {power}  {slot.detail[:60]}"
        )
    snap = state.snapshot
    if snap is not None:
        lines += ["", "FAN   DUTY    RPM  STATE"]
        for i, fan in enumerate(snap.fans):
            fan_state = "STALLED" if fan.stalled else "ok"
            lines.append(f"fan{i}  {fan.duty * 100:4.0f}%  {fan.rpm:5.0f}  {fan_state}")
        if snap.psu is not None:
            psu = snap.psu
            lines += [
                "",
                f"PSU  in {psu.pin_w:6.0f} W @ {psu.vin_v:.0f} V  out {psu.pout_w:6.0f} W  "
                f"{psu.temp_c:.0f} °C  {'; '.join(snap.psu_problems) or 'ok'}",
            ]
    lines += ["", "RECENT EVENTS"]
    for event in recent.lines:
        stamp = str(event.get("timestamp", ""))[11:19]
        extra = " ".join(
            f"{k}={v}" for k, v in event.items() if k not in ("timestamp", "level", "event")
        )
        lines.append(f"{stamp} {event.get('level', ''):<8} {event.get('event', '')} {extra}")
    return "\n".join(lines)


async def run_console(
    state: AgentState, recent: RecentEvents, out: TextIO, period_s: float = 1.0
) -> None:
    redraw = out.isatty()
    while True:
        panel = render(state, recent, time.time())
        out.write((CLEAR + panel + "\n") if redraw else (panel + "\n\n"))
        out.flush()
        await asyncio.sleep(period_s)
