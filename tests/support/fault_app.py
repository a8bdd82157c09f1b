"""The worker's Celery app with the fault injector installed, for the fault suite only:
`celery -A tests.support.fault_app worker ...` (prefork children inherit the hook).

Deployed workers run `-A tasks`, where `REFLECTION_FAULT` does nothing."""

from tasks import app
from tests.support.faults import install_from_environment

install_from_environment()

__all__ = ["app"]
