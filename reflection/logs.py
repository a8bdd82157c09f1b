"""Logging set-up: one line per record, as text or JSON (`REFLECTION_LOG_FORMAT`), with
credentials masked and terminal control characters escaped on every handler.

JSON comes from python-json-logger. It is a plain `logging.Formatter`, so every record
of every library in the process (Celery's, kombu's, httpx's, the lock library's,
warnings) becomes one JSON object without an adapter, and a record's `extra=` fields
(`job_id`, `user_id`, `outcome`, ...) become fields of that object.
"""

from __future__ import annotations

import logging
import os
from types import TracebackType
from typing import Literal, TextIO

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

from reflection.secrets import mask_secrets
from reflection.text import escape_for_terminal

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
OWN_LOGGERS = ("reflection", "tasks")  # the worker's modules, and its Celery task module

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


class ScrubLines(logging.Filter):
    """Mask credentials in every message, whatever put them there, and show control,
    bidi and tag characters escaped (a log is read in a terminal, and a message may
    quote a file name or a value from a user's folder)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a bad format call: the handler reports it, as without us
            return True
        scrubbed = _scrub(msg)
        if scrubbed != msg:
            record.msg, record.args = scrubbed, None
        if record.exc_info and not record.exc_text:  # a traceback quotes values too
            # Formatters print a record's exc_text when it is set.
            record.exc_text = _scrub(_PLAIN.formatException(record.exc_info))
        return True


def _scrub(text: str) -> str:
    return escape_for_terminal(mask_secrets(text))


_PLAIN = logging.Formatter()


class JsonFormatter(_JsonFormatter):
    """One JSON object per line: `ts`, `level`, `logger`, `msg`, `exc` (a traceback) and
    the record's extra fields."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={
                "levelname": "level",
                "name": "logger",
                "message": "msg",
                "exc_info": "exc",
            },
            timestamp="ts",
            json_ensure_ascii=False,
        )

    def formatException(self, ei: _ExcInfo) -> str:
        # The base class formats the traceback afresh, not from the scrubbed exc_text.
        return _scrub(_PLAIN.formatException(ei))


def formatter(fmt: LogFormat) -> logging.Formatter:
    """The worker's formatter for `fmt`."""
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(
    fmt: LogFormat = "text", level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Attach one handler, writing to `stream` (default `sys.stderr` at the time of the
    call), to the `reflection` and `tasks` loggers (idempotent)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(ScrubLines())
    for name in OWN_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers = [handler]
        logger.propagate = False


def adopt_handlers(logger: logging.Logger, fmt: LogFormat) -> None:
    """Make handlers someone else set up (Celery's) write like ours: credentials masked
    (Celery's lines quote a task's exception and arguments) and, in JSON mode, one JSON
    object per line. Text mode keeps their own layout."""
    for handler in logger.handlers:
        if not any(isinstance(f, ScrubLines) for f in handler.filters):
            handler.addFilter(ScrubLines())
        if fmt == "json" and not isinstance(handler.formatter, JsonFormatter):
            handler.setFormatter(JsonFormatter())


def write_line(fd: int, fmt: LogFormat, name: str, level: int, msg: str) -> None:
    """Write one log line straight to a file descriptor, masked and formatted like the
    handlers' lines: for the few places that must not take a handler's lock (a signal
    handler) or run before logging is set up (a refused configuration)."""
    record = logging.LogRecord(name, level, __file__, 0, msg, None, None)
    ScrubLines().filter(record)
    os.write(fd, (formatter(fmt).format(record) + "\n").encode("utf-8", "replace"))
