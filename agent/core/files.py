"""Small state files that must survive a power cut whole: written aside, synced, renamed.

A controller board loses power without warning; a half-written controls or tuning file
would otherwise be read back as garbage (or worse, as something else).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path


def write_atomically(path: Path, body: bytes) -> None:
    """Replace `path` with `body`: the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(body)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_limited(path: Path, max_bytes: int) -> bytes:
    """The file's bytes; ValueError if it is larger than `max_bytes` (untrusted input)."""
    with path.open("rb") as file:
        raw = file.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ValueError(f"larger than {max_bytes} bytes")
    return raw


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def serial_file(directory: Path, serial: str, suffix: str = ".json") -> Path:
    """The file kept for a module serial; serials are untrusted (EEPROM), so odd ones
    are hashed into a name instead of becoming one."""
    if _SAFE_NAME.fullmatch(serial):
        return directory / f"{serial}{suffix}"
    digest = hashlib.sha256(serial.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return directory / f"serial-{digest}{suffix}"
