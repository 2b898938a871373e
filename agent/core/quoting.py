"""Quoting untrusted values back in error messages and log lines, safely.

A value from a client, a pool or a config file may be megabytes long, nested a thousand
levels deep (plain `repr` then raises RecursionError), an integer too long to print, or
full of control characters. Whatever comes back to an operator or into the journal goes
through `quote`: bounded in length and depth, printable, and it never raises.
"""

from __future__ import annotations

from typing import Any

DEFAULT_CHARS = 60
_MAX_DEPTH = 3
_ELLIPSIS = "..."


def quote(value: Any, limit: int = DEFAULT_CHARS) -> str:
    """At most `limit` printable characters that show what `value` was."""
    parts: list[str] = []
    _render(value, parts, 0, limit + len(_ELLIPSIS))
    return clip("".join(parts), limit)


def clip(text: str, limit: int, *, keep_end: bool = False) -> str:
    """`text` cut to `limit` characters (an ellipsis marks the cut), non-printables as `?`.
    `keep_end` keeps the tail instead: the informative part of a long file path."""
    if len(text) > limit:
        room = max(limit - len(_ELLIPSIS), 0)
        text = _ELLIPSIS + text[len(text) - room :] if keep_end else text[:room] + _ELLIPSIS
    return "".join(c if c.isprintable() else "?" for c in text)


def _render(value: Any, out: list[str], depth: int, budget: int) -> None:
    """Append a rendering of `value` to `out`, stopping once `budget` characters are used."""
    used = sum(len(p) for p in out)
    if used >= budget:
        return
    room = budget - used
    if isinstance(value, dict | list | tuple):
        opening, closing = ("{", "}") if isinstance(value, dict) else ("[", "]")
        if depth >= _MAX_DEPTH:
            out.append(f"{opening}{_ELLIPSIS}{closing}")
            return
        out.append(opening)
        items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
        for n, (key, item) in enumerate(items):
            if sum(len(p) for p in out) >= budget:
                break
            if n:
                out.append(", ")
            if isinstance(value, dict):
                _render(key, out, depth + 1, budget)
                out.append(": ")
            _render(item, out, depth + 1, budget)
        out.append(closing)
    elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        digits = int(value.bit_length() * 0.30103) + 1
        out.append(f"<an integer of about {digits} digits>")
    elif isinstance(value, str | bytes | bytearray):
        out.append(repr(value[:room]))
    else:
        try:
            out.append(repr(value)[:room])
        except Exception:  # a foreign object's repr: never let quoting fail
            out.append(f"<{type(value).__name__}>")
