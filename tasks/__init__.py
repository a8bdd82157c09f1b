"""The Celery side: `celery -A tasks worker -Q reflection` finds `tasks.app`."""

from tasks import exporter, worker  # noqa: F401 (connect their hooks into Celery's signals)
from tasks.app import app
from tasks.consolidate import consolidate
from tasks.reflect import reflect

__all__ = ["app", "consolidate", "reflect"]
