"""Logging set-up: one line per stage, as text or JSON (`REFLECTION_LOG_FORMAT`)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TextIO

from reflection.secrets import mask_secrets


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
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class MaskSecrets(logging.Filter):
    """Mask credentials in every message, whatever put them there."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        masked = mask_secrets(msg)
        if masked != msg:
            record.msg, record.args = masked, None
        return True


def configure_logging(
    fmt: str = "text", level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Attach one handler, writing to `stream` (default `sys.stderr` at the time of the
    call), to the `reflection` logger (idempotent)."""
    logger = logging.getLogger("reflection")
    logger.setLevel(level)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    handler.addFilter(MaskSecrets())
    logger.handlers = [handler]
    logger.propagate = False
