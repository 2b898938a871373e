"""Live status in the terminal (`hashbay-agent --live`, used by `tools/run demo`).

Redraws a small panel once a second from AgentState; it never touches hardware. When
stdout is not a terminal it prints the panel as plain text instead of redrawing.
"""

from __future__ import annotations

import asyncio
import time
from typing import TextIO

from hashbay import __version__
from hashbay.agent.logsetup import RecentEvents
from hashbay.agent.state import AgentState

CLEAR = "\x1b[H\x1b[J"


def render(state: AgentState, recent: RecentEvents, now: float) -> str:
    uptime = int(now - state.started_at)
    lines = [
        f"hashbay {__version__} · {state.name} · up {uptime // 3600:02d}:"
        f"{uptime // 60 % 60:02d}:{uptime % 60:02d} · Ctrl-C stops",
        state.summary(),
        "",
    ]
    snap = state.snapshot
    if snap is not None:
        lines.append("SLOT  MODULE   POWER")
        for slot in snap.slots:
            module = "present" if slot.present else "empty"
            lines.append(f"{slot.slot:<5} {module:<8} {'on' if slot.powered else 'off'}")
        lines += ["", "FAN   DUTY    RPM  STATE"]
        for i, fan in enumerate(snap.fans):
            fan_state = "STALLED" if fan.stalled else "ok"
            lines.append(f"fan{i}  {fan.duty * 100:4.0f}%  {fan.rpm:5.0f}  {fan_state}")
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
