"""structlog set-up: JSON lines for journald and log shippers, readable lines on a terminal.

Module-related lines carry `slot=` (and `serial=` once known) because loggers are bound
with them where the module is handled, not because this file adds anything.
"""

from __future__ import annotations

import logging
import sys
from collections import deque
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
LEVELS["error"] = logging.ERROR


class RecentEvents:
    """Keeps the last few log events (as dicts) for the live console."""

    def __init__(self, size: int = 12) -> None:
        self.lines: deque[dict[str, Any]] = deque(maxlen=size)

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        self.lines.append(dict(event_dict))
        return event_dict


def configure_logging(
    level: str,
    *,
    stream: TextIO | None = None,
    fmt: str = "auto",
    recent: RecentEvents | None = None,
) -> None:
    """fmt: 'json', 'console', or 'auto' (console when the stream is a terminal)."""
    out = stream if stream is not None else sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if recent is not None:
        processors.append(recent)
    if use_console:
        processors.append(structlog.dev.ConsoleRenderer(colors=out.isatty()))
    else:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Libraries that log through the standard library (aiomqtt, asyncio) end up here too.
    logging.basicConfig(
        level=LEVELS[level], stream=out, format="%(levelname)s %(name)s %(message)s"
    )
