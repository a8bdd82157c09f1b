"""The `celery worker` program's class, and the hooks into Celery's logging set-up.

In JSON mode (`REFLECTION_LOG_FORMAT=json`) every line the worker process writes is one
JSON object: Celery's handlers are given our JSON formatter as Celery announces them
(`after_setup_logger`, `after_setup_task_logger`), stray prints go through logging
(`worker_redirect_stdouts`), and the three things Celery prints itself are taken over
here: the banner becomes one JSON line, the shutdown notices of its signal handlers
(`safe_say`) are JSON lines, and a warning raised before its logging is set up (running
as root) goes through logging. In text mode the worker writes what Celery writes, with
credentials masked.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import __version__ as celery_version
from celery.apps import worker as celery_worker
from celery.signals import after_setup_logger, after_setup_task_logger
from celery.utils.log import get_multiprocessing_logger

from reflection.logs import LogFormat, ScrubLines, adopt_handlers, formatter, write_line
from reflection.settings import get_settings

log = logging.getLogger("celery.apps.worker")


def _format() -> LogFormat:
    return get_settings().log_format


class Worker(celery_worker.Worker):  # type: ignore[misc]
    """Celery's worker program, with its own output in the configured log format."""

    def on_before_init(self, quiet: bool = False, **kwargs: Any) -> None:
        if _format() == "json":
            _json_until_celery_logs()
            celery_worker.safe_say = _say_json
        super().on_before_init(quiet=quiet, **kwargs)

    def emit_banner(self) -> None:
        """Celery's banner, or in JSON mode one line with what it says."""
        if _format() != "json":
            super().emit_banner()
            return
        pool = self.pool_cls if isinstance(self.pool_cls, str) else self.pool_cls.__module__
        log.info(
            "celery worker %s starting",
            self.hostname,
            extra={
                "hostname": self.hostname,
                "celery_version": celery_version,
                "broker": self.app.connection().as_uri(),  # the password masked
                "pool": pool.rsplit(".", 1)[-1],
                "concurrency": self.concurrency,
                "queues": sorted(self.app.amqp.queues),
                "task_events": bool(self.task_events),
            },
        )


def _json_until_celery_logs() -> None:
    """A JSON handler on the root logger, and warnings through logging, for what happens
    before Celery sets up its own handler (which replaces this one: it hijacks the root
    logger), such as its warning that the worker runs as root."""
    handler = logging.StreamHandler(sys.__stderr__)
    handler.setFormatter(formatter("json"))
    handler.addFilter(ScrubLines())
    logging.getLogger().addHandler(handler)
    logging.captureWarnings(True)


def _say_json(msg: str, f: Any = None) -> None:
    """`celery.apps.worker.safe_say` as a JSON line, written with one `os.write` as the
    original does: it runs in a signal handler, where taking a handler's lock could
    deadlock."""
    stream = f or sys.__stderr__ or sys.stderr
    write_line(stream.fileno(), "json", "celery.apps.worker", logging.WARNING, msg.strip())


@after_setup_logger.connect
def _adopt_root_logger(logger: logging.Logger, **_: object) -> None:
    fmt = _format()
    adopt_handlers(logger, fmt)
    # Celery gives billiard's logger (a prefork child's exit, say) a handler of its own
    # and announces only the root one.
    adopt_handlers(get_multiprocessing_logger(), fmt)


@after_setup_task_logger.connect
def _adopt_task_logger(logger: logging.Logger, **_: object) -> None:
    adopt_handlers(logger, _format())
