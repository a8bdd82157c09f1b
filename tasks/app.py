"""The Celery application, configured from `tasks/celeryconfig.py`."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from celery import Celery

from tasks import transport


class ReflectionCelery(Celery):  # type: ignore[misc]
    """Celery, with our worker class (`tasks.worker.Worker`) for `celery worker`."""

    @cached_property
    def Worker(self) -> Any:  # Celery's name
        return self.subclass_with_self("tasks.worker:Worker")


transport.install()  # on Redis, kombu's transport with one fix (tasks/transport.py)
app = ReflectionCelery("reflection")
app.config_from_object("tasks.celeryconfig")
