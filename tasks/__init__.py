"""The Celery side: `celery -A tasks worker -Q reflection` finds `tasks.app`."""

from tasks import worker  # noqa: F401 (connects the hooks into Celery's logging set-up)
from tasks.app import app
from tasks.reflect import reflect

__all__ = ["app", "reflect"]
