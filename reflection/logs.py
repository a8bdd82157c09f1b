"""Logging set-up: one line per stage, as text or JSON (`REFLECTION_LOG_FORMAT`)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TextIO

from reflection.secrets import mask_secrets
from reflection.text import escape_for_terminal


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class ScrubLines(logging.Filter):
    """Mask credentials in every message, whatever put them there, and show control,
    bidi and tag characters escaped (a log is read in a terminal, and a message may
    quote a file name or a value from a user's folder)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a bad format call: the handler reports it, as without us
            return True
        scrubbed = escape_for_terminal(mask_secrets(msg))
        if scrubbed != msg:
            record.msg, record.args = scrubbed, None
        if record.exc_info and not record.exc_text:  # a traceback quotes values too
            # Formatters print a record's exc_text when it is set.
            trace = _PLAIN.formatException(record.exc_info)
            record.exc_text = escape_for_terminal(mask_secrets(trace))
        return True


_PLAIN = logging.Formatter()
OWN_LOGGERS = ("reflection", "tasks")  # the worker's modules, and its Celery task module


def configure_logging(
    fmt: str = "text", level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Attach one handler, writing to `stream` (default `sys.stderr` at the time of the
    call), to the `reflection` and `tasks` loggers (idempotent)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    handler.addFilter(ScrubLines())
    for name in OWN_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers = [handler]
        logger.propagate = False


def mask_handlers(logger: logging.Logger) -> None:
    """Mask credentials in whatever `logger`'s handlers write (Celery's own lines quote
    a task's exception and arguments)."""
    for handler in logger.handlers:
        if not any(isinstance(f, ScrubLines) for f in handler.filters):
            handler.addFilter(ScrubLines())
