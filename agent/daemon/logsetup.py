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
    """fmt: 'json', 'console', or 'auto' (console when the stream is a terminal).

    Our own lines and those of every library that logs through the standard library
    (asyncio, aiomqtt, paho, warnings) go through one handler and one renderer, so in
    JSON mode every record in the journal is one JSON object.
    """
    out = stream if stream is not None else sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if recent is not None:
        shared.append(recent)
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *([] if use_console else [structlog.processors.format_exc_info]),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    logging.captureWarnings(True)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
