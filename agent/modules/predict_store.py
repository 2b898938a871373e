"""Predictor state on disk, one file per module serial, read back as untrusted input.

A chip's trend takes hours of evidence, and a warning must not be forgotten (or raised a
second time) because the agent restarted or the module moved to another slot. So the
predictor's evidence, its warning and what it already announced live under the module's
serial, like its tuned profile: in memory while the agent runs (`PredictorBook`, so a
module moved between slots takes its predictor along), and on disk (`PredictStore`) every
`predict.save_interval_s` of hashing and whenever it stops.

The file is checked like anything from outside: size-limited, schema-checked, every
number finite and in range, the counts consistent. A bad file is dropped with one log
line and the module starts afresh; it never stops a slot. Writes are atomic.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import itertools
import json
import math
import sys
import zlib
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from hashbay.agent.core.files import read_limited, serial_file, write_atomically
from hashbay.agent.core.records import RecordError, number
from hashbay.agent.modules.predict import (
    Evidence,
    Predictor,
    PredictorState,
    RaisedWarning,
    StepSeen,
    WindowState,
)
from hashbay.agent.modules.predict_settings import PredictSettings
from hashbay.drivers.numbers import is_finite

log = structlog.get_logger("hashbay.predict_store")

SCHEMA = 1
SUBDIR = "predict"
MAX_FILE_BYTES = 1 << 21
"""Three 24-point windows of a 126-chip module pack into about 60 kB."""

MAX_CHIPS = 4096
MAX_WINDOWS = 6
MAX_POINTS = 64
MAX_HASHING_S = 100 * 365 * 86400.0
MAX_COUNT = 1 << 31
MAX_CLOCK_MHZ = 1e5
MAX_LOGIT = 50.0
MAX_SLOPE_PER_H = 20.0
_LE = sys.byteorder == "little"


class PredictStore:
    """Predictor states under `<state_dir>/predict/`, keyed by module serial."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / SUBDIR

    def path_for(self, serial: str) -> Path:
        return serial_file(self.directory, serial)

    def save(self, serial: str, state: PredictorState) -> bool:
        """Store a state atomically; False (and a log line) if it could not be written."""
        path = self.path_for(serial)
        try:
            body = json.dumps(_to_json(serial, state), allow_nan=False, separators=(",", ":"))
            write_atomically(path, body.encode())
        except (OSError, ValueError) as exc:
            log.error("predictor state not saved", serial=serial, path=str(path), error=str(exc))
            return False
        return True

    def load(self, serial: str, chip_count: int) -> PredictorState | None:
        """The stored state of this module, checked; None if there is none usable."""
        path = self.path_for(serial)
        try:
            raw = read_limited(path, MAX_FILE_BYTES)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning(
                "predictor state ignored; the module's evidence starts afresh",
                serial=serial,
                path=str(path),
                reason=str(exc),
            )
            return None
        try:
            return _from_json(_decode(raw), serial, chip_count)
        except RecordError as exc:
            log.warning(
                "predictor state ignored; the module's evidence starts afresh",
                serial=serial,
                path=str(path),
                reason=str(exc),
            )
            return None


class PredictorBook:
    """Each module's predictor, by serial: a module moved to another slot takes its own
    along; one seen before this agent started comes back from the store."""

    def __init__(self, settings: PredictSettings, store: PredictStore | None) -> None:
        self.settings = settings
        self.store = store
        self._predictors: dict[str, Predictor] = {}
        self._in_use: set[str] = set()
        self._saved_at: dict[str, float] = {}

    def take(self, serial: str, chip_count: int, nominal_board_v: float | None) -> Predictor:
        """The predictor for a module just identified."""
        known = self._predictors.get(serial)
        if serial in self._in_use or (known is not None and known.chip_count != chip_count):
            log.warning("another module claims this serial: its trends are not kept", serial=serial)
            return Predictor(self.settings, chip_count, nominal_board_v=nominal_board_v)
        if known is None:
            known = Predictor(self.settings, chip_count, nominal_board_v=nominal_board_v)
            stored = self.store.load(serial, chip_count) if self.store is not None else None
            if stored is not None and not known.restore(stored):
                log.info(
                    "predictor state kept under other settings: starting afresh", serial=serial
                )
            self._predictors[serial] = known
        self._in_use.add(serial)
        self._saved_at[serial] = known.hashing_s
        return known

    def peek(self, serial: str) -> Predictor | None:
        """The predictor kept for a serial, if any (for status and tests; nothing changes)."""
        return self._predictors.get(serial)

    def due(self, serial: str) -> PredictorState | None:
        """The state to save now, if `save_interval_s` of hashing passed since the last."""
        predictor = self._predictors.get(serial)
        if predictor is None or self.store is None:
            return None
        if predictor.hashing_s - self._saved_at.get(serial, 0.0) < self.settings.save_interval_s:
            return None
        self._saved_at[serial] = predictor.hashing_s
        return predictor.state()

    def snapshot(self, serial: str) -> PredictorState | None:
        """The state to save now (the module stops hashing for a while)."""
        predictor = self._predictors.get(serial)
        if predictor is None or self.store is None:
            return None
        self._saved_at[serial] = predictor.hashing_s
        return predictor.state()

    def save(self, serial: str, state: PredictorState) -> bool:
        """Write a state taken by `due`, `snapshot` or `release` (blocking: off the loop)."""
        return self.store.save(serial, state) if self.store is not None else False

    def release(self, serial: str) -> PredictorState | None:
        """The module left its slot (pulled, powered down, agent stopping): its state, for
        the caller to save (off the event loop)."""
        self._in_use.discard(serial)
        predictor = self._predictors.get(serial)
        if predictor is None:
            return None
        self._saved_at[serial] = predictor.hashing_s
        return predictor.state()

    def put_back(self, serial: str) -> None:
        """`release` and save at once (for callers that may block)."""
        state = self.release(serial)
        if state is not None and self.store is not None:
            self.store.save(serial, state)


# -- to and from JSON -------------------------------------------------------------------


def _to_json(serial: str, state: PredictorState) -> dict[str, Any]:
    windows = []
    for window in state.windows:
        partial = None
        if window.partial is not None:
            partial = _normalised(window.partial)
        windows.append(
            {
                "span_buckets": window.span_buckets,
                "points": [_row(p) for p in window.points],
                "partial": _row(partial) if partial is not None else None,
                "partial_buckets": window.partial_buckets,
            }
        )
    warning = state.warning
    return {
        "schema": SCHEMA,
        "serial": serial,
        "saved_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "chip_count": state.chip_count,
        "bucket_s": state.bucket_s,
        "hashing_s": state.hashing_s,
        "windows": windows,
        "warning": None
        if warning is None
        else {
            "chip": warning.chip,
            "logit_now": warning.logit_now,
            "slope_per_h": warning.slope_per_h,
            "slope_se_per_h": warning.slope_se_per_h,
            "fitted_s": warning.fitted_s,
            "raised_s": warning.raised_s,
            "held_s": warning.held_s,
        },
        "announced": [[chip, held_s] for chip, held_s in state.announced],
        "steps": [
            {
                "chip": step.chip,
                "rate_before": step.rate_before,
                "rate_after": step.rate_after,
                "held_s": step.held_s,
            }
            for step in state.steps
        ],
    }


def _normalised(partial: Evidence) -> Evidence:
    """A partial point holds Σ clock·time; on disk every point holds the mean clock."""
    duration = partial.end_s - partial.start_s
    scale = 1.0 / duration if duration > 0 else 0.0
    return Evidence(
        partial.start_s,
        partial.end_s,
        partial.reported,
        partial.errors,
        array("d", (x * scale for x in partial.x_mhz)),
    )


def _row(point: Evidence) -> dict[str, Any]:
    return {
        "start_s": point.start_s,
        "end_s": point.end_s,
        "reported": _pack("I", point.reported),
        "errors": _pack("I", point.errors),
        "x_mhz": _pack("f", point.x_mhz),
    }


def _pack(code: str, values: Sequence[float]) -> str:
    packed = array(code, values)
    if not _LE:
        packed.byteswap()
    return base64.b64encode(zlib.compress(packed.tobytes(), 6)).decode("ascii")


def _decode(raw: bytes) -> Any:
    def no_constants(name: str) -> Any:
        raise RecordError(f"{name} is not a number predictor state may hold")

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=no_constants)
    except (ValueError, RecursionError) as exc:
        raise RecordError(f"not valid JSON: {str(exc)[:80]}") from None


def _from_json(data: Any, serial: str, chip_count: int) -> PredictorState:
    if not isinstance(data, dict):
        raise RecordError("not a JSON object")
    schema = data.get("schema")
    if type(schema) is not int or schema != SCHEMA:
        raise RecordError(f"schema {_short(schema)}, this agent reads schema {SCHEMA}")
    if data.get("serial") != serial:
        raise RecordError(f"written for serial {_short(data.get('serial'))}")
    stored_count = data.get("chip_count")
    if type(stored_count) is not int or stored_count != chip_count or chip_count > MAX_CHIPS:
        raise RecordError(f"for {_short(stored_count)} chips, this module has {chip_count}")
    hashing_s = number(data, "hashing_s", 0.0, MAX_HASHING_S)
    bucket_s = number(data, "bucket_s", 0.0, 86400.0, low_open=True)
    raw_windows = data.get("windows")
    if not isinstance(raw_windows, list) or len(raw_windows) > MAX_WINDOWS:
        raise RecordError(f"windows must be a list of at most {MAX_WINDOWS}")
    windows = tuple(
        _window(w, chip_count, hashing_s, f"windows[{i}]") for i, w in enumerate(raw_windows)
    )
    return PredictorState(
        chip_count=chip_count,
        bucket_s=bucket_s,
        hashing_s=hashing_s,
        windows=windows,
        warning=_warning(data.get("warning"), chip_count, hashing_s),
        announced=_announced(data.get("announced"), chip_count, hashing_s),
        steps=_steps(data.get("steps"), chip_count, hashing_s),
    )


def _window(raw: Any, chip_count: int, hashing_s: float, where: str) -> WindowState:
    if not isinstance(raw, dict):
        raise RecordError(f"{where} is not an object")
    span = raw.get("span_buckets")
    if type(span) is not int or not 3 <= span <= 1_000_000:
        raise RecordError(f"{where}.span_buckets must be an integer from 3 to 1000000")
    raw_points = raw.get("points")
    if not isinstance(raw_points, list) or len(raw_points) > MAX_POINTS:
        raise RecordError(f"{where}.points must be a list of at most {MAX_POINTS}")
    points = tuple(
        _point(p, chip_count, hashing_s, f"{where}.points[{i}]") for i, p in enumerate(raw_points)
    )
    for before, after in itertools.pairwise(points):
        if after.start_s < before.end_s:
            raise RecordError(f"{where}.points overlap or are out of order")
    partial_buckets = raw.get("partial_buckets")
    if type(partial_buckets) is not int or not 0 <= partial_buckets <= 1_000_000:
        raise RecordError(f"{where}.partial_buckets must be a small non-negative integer")
    raw_partial = raw.get("partial")
    partial = None
    if raw_partial is not None:
        mean = _point(raw_partial, chip_count, hashing_s, f"{where}.partial")
        duration = mean.end_s - mean.start_s
        partial = Evidence(
            mean.start_s,
            mean.end_s,
            mean.reported,
            mean.errors,
            array("d", (x * duration for x in mean.x_mhz)),
        )
    if (partial is None) != (partial_buckets == 0):
        raise RecordError(f"{where}.partial and partial_buckets disagree")
    return WindowState(span, points, partial, partial_buckets)


def _point(raw: Any, chip_count: int, hashing_s: float, where: str) -> Evidence:
    if not isinstance(raw, dict):
        raise RecordError(f"{where} is not an object")
    start_s = number(raw, "start_s", 0.0, hashing_s, where=where)
    end_s = number(raw, "end_s", start_s, hashing_s, where=where)
    reported = _unpack(raw.get("reported"), "I", chip_count, f"{where}.reported")
    errors = _unpack(raw.get("errors"), "I", chip_count, f"{where}.errors")
    x_mhz = _unpack(raw.get("x_mhz"), "f", chip_count, f"{where}.x_mhz")
    if any(e > n for e, n in zip(errors, reported, strict=True)):
        raise RecordError(f"{where} has more errors than nonces for a chip")
    if max(reported, default=0) >= MAX_COUNT:
        raise RecordError(f"{where}.reported holds an implausible count")
    if not all(math.isfinite(x) and 0.0 <= x <= MAX_CLOCK_MHZ for x in x_mhz):
        raise RecordError(f"{where}.x_mhz holds a clock that is not a plausible number")
    return Evidence(
        start_s,
        end_s,
        array("I", reported),
        array("I", errors),
        array("d", x_mhz),
    )


def _unpack(raw: Any, code: str, count: int, where: str) -> array[Any]:
    if not isinstance(raw, str) or len(raw) > MAX_FILE_BYTES:
        raise RecordError(f"{where} is not packed data")
    size = array(code).itemsize * count
    try:
        compressed = base64.b64decode(raw.encode("ascii"), validate=True)
        inflater = zlib.decompressobj()
        body = inflater.decompress(compressed, size + 1)
    except (ValueError, binascii.Error, zlib.error, UnicodeError):
        raise RecordError(f"{where} is not packed data") from None
    if len(body) != size or inflater.unconsumed_tail or not inflater.eof:
        raise RecordError(f"{where} must hold {count} values")
    values = array(code)
    values.frombytes(body)
    if not _LE:
        values.byteswap()
    return values


def _warning(raw: Any, chip_count: int, hashing_s: float) -> RaisedWarning | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise RecordError("warning is not an object")
    chip = raw.get("chip")
    if type(chip) is not int or not 0 <= chip < chip_count:
        raise RecordError("warning.chip is not a chip of this module")
    return RaisedWarning(
        chip=chip,
        logit_now=number(raw, "logit_now", -MAX_LOGIT, MAX_LOGIT, where="warning"),
        slope_per_h=number(
            raw, "slope_per_h", 0.0, MAX_SLOPE_PER_H, low_open=True, where="warning"
        ),
        slope_se_per_h=number(raw, "slope_se_per_h", 0.0, 1e6, where="warning"),
        fitted_s=number(raw, "fitted_s", 0.0, hashing_s, where="warning"),
        raised_s=number(raw, "raised_s", 0.0, hashing_s, where="warning"),
        held_s=number(raw, "held_s", 0.0, hashing_s, where="warning"),
    )


def _announced(raw: Any, chip_count: int, hashing_s: float) -> tuple[tuple[int, float], ...]:
    if not isinstance(raw, list) or len(raw) > chip_count:
        raise RecordError("announced must be a list of at most one entry per chip")
    entries = []
    for item in raw:
        if not isinstance(item, list) or len(item) != 2:
            raise RecordError("announced entries are [chip, hashing time]")
        chip, held_s = item
        if type(chip) is not int or not 0 <= chip < chip_count:
            raise RecordError("announced names a chip this module does not have")
        if not is_finite(held_s) or not 0.0 <= held_s <= hashing_s:
            raise RecordError("announced holds a time outside the module's hashing time")
        entries.append((chip, float(held_s)))
    if len({chip for chip, _ in entries}) != len(entries):
        raise RecordError("announced names a chip twice")
    return tuple(entries)


def _steps(raw: Any, chip_count: int, hashing_s: float) -> tuple[StepSeen, ...]:
    if not isinstance(raw, list) or len(raw) > chip_count:
        raise RecordError("steps must be a list of at most one entry per chip")
    steps = []
    for index, item in enumerate(raw):
        where = f"steps[{index}]"
        if not isinstance(item, dict):
            raise RecordError(f"{where} is not an object")
        chip = item.get("chip")
        if type(chip) is not int or not 0 <= chip < chip_count:
            raise RecordError(f"{where}.chip is not a chip of this module")
        steps.append(
            StepSeen(
                chip,
                number(item, "rate_before", 0.0, 1.0, where=where),
                number(item, "rate_after", 0.0, 1.0, where=where),
                number(item, "held_s", 0.0, hashing_s, where=where),
            )
        )
    if len({step.chip for step in steps}) != len(steps):
        raise RecordError("steps names a chip twice")
    return tuple(steps)


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."
