"""The Celery application, configured from `tasks/celeryconfig.py`."""

from celery import Celery

from tasks import transport

transport.install()  # on Redis, kombu's transport with one fix (tasks/transport.py)
app = Celery("reflection")
app.config_from_object("tasks.celeryconfig")
