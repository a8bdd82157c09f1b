"""Publish `reflect` from Python (the platform's side). Other languages: see the README,
"The task message" — any Celery-protocol client can publish the same message.
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import Celery

from reflection.constants import QUEUE_NAME, TASK_NAME
from reflection.models import JobOutcome, ReflectRequest
from reflection.request import parse_request


def make_producer(broker_url: str) -> Celery:
    """A minimal Celery app that can only publish (JSON, no result backend)."""
    app = Celery("reflection-producer", broker=broker_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
    )
    return app


def publish_reflect(
    app: Celery,
    *,
    original_job_id: str,
    user_id: str,
    piece_name: str,
    outcome: JobOutcome,
    task_id: str | None = None,
) -> str:
    """Publish one `reflect` task by name and return its id (the reflection job id).

    The kwargs are validated first, so a producer bug fails here, loudly, not in a worker.
    """
    request: ReflectRequest = parse_request(
        {
            "original_job_id": original_job_id,
            "user_id": user_id,
            "piece_name": piece_name,
            "outcome": outcome,
        }
    )
    tid = task_id or str(uuid.uuid4())
    kwargs: dict[str, Any] = request.model_dump()
    app.send_task(TASK_NAME, kwargs=kwargs, queue=QUEUE_NAME, task_id=tid, serializer="json")
    return tid


CONSOLIDATE_TASK = "consolidate"
CONSOLIDATE_REASONS = ("scheduled", "threshold", "operator")


def publish_consolidate(
    app: Celery, *, user_id: str, reason: str = "operator", task_id: str | None = None
) -> str:
    """Publish one `consolidate` pass by name (`user_id="*"`: the sweep) and return its
    task id; the kwargs are checked first, as for `reflect`."""
    from reflection.consolidate import parse_pass  # the pass's own check of its kwargs

    parse_pass({"user_id": user_id, "reason": reason})
    tid = task_id or str(uuid.uuid4())
    kwargs = {"user_id": user_id, "reason": reason}
    app.send_task(CONSOLIDATE_TASK, kwargs=kwargs, queue=QUEUE_NAME, task_id=tid, serializer="json")
    return tid
