"""REFLECTION_LOG_FORMAT=json: every line a real worker writes, on stdout and stderr, is
one JSON object (Celery's banner, its task lines, httpx's, warnings, prefork children,
the shutdown), the run lines carry the run's fields, and no API key appears."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine

from reflection.constants import USER_LOCK_PREFIX
from reflection.devtools.scripted_llm import ScriptedLlmServer
from reflection.producer import make_producer, publish_reflect
from tests.conftest import TEST_BROKER_URL
from tests.e2e.conftest import API_KEY, Worker, entry, start_worker, stop_worker

pytestmark = pytest.mark.e2e

RUN_FIELDS = {"job_id", "user_id", "reflection_job_id", "outcome", "duration_ms"}


def _lines(*paths: Path) -> list[str]:
    return [line for p in paths for line in p.read_text().splitlines()]


def _publish(w: Worker, job: str, user: str) -> str:
    return publish_reflect(
        w.producer, original_job_id=job, user_id=user, piece_name="default", outcome="succeeded"
    )


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_every_line_of_a_json_worker_is_json(
    pool: str,
    worker_env: Callable[..., dict[str, str]],
    pg_engine: Engine,
    redis_client: redis.Redis,
    make_job: Any,
    tmp_path: Path,
) -> None:
    """Applied, failed and retried runs, then SIGTERM: each stdout and stderr line
    parses as a JSON object; the run lines have job, user, reflection id, outcome,
    error code and duration as fields; the key never shows."""
    make_job("job-ok", user_id="alice")
    make_job("job-busy", user_id="bob")
    script = {
        "rules": [
            {"match": f"job id: {job}\n", "replies": [{"content": entry(job)}]}
            for job in ("job-ok", "job-busy")
        ]
    }
    out, err = tmp_path / "worker.out", tmp_path / "worker.err"
    with ScriptedLlmServer(script, require_key=API_KEY) as llm:
        env = worker_env(llm.base_url, REFLECTION_LOG_FORMAT="json")
        proc = start_worker(env, out, "--pool", pool, stderr_log=err)
        producer = make_producer(TEST_BROKER_URL)
        w = Worker(proc, out, llm, producer, pg_engine, tmp_path / "users")
        try:
            # bob's lock is held for 3 s: his run waits 1 s, is retried, then applies.
            redis_client.set("lock:" + USER_LOCK_PREFIX + "bob", "another-worker", px=3000)
            busy = _publish(w, "job-busy", "bob")
            ok = _publish(w, "job-ok", "alice")
            missing = _publish(w, "job-missing", "carol")  # no such job: failed
            rows = {r["reflection_job_id"]: r for r in w.wait_rows(3, timeout=90)}
            assert rows[ok]["outcome"] == rows[busy]["outcome"] == "applied"
            assert rows[missing]["outcome"] == "failed"
        finally:
            stop_worker(proc)
            producer.close()
    assert proc.returncode == 0
    docs = []
    for line in _lines(out, err):
        doc = json.loads(line)  # fails on the first line that is not JSON
        assert isinstance(doc, dict) and {"ts", "level", "logger", "msg"} <= set(doc), line
        docs.append(doc)
    text = "\n".join(_lines(out, err))
    assert API_KEY not in text and "sk-e2e-worker-key" not in text
    loggers = {d["logger"] for d in docs}
    assert {"celery.apps.worker", "celery.worker.strategy", "celery.app.trace"} <= loggers
    assert any(d["logger"].startswith("httpx") for d in docs), loggers  # request lines
    assert any("shutdown" in d["msg"] for d in docs)  # Celery's own print, as JSON
    done = {d["reflection_job_id"]: d for d in docs if d.get("stage") in ("done", "failed")}
    assert set(done[ok]) >= RUN_FIELDS and done[ok]["outcome"] == "applied"
    assert done[ok]["job_id"] == "job-ok" and done[ok]["user_id"] == "alice"
    assert isinstance(done[ok]["duration_ms"], int)
    assert done[missing]["outcome"] == "failed" and done[missing]["error_code"]
    retried = [d for d in docs if d.get("reflection_job_id") == busy and d.get("error_code")]
    assert retried and retried[0]["error_code"] == "lock_busy", retried
