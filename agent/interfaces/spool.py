"""The durable event spool: events wait here, on disk, until the broker has taken them.

Why sqlite (stdlib) rather than an append-only file: one small transaction per event is
atomic and survives a crash between writes, and deleting delivered events needs no
compaction of our own. WAL with synchronous=NORMAL keeps an append to one write of the
log without an fsync (tens of microseconds even on SD-card-class storage); it survives a
crash of the agent, and after a power cut it may lose the last few events but never the
file.

The spool is bounded: past `max_events` the oldest undelivered events are dropped and the
drop is counted durably, so a long broker outage costs old events, never the agent.
A spool file that cannot be read (corrupt, not a database, an unknown schema) is moved
aside with a log line and an empty one is started; a single damaged entry (not a JSON
object, not UTF-8) or damaged counters are dropped or repaired the same way, so one bad
row never stops delivery. Each of these is also told to `report_to`'s callback, which
raises a `state_dropped` event. If the state directory cannot be
written at all (read-only, full), the spool carries on in memory and says so: events are
still delivered, they just do not survive a restart.

Sequence numbers grow by one per event within a *stream*; the stream id is made when a
spool file is created, so after a fresh start a consumer sees a new stream instead of
numbers that go backwards. A gap in `seq` means events were dropped at the bound.

Call from the event loop thread only (the sqlite connection enforces it).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NamedTuple

import structlog

from hashbay.agent.core.events import Event

log = structlog.get_logger("hashbay.spool")

MEMORY = ":memory:"

# Primary sqlite result codes that say the environment is at fault (permissions, disk
# full, I/O): moving the file aside would not help and would lose good events.
_ENVIRONMENT_ERRORS = frozenset(
    {
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_AUTH,
    }
)
_DROP_LOG_INTERVAL_S = 60.0
_STREAM = re.compile(r"[0-9a-f]{8}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value NOT NULL);
"""


class SpooledEvent(NamedTuple):
    seq: int
    event: dict[str, Any]  # Event.to_json()


class SpoolUnreadable(Exception):
    """The spool file exists but is not a spool we can read; it will be moved aside."""


class EventSpool:
    """A bounded, durable FIFO of events; implements `EventSink`."""

    def __init__(self, path: Path, max_events: int) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.path = path
        self.max_events = max_events
        self._listeners: list[Callable[[], None]] = []
        self._last_drop_log = -_DROP_LOG_INTERVAL_S
        self._drops_unlogged = 0
        self._problems: list[str] = []
        self._report: Callable[[str], None] | None = None
        self._db, self._durable = self._open_or_fall_back()
        self._load()

    def report_to(self, callback: Callable[[str], None]) -> None:
        """Tell `callback` (in words) about damage found, from now on and what was found
        before (opening the file happens before anyone can hear of it)."""
        self._report = callback
        found, self._problems = self._problems, []
        for problem in found:
            callback(problem)

    def _problem(self, text: str) -> None:
        if self._report is None:
            self._problems.append(text)
        else:
            self._report(text)

    # -- the EventSink side -------------------------------------------------------------

    def append(self, event: Event) -> int:
        """Store an event; returns its sequence number. Never raises for storage trouble."""
        body = json.dumps(event.to_json(), separators=(",", ":"), default=str)
        try:
            seq = self._insert(body)
        except sqlite3.Error as exc:
            self._recover(exc)
            seq = self._insert(body)
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("spool listener failed")
        return seq

    # -- the publisher side -------------------------------------------------------------

    def pending(self, limit: int) -> list[SpooledEvent]:
        """The oldest undelivered events, oldest first."""
        try:
            rows = self._db.execute(
                "SELECT seq, body FROM events ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        except sqlite3.Error as exc:
            self._recover(exc)
            return []
        good: list[SpooledEvent] = []
        damaged: list[int] = []
        for seq, body in rows:
            event = _decoded(body)
            if event is None:
                damaged.append(seq)
            else:
                good.append(SpooledEvent(seq, event))
        if damaged:
            self._drop_damaged(damaged)
        return good

    def _drop_damaged(self, seqs: list[int]) -> None:
        try:
            with self._transaction():
                self._db.executemany("DELETE FROM events WHERE seq = ?", [(q,) for q in seqs])
        except sqlite3.Error as exc:
            self._recover(exc)
            return
        self._count -= len(seqs)
        log.error(
            "damaged events in the spool dropped",
            seqs=seqs[:10],
            count=len(seqs),
            path=str(self.path),
        )
        self._problem(f"{self.path}: {len(seqs)} damaged event(s) dropped (seq {seqs[0]})")

    def acknowledge(self, seq: int) -> None:
        """Everything up to and including `seq` has been delivered; forget it."""
        try:
            with self._transaction():
                deleted = self._db.execute("DELETE FROM events WHERE seq <= ?", (seq,)).rowcount
        except sqlite3.Error as exc:
            self._recover(exc)
            return
        self._count -= deleted

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every append (from the loop thread), e.g. to wake a sender."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    @property
    def pending_count(self) -> int:
        return self._count

    @property
    def dropped(self) -> int:
        """Events dropped at the bound since this spool file was created."""
        return self._dropped

    @property
    def stream(self) -> str:
        """Id of this spool's sequence; changes only when a fresh spool is started."""
        return self._stream

    @property
    def durable(self) -> bool:
        """False once the spool had to fall back to memory."""
        return self._durable

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> EventSpool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- storage ------------------------------------------------------------------------

    def _insert(self, body: str) -> int:
        excess = max(self._count + 1 - self.max_events, 0)
        with self._transaction():
            seq = self._db.execute("INSERT INTO events (body) VALUES (?)", (body,)).lastrowid
            if excess:
                self._drop_oldest(excess)
        assert seq is not None
        self._count += 1 - excess
        if excess:
            self._dropped += excess
            self._log_drop(excess)
        return seq

    def _drop_oldest(self, count: int) -> None:
        self._db.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?)",
            (count,),
        )
        self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped'", (count,))

    def _log_drop(self, count: int) -> None:
        self._drops_unlogged += count
        now = time.monotonic()
        if now - self._last_drop_log >= _DROP_LOG_INTERVAL_S:
            log.warning(
                "event spool full: oldest undelivered events dropped",
                dropped_now=self._drops_unlogged,
                dropped_total=self._dropped,
                max_events=self.max_events,
                path=str(self.path),
            )
            self._last_drop_log = now
            self._drops_unlogged = 0

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _load(self) -> None:
        """Read the counters kept in the file; trim it if the bound was lowered."""
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        stream, dropped = meta.get("stream"), meta.get("dropped")
        if not isinstance(stream, str) or not _STREAM.fullmatch(stream):
            # Sequence numbers can no longer be tied to a stream: consumers get a new one.
            stream = secrets.token_hex(4)
            self._repair("stream", stream, f"stream id {str(stream)[:20]!r} damaged; new stream")
        if type(dropped) is not int or dropped < 0:
            self._repair("dropped", 0, f"dropped count {str(dropped)[:20]!r} damaged; reset to 0")
            dropped = 0
        self._stream = stream
        self._dropped = dropped
        self._count = int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])
        excess = self._count - self.max_events
        if excess > 0:
            with self._transaction():
                self._drop_oldest(excess)
            self._count -= excess
            self._dropped += excess
            self._log_drop(excess)

    def _repair(self, key: str, value: object, what: str) -> None:
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        log.error("event spool counters repaired", what=what, path=str(self.path))
        self._problem(f"{self.path}: {what}")

    def _open_or_fall_back(self) -> tuple[sqlite3.Connection, bool]:
        try:
            return _open(str(self.path)), True
        except (sqlite3.Error, SpoolUnreadable) as exc:
            if _environment_fault(exc):
                return self._fall_back_to_memory(exc), False
            self._move_aside(exc)
        try:
            return _open(str(self.path)), True
        except (sqlite3.Error, SpoolUnreadable) as exc:
            return self._fall_back_to_memory(exc), False

    def _recover(self, exc: sqlite3.Error) -> None:
        """A failure in use: reopen (moving the file aside only if it is corrupt), or fall
        back to memory when the disk itself is the trouble, and carry on."""
        log.error("event spool failed", path=str(self.path), error=str(exc))
        with suppress(sqlite3.Error):
            self._db.close()
        if not self._durable or _environment_fault(exc):
            self._db, self._durable = self._fall_back_to_memory(exc), False
        else:
            if _corrupt(exc):
                self._move_aside(exc)
            self._db, self._durable = self._open_or_fall_back()
        self._load()

    def _move_aside(self, exc: BaseException) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        moved = self.path.with_name(f"{self.path.name}.unreadable-{stamp}")
        try:
            os.replace(self.path, moved)
            for suffix in ("-wal", "-shm"):
                side = Path(f"{self.path}{suffix}")
                if side.exists():
                    os.replace(side, Path(f"{moved}{suffix}"))
        except OSError as move_error:
            log.error(
                "event spool unreadable and cannot be moved aside",
                path=str(self.path),
                error=str(exc),
                move_error=str(move_error),
            )
            return
        log.error(
            "event spool unreadable; moved aside and starting an empty one "
            "(undelivered events in it are lost)",
            path=str(self.path),
            moved_to=str(moved),
            error=str(exc),
        )
        self._problem(f"{self.path}: unreadable ({exc}); moved to {moved.name}, events in it lost")

    def _fall_back_to_memory(self, exc: BaseException) -> sqlite3.Connection:
        log.error(
            "event spool cannot be written; keeping events in memory until the agent "
            "restarts (check the state directory's permissions and free space)",
            path=str(self.path),
            error=str(exc),
        )
        return _open(MEMORY)


def _decoded(body: object) -> dict[str, Any] | None:
    """A stored event, or None when the row is damaged."""
    if not isinstance(body, str):
        return None
    try:
        event = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return event if isinstance(event, dict) else None


def _open(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    # A damaged row may not be UTF-8: read it as text with replacement characters, so it
    # is found damaged and dropped instead of stopping every read of the table.
    db.text_factory = lambda raw: raw.decode("utf-8", errors="replace")
    try:
        if path != MEMORY:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise SpoolUnreadable(f"integrity check failed: {verdict}")
        db.executescript(_SCHEMA)
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT OR IGNORE INTO meta VALUES ('stream', ?)", (secrets.token_hex(4),))
        db.execute("INSERT OR IGNORE INTO meta VALUES ('dropped', 0)")
        db.execute("COMMIT")
        columns = [row[1] for row in db.execute("PRAGMA table_info(events)")]
        if columns != ["seq", "body"]:
            raise SpoolUnreadable(f"unknown events table layout {columns}")
    except BaseException:
        db.close()
        raise
    return db


def _corrupt(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def _environment_fault(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _ENVIRONMENT_ERRORS
