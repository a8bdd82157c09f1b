"""A real worker runs only `reflect` and `consolidate` from its queue (issue 22, item 8).

Before, a message naming one of Celery's built-in tasks (`celery.backend_cleanup`,
`celery.accumulate`, `celery.map`, ...) on the `reflection` queue was run by the worker.
Now the built-ins are unregistered: the worker logs "Received unregistered task", drops
the message, and goes on serving reflections."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.conftest import Worker, script_for, worker, worker_env

__all__ = ["worker", "worker_env"]

pytestmark = pytest.mark.e2e

BUILTINS: list[tuple[str, dict[str, Any]]] = [
    ("celery.backend_cleanup", {}),
    ("celery.accumulate", {}),
    ("celery.chord_unlock", {"group_id": "g", "callback": {}}),
]


def test_a_builtin_task_on_the_queue_is_refused_and_reflections_go_on(
    worker: Worker, make_job: Any
) -> None:
    make_job("job-after", user_id="alice")
    worker.llm.set_script(script_for(["job-after"]))
    for name, kwargs in BUILTINS:
        worker.producer.send_task(name, kwargs=kwargs, queue="reflection", serializer="json")
    worker.publish("job-after")
    [row] = worker.wait_rows(1)
    assert (row["original_job_id"], row["outcome"]) == ("job-after", "applied")
    wanted = [f"Received unregistered task of type '{name}'" for name, _ in BUILTINS]
    stop = time.monotonic() + 20
    while not all(w in worker.log.read_text() for w in wanted) and time.monotonic() < stop:
        time.sleep(0.2)
    log = worker.log.read_text()
    assert all(w in log for w in wanted), log[-4000:]
    assert "Task celery." not in log, "a built-in task ran"
    assert worker.proc.poll() is None
