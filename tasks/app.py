"""The Celery application, configured from `tasks/celeryconfig.py`.

Invalid settings stop the process here, on import (the worker, Flower, beat), with one
line that names the variable, in the configured log format, and exit code 2.
"""

from __future__ import annotations

import logging
import sys
from functools import cached_property
from typing import Any

from celery import Celery
from pydantic import ValidationError

from reflection.constants import CELERY_BUILTIN_PREFIX
from reflection.logs import write_line
from reflection.settings import describe_invalid, get_settings, log_format_of_environment
from tasks import transport

EXIT_CONFIG = 2  # as the `reflection` command's exit code for bad configuration


class ReflectionCelery(Celery):  # type: ignore[misc]
    """Celery, with our worker class (`tasks.worker.Worker`) for `celery worker`."""

    @cached_property
    def Worker(self) -> Any:  # Celery's name
        return self.subclass_with_self("tasks.worker:Worker")


def _check_settings() -> None:
    try:
        get_settings()
    except ValidationError as e:
        fd = (sys.__stderr__ or sys.stderr).fileno()
        line = describe_invalid(e)
        write_line(fd, log_format_of_environment(), __name__, logging.CRITICAL, line)
        raise SystemExit(EXIT_CONFIG) from None


def _no_builtin_tasks(sender: Celery, **_: Any) -> None:
    """Unregister Celery's built-in tasks once the app is finalized (Celery registers
    them then), leaving ours (`reflection.constants.QUEUE_TASKS`): a message on the
    queue naming a built-in is refused by the worker, not run."""
    for name in [name for name in sender.tasks if name.startswith(CELERY_BUILTIN_PREFIX)]:
        sender.tasks.unregister(name)


_check_settings()
transport.install()  # on Redis, kombu's transport with one fix (tasks/transport.py)
app = ReflectionCelery("reflection")
app.config_from_object("tasks.celeryconfig")
app.on_after_finalize.connect(_no_builtin_tasks, weak=False)
