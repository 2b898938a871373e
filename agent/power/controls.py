"""What operators asked for (power target, quiet mode, fan override, curtailment, prices),
kept across restarts.

A miner curtailed for the grid must stay curtailed when the agent restarts, and a power
target set from the fleet must not silently lapse, so every change is written to the
state directory before it is acknowledged. The file is read back as untrusted input: a
value of the wrong type or out of range is dropped (with a log line), never applied, and
listed in `problems` so the agent can raise an event once it is running.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import structlog

from hashbay.agent.core.files import read_limited, write_atomically
from hashbay.agent.core.rules import (
    CURTAIL_MODE,
    ELECTRICITY_PRICE,
    FAN_DUTY,
    FLAG,
    HASHPRICE,
    POWER_TARGET_W,
    QUIET_MODE,
    Arg,
)

log = structlog.get_logger("hashbay.controls")

QUIET_MODES = QUIET_MODE.values
CURTAIL_MODES = CURTAIL_MODE.values
SCHEMA = 1
MAX_FILE_BYTES = 4096  # a few keys; anything bigger is not ours


@dataclass(frozen=True)
class Controls:
    """Operator overrides; None means "as configured"."""

    power_target_w: float | None = None
    quiet: str | None = None  # one of QUIET_MODES
    fan_override: float | None = None  # duty 0..1, clamped by the envelope when applied
    curtail: str | None = None  # one of CURTAIL_MODES
    profit: bool | None = None
    electricity_per_kwh: float | None = None
    hashprice_per_th_day: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# Each control's rule: the same as the argument of the command that sets it.
_RULES: dict[str, Arg] = {
    "power_target_w": POWER_TARGET_W,
    "quiet": QUIET_MODE,
    "fan_override": FAN_DUTY,
    "curtail": CURTAIL_MODE,
    "profit": FLAG,
    "electricity_per_kwh": ELECTRICITY_PRICE,
    "hashprice_per_th_day": HASHPRICE,
}


def _valid(key: str, value: Any) -> bool:
    return _RULES[key].accepts(value, slots=0)  # no control names a slot


class ControlStore:
    """The current Controls, persisted atomically on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []  # what the file held that was left out, in words
        self.current = self._load()
        self._listeners: list[Callable[[Controls], None]] = []
        self._saving = asyncio.Lock()

    def on_change(self, listener: Callable[[Controls], None]) -> None:
        self._listeners.append(listener)

    def update(self, **changes: Any) -> Controls:
        """Apply and persist; raises ValueError naming a bad value (nothing changes then)."""
        updated = self._checked(changes)
        self._save(updated)
        return self._commit(updated)

    async def update_async(self, **changes: Any) -> Controls:
        """As `update`, with the file written off the event loop (fsync can take a while
        on an SD card, and the protection path must not wait for it)."""
        async with self._saving:  # one change at a time, each on top of the last
            updated = self._checked(changes)
            await asyncio.to_thread(self._save, updated)
            return self._commit(updated)

    def _checked(self, changes: dict[str, Any]) -> Controls:
        for key, value in changes.items():
            rule = _RULES.get(key)
            if rule is None:
                raise ValueError(f"unknown control {key!r}")
            if value is not None and not rule.accepts(value, slots=0):
                raise ValueError(f"control {key} cannot be {value!r}")
        return replace(self.current, **changes)

    def _commit(self, updated: Controls) -> Controls:
        self.current = updated
        for listener in self._listeners:
            listener(updated)
        return updated

    def _load(self) -> Controls:
        try:
            raw = json.loads(read_limited(self.path, MAX_FILE_BYTES))
        except FileNotFoundError:
            return Controls()
        except (OSError, ValueError, RecursionError) as exc:
            log.error(
                "controls file unreadable; using the configuration",
                path=str(self.path),
                error=str(exc),
            )
            self.problems.append(f"{self.path}: unreadable ({exc}); using the configuration")
            return Controls()
        if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
            log.error("controls file has an unknown shape; ignored", path=str(self.path))
            self.problems.append(f"{self.path}: unknown shape; using the configuration")
            return Controls()
        values: dict[str, Any] = {}
        for field in fields(Controls):
            value = raw.get(field.name)
            if value is None:
                continue
            if _valid(field.name, value):
                values[field.name] = (
                    float(value)
                    if isinstance(value, int) and not isinstance(value, bool)
                    else value
                )
            else:
                shown = repr(value)[:40]
                log.error("controls file value out of range; ignored", key=field.name, value=shown)
                self.problems.append(f"{self.path}: {field.name} = {shown} left out")
        controls = Controls(**values)
        if controls != Controls():
            log.info("operator controls restored", **controls.to_json())
        return controls

    def _save(self, controls: Controls) -> None:
        body = json.dumps({"schema": SCHEMA, **controls.to_json()}, indent=1).encode()
        write_atomically(self.path, body)
