"""The Celery application, configured from `celeryconfig.py`."""

from celery import Celery

app = Celery("reflection")
app.config_from_object("celeryconfig")
