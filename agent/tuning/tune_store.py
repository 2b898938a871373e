"""Tuned profiles on disk, one JSON file per board serial, read back as untrusted input.

Tuning a board takes about an hour of hashing, so a module that is pulled and comes back
(or an agent that restarts) starts from its stored profile instead. The file is the
tuner's word about how far each chip may be clocked, and the agent applies it to
hardware: it is checked like anything from outside. A file that is unreadable, of
another schema, for another serial, model or chip count is ignored with a log line,
and the caller is told why (it raises an event): whatever is in the file, reading it
never raises, so no stored file can stop a module from powering. A point outside the
module's current limits (the site may have narrowed them since) is dropped, so a stored
profile can never drive a board outside its envelope.

Writes are atomic (temporary file, fsync, rename, fsync of the directory): a power cut
leaves the old profile or the new one, never half of one.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from hashbay.agent.core.files import serial_file, write_atomically
from hashbay.agent.core.records import RecordError, number
from hashbay.agent.tuning.autotune import BoardProfile, TunePoint
from hashbay.drivers.envelope import BoardLimits
from hashbay.drivers.numbers import is_finite

log = structlog.get_logger("hashbay.tune_store")

SCHEMA = 1
MAX_FILE_BYTES = 1 << 20
"""A 126-chip profile with 16 voltages is about 30 kB; anything far larger is not ours."""

MAX_POINTS = 256
MAX_MODEL_CHARS = 64
SUBDIR = "tune"


@dataclass(frozen=True)
class StoredProfile:
    """A profile as stored: which board it is for, when it was tuned, what was found."""

    serial: str
    board_model: str
    tuned_at: datetime.datetime  # UTC
    profile: BoardProfile

    def age_days(self, now: datetime.datetime | None = None) -> float:
        """Days since tuning; never negative (a clock set back does not make it older)."""
        now = now or datetime.datetime.now(datetime.UTC)
        return max(0.0, (now - self.tuned_at).total_seconds() / 86400.0)

    def stale(self, max_age_days: float, now: datetime.datetime | None = None) -> bool:
        """Whether a retune is due; `max_age_days` 0 means never."""
        return max_age_days > 0 and self.age_days(now) > max_age_days


@dataclass(frozen=True)
class Loaded:
    """What reading a serial's file gave: the usable profile, or why the file was not used
    ("" when there is no file at all, or nothing was wrong with it)."""

    stored: StoredProfile | None
    problem: str = ""


class TuneStore:
    """Profiles under `<state_dir>/tune/`, keyed by board serial."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / SUBDIR

    def path_for(self, serial: str) -> Path:
        """The file of a serial; serials are untrusted (EEPROM), so odd ones are hashed."""
        return serial_file(self.directory, serial)

    def save(
        self,
        serial: str,
        profile: BoardProfile,
        *,
        board_model: str,
        tuned_at: datetime.datetime | None = None,
    ) -> bool:
        """Store a profile atomically; False (and a log line) if it could not be written."""
        when = tuned_at or datetime.datetime.now(datetime.UTC)
        path = self.path_for(serial)
        try:
            body = json.dumps(
                _to_json(serial, board_model, when, profile), allow_nan=False, indent=1
            )
            write_atomically(path, body.encode())
        except (OSError, ValueError) as exc:
            log.error("tune profile not saved", serial=serial, path=str(path), error=str(exc))
            return False
        return True

    def load(
        self,
        serial: str,
        *,
        chip_count: int,
        limits: BoardLimits,
        board_model: str | None = None,
    ) -> StoredProfile | None:
        """The stored profile for this board, checked against it; None if none is usable."""
        return self.read(
            serial, chip_count=chip_count, limits=limits, board_model=board_model
        ).stored

    def read(
        self,
        serial: str,
        *,
        chip_count: int,
        limits: BoardLimits,
        board_model: str | None = None,
    ) -> Loaded:
        """As `load`, with the reason a file that exists was not used. Never raises: the
        file is untrusted, and a module must power (untuned) whatever it holds."""
        path = self.path_for(serial)
        try:
            with path.open("rb") as file:
                raw = file.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return Loaded(None)
        except OSError as exc:
            log.warning("tune profile unreadable", serial=serial, path=str(path), error=str(exc))
            return Loaded(None, f"{path}: unreadable: {exc}")
        try:
            if len(raw) > MAX_FILE_BYTES:
                raise RecordError(f"larger than {MAX_FILE_BYTES} bytes")
            data = _decode(raw)
            stored = _from_json(data, serial, chip_count, board_model)
            usable = _within_limits(stored, limits, path)
        except Exception as exc:  # RecordError, or anything a hostile file provokes
            reason = str(exc) if isinstance(exc, RecordError) else f"cannot be read: {exc!r}"
            log.warning(
                "tune profile ignored; the module will be retuned",
                serial=serial,
                path=str(path),
                reason=reason,
            )
            return Loaded(None, f"{path}: {reason}")
        return Loaded(usable)


# -- to and from JSON -------------------------------------------------------------------


def _to_json(
    serial: str, board_model: str, tuned_at: datetime.datetime, profile: BoardProfile
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "serial": serial,
        "board_model": board_model,
        "tuned_at": tuned_at.astimezone(datetime.UTC).isoformat(),
        "chip_count": profile.chip_count,
        "max_error": profile.max_error,
        "duration_s": profile.duration_s,
        "points": [
            {
                "board_v": p.board_v,
                "freqs_mhz": list(p.freqs_mhz),
                "power_w": p.power_w,
                "hashrate_hs": p.hashrate_hs,
                "error_share": p.error_share,
                "weak_chips": list(p.weak_chips),
            }
            for p in profile.points
        ],
    }


def _decode(raw: bytes) -> Any:
    def no_constants(name: str) -> Any:
        raise RecordError(f"{name} is not a number a profile may hold")

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=no_constants)
    except (ValueError, RecursionError) as exc:
        raise RecordError(f"not valid JSON: {str(exc)[:80]}") from None


def _from_json(data: Any, serial: str, chip_count: int, board_model: str | None) -> StoredProfile:
    if not isinstance(data, dict):
        raise RecordError("not a JSON object")
    schema = data.get("schema")
    if type(schema) is not int or schema != SCHEMA:
        raise RecordError(f"schema {schema!r}, this agent reads schema {SCHEMA}")
    if data.get("serial") != serial:
        raise RecordError(f"written for serial {_short(data.get('serial'))}")
    model = data.get("board_model")
    if not isinstance(model, str) or len(model) > MAX_MODEL_CHARS:
        raise RecordError("board_model missing or not a short string")
    if board_model is not None and model != board_model:
        raise RecordError(f"tuned on a {_short(model)}, this module is a {_short(board_model)}")
    stored_count = data.get("chip_count")
    if type(stored_count) is not int or stored_count != chip_count:
        raise RecordError(f"for {_short(stored_count)} chips, this module has {chip_count}")
    raw_points = data.get("points")
    if not isinstance(raw_points, list) or not 1 <= len(raw_points) <= MAX_POINTS:
        raise RecordError(f"points must be a list of 1 to {MAX_POINTS} entries")
    profile = BoardProfile(
        chip_count=chip_count,
        max_error=number(data, "max_error", 0.0, 1.0, low_open=True),
        points=tuple(_point(p, chip_count, n) for n, p in enumerate(raw_points)),
        duration_s=number(data, "duration_s", 0.0, 1e9),
    )
    return StoredProfile(serial, model, _timestamp(data.get("tuned_at")), profile)


def _point(raw: Any, chip_count: int, index: int) -> TunePoint:
    where = f"points[{index}]"
    if not isinstance(raw, dict):
        raise RecordError(f"{where} is not an object")
    freqs = raw.get("freqs_mhz")
    if not isinstance(freqs, list) or len(freqs) != chip_count:
        raise RecordError(f"{where}.freqs_mhz must list {chip_count} clocks")
    if not all(is_finite(f) and f > 0 for f in freqs):
        raise RecordError(f"{where}.freqs_mhz holds a clock that is not a positive number")
    weak = raw.get("weak_chips", [])
    valid_weak = (
        isinstance(weak, list)
        and len(weak) <= chip_count
        and all(type(w) is int and 0 <= w < chip_count for w in weak)
        and len(set(weak)) == len(weak)
    )
    if not valid_weak:
        raise RecordError(f"{where}.weak_chips must list distinct chip indices")
    return TunePoint(
        board_v=number(raw, "board_v", 0.0, 1000.0, low_open=True, where=where),
        freqs_mhz=tuple(float(f) for f in freqs),
        power_w=number(raw, "power_w", 0.0, 1e6, low_open=True, where=where),
        hashrate_hs=number(raw, "hashrate_hs", 0.0, 1e18, where=where),
        error_share=number(raw, "error_share", 0.0, 1.0, where=where),
        weak_chips=tuple(weak),
    )


def _timestamp(value: Any) -> datetime.datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise RecordError("tuned_at missing or not a date")
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise RecordError(f"tuned_at {_short(value)} is not an ISO 8601 date") from None
    if when.tzinfo is None:
        raise RecordError("tuned_at has no time zone")
    try:  # year 1 east of UTC, or year 9999 west of it, is outside what datetime holds
        return when.astimezone(datetime.UTC)
    except OverflowError:
        raise RecordError(f"tuned_at {_short(value)} is out of range") from None


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _within_limits(stored: StoredProfile, limits: BoardLimits, path: Path) -> StoredProfile | None:
    """Only the points this module may run now: voltage, every clock and power in limits."""
    profile = stored.profile
    kept = tuple(p for p in profile.points if _allowed(p, limits))
    dropped = len(profile.points) - len(kept)
    if not kept:
        log.warning(
            "tune profile ignored: no point within the module's limits; it will be retuned",
            serial=stored.serial,
            path=str(path),
            limits=str(limits),
        )
        return None
    if dropped:
        log.warning(
            "tune profile points outside the module's limits dropped",
            serial=stored.serial,
            dropped=dropped,
            kept=len(kept),
        )
    points = tuple(sorted(kept, key=lambda p: p.board_v))
    return StoredProfile(
        stored.serial,
        stored.board_model,
        stored.tuned_at,
        BoardProfile(profile.chip_count, profile.max_error, points, profile.duration_s),
    )


def _allowed(point: TunePoint, limits: BoardLimits) -> bool:
    return (
        limits.vout_min_v <= point.board_v <= limits.vout_max_v
        and point.power_w <= limits.power_max_w
        and all(limits.freq_min_mhz <= f <= limits.freq_max_mhz for f in point.freqs_mhz)
    )
