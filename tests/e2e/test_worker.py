"""A real worker process consumes `reflect` published by name, as the platform does."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from reflection import message
from reflection.paths import UserPaths
from reflection.producer import publish_reflect
from tests.conftest import TEST_BROKER_URL
from tests.e2e.conftest import Worker
from tests.support.db import EVIDENCE

pytestmark = pytest.mark.e2e

ENTRY = {
    "op": "add",
    "evidence": EVIDENCE,
    "name": "prefers-pytest",
    "description": "Wants tests written with pytest, never unittest",
    "type": "feedback",
    "body": "The user rejected a unittest suite; use pytest fixtures.",
}


def script(w: Worker, job_id: str, content: Any, **reply: Any) -> None:
    s = w.llm.script
    s.setdefault("rules", []).append({"match": job_id, "replies": [{"content": content, **reply}]})
    w.llm.set_script(s)


def publish(w: Worker, job_id: str, **kw: Any) -> str:
    args = {"user_id": "alice", "piece_name": "default", "outcome": "succeeded"} | kw
    return publish_reflect(w.producer, original_job_id=job_id, **args)


def test_reflect_end_to_end(worker: Worker, make_job: Any) -> None:
    """Published by name, the task writes memory, snapshot, index line and metrics row."""
    make_job("job-e1")
    script(
        worker, "job-e1", {"reasoning": "learned", "memory_changes": [ENTRY], "piece_edit": None}
    )
    task_id = publish(worker, "job-e1")
    [row] = worker.wait_rows(1)
    assert row["reflection_job_id"] == task_id
    assert (row["outcome"], row["memory_changes"], row["error_code"]) == ("applied", 1, None)
    u = UserPaths(worker.root, "alice")
    assert "pytest fixtures" in u.memory_file("prefers-pytest").read_text()
    [line] = [json.loads(x) for x in u.snapshot_index.read_text().splitlines()]
    assert line["reflection_job_id"] == task_id
    meta = json.loads((u.snapshot_dir(line["snapshot_id"]) / "meta.json").read_text())
    assert meta["memory_changes"] == 1
    # The worker's key was sent, as a bearer token.
    [req] = [r for r in worker.llm.requests if r["path"].endswith("/chat/completions")]
    assert req["headers"].get("authorization") == "Bearer sk-e2e-worker-key-abcdef0123456789"
    # One line for the run, as written, not wrapped again by the prefork child's stderr proxy.
    [done] = [x for x in worker.log.read_text().splitlines() if " done job=job-e1 " in x]
    assert " INFO reflection done job=job-e1 " in done and "ForkPoolWorker" not in done
    assert "Acquired Lock" not in worker.log.read_text()  # python-redis-lock's INFO lines


def test_duplicate_and_bad_input_keep_the_worker_serving(worker: Worker, make_job: Any) -> None:
    """A re-publish is a duplicate with no LLM call; bad kwargs and an unknown job fail with a
    code and a row; the worker goes on serving."""
    make_job("job-e2")
    script(worker, "job-e2", {"reasoning": "ok", "memory_changes": [ENTRY], "piece_edit": None})
    publish(worker, "job-e2")
    worker.wait_rows(1)
    publish(worker, "job-e2")
    worker.producer.send_task("reflect", kwargs={"user_id": "alice"}, queue="reflection")
    worker.producer.send_task("reflect", args=["x"], queue="reflection")
    publish(worker, "job-missing")
    rows = worker.wait_rows(5)
    got = sorted((r["outcome"], r["error_code"] or "") for r in rows)
    assert got == sorted(
        [
            ("applied", ""),
            ("duplicate", ""),
            ("failed", "bad_request"),
            ("failed", "bad_request"),
            ("failed", "job_not_found"),
        ]
    )
    assert worker.llm_calls() == 1
    assert worker.proc.poll() is None


def test_llm_auth_failure_is_reported_once(worker: Worker, make_job: Any) -> None:
    """A 401 from the endpoint: failed llm_auth, one request, no retry storm."""
    make_job("job-e3")
    script(worker, "job-e3", "unused", status=401, error="invalid api key")
    publish(worker, "job-e3")
    [row] = worker.wait_rows(1)
    assert (row["outcome"], row["error_code"]) == ("failed", "llm_auth")
    assert worker.llm_calls() == 1
    assert "refused the worker's API key" in worker.log.read_text()


def test_raw_protocol_message_as_documented(worker: Worker, make_job: Any) -> None:
    """A non-Python producer LPUSHing the README's JSON message onto `reflection` is served."""
    import base64
    import uuid

    import redis as redis_lib

    from tests.conftest import TEST_BROKER_URL

    make_job("job-raw")
    script(worker, "job-raw", {"reasoning": "ok", "memory_changes": [ENTRY], "piece_edit": None})
    task_id = str(uuid.uuid4())
    kwargs = {
        "original_job_id": "job-raw",
        "user_id": "alice",
        "piece_name": "default",
        "outcome": "succeeded",
    }
    body = [[], kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    message = {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": "reflect",
            "id": task_id,
            "root_id": task_id,
            "parent_id": None,
            "group": None,
            "retries": 0,
            "eta": None,
            "expires": None,
            "argsrepr": "()",
            "kwargsrepr": json.dumps(kwargs),
            "origin": "platform@host",
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": "reflection"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    client = redis_lib.Redis.from_url(TEST_BROKER_URL)
    client.lpush("reflection", json.dumps(message))
    client.close()
    [row] = worker.wait_rows(1)
    assert (row["reflection_job_id"], row["outcome"]) == (task_id, "applied")


def test_a_raw_message_from_the_standalone_builder_is_reflected(
    worker: Worker, make_job: Any
) -> None:
    """A producer without Celery (reflection/message.py, stdlib only) LPUSHes the
    protocol-level message onto the Redis broker; the worker reflects it under its id."""
    make_job("job-raw")
    script(
        worker, "job-raw", {"reasoning": "learned", "memory_changes": [ENTRY], "piece_edit": None}
    )
    envelope = message.redis_envelope(
        original_job_id="job-raw",
        user_id="alice",
        piece_name="default",
        outcome="succeeded",
        task_id="raw-0001",
    )
    broker = redis.Redis.from_url(TEST_BROKER_URL)
    try:
        broker.lpush(message.QUEUE, envelope)
    finally:
        broker.close()
    [row] = worker.wait_rows(1)
    assert (row["reflection_job_id"], row["outcome"]) == ("raw-0001", "applied")
