"""An LLM outage through a real worker: the circuit breaker defers the runs (no slot
held, no retry counted) and they all apply once the endpoint is back, exactly once;
an outage longer than REFLECTION_LLM_OUTAGE_RETRY_HOURS ends them `llm_unavailable`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine

from reflection.constants import LLM_BREAKER_KEY
from reflection.devtools.scripted_llm import ScriptedLlmServer
from tests.e2e.conftest import API_KEY, Worker, check_exactly_once, running_worker, script_for

pytestmark = pytest.mark.e2e

JOBS = {f"outage-{i}": f"user{i % 3}" for i in range(6)}
DOWN = {"rules": [], "default": {"status": 503, "error": "upstream unavailable"}}
OUTAGE_ENV = {
    "REFLECTION_LLM_MAX_ATTEMPTS": "2",
    "REFLECTION_LLM_OUTAGE_PROBE_SECONDS": "1",
}


@contextmanager
def outage_worker(
    worker_env: Callable[..., dict[str, str]],
    pg_engine: Engine,
    tmp_path: Path,
    **overrides: str,
) -> Iterator[Worker]:
    """A threads worker whose LLM answers 503 to everything until its script changes."""
    with ScriptedLlmServer(DOWN, require_key=API_KEY) as llm:
        env = worker_env(llm.base_url, **OUTAGE_ENV, **overrides)
        args = ("--pool", "threads", "--concurrency", "4")
        with running_worker(env, llm, pg_engine, tmp_path, *args) as w:
            yield w


def _publish_all(w: Worker, make_job: Any) -> None:
    for job, user in JOBS.items():
        make_job(job, user_id=user)
        w.publish(job, user)


def _deferrals(w: Worker) -> int:
    return sum(
        1 for line in w.log.read_text().splitlines() if "deferred" in line and "breaker" in line
    )


def test_runs_published_during_an_outage_all_apply_once_it_ends(
    worker_env: Callable[..., dict[str, str]],
    pg_engine: Engine,
    redis_client: redis.Redis,
    make_job: Any,
    tmp_path: Path,
) -> None:
    """Six runs meet a 503 outage: the breaker opens, they are deferred (every one at
    least once) instead of failing; when the endpoint recovers a probe closes the
    breaker and every job ends applied, exactly once, none `llm_unavailable`."""
    with outage_worker(worker_env, pg_engine, tmp_path) as w:
        _publish_all(w, make_job)
        deadline = time.monotonic() + 60
        while _deferrals(w) < len(JOBS):
            assert time.monotonic() < deadline, w.log.read_text()[-3000:]
            time.sleep(0.2)
        assert redis_client.exists(LLM_BREAKER_KEY)
        assert w.rows() == []  # deferred, not failed
        w.llm.set_script(script_for(list(JOBS)))  # the endpoint is back
        w.wait_rows(len(JOBS), timeout=90)
        time.sleep(1)  # a second apply would show as a second row
        check_exactly_once(w, JOBS)
        assert not redis_client.exists(LLM_BREAKER_KEY)
        log = w.log.read_text()
        assert "LLM circuit breaker opened" in log and "LLM circuit breaker closed" in log
        assert "code=llm_unavailable" not in log and "ReflectionFailed" not in log


def test_an_outage_longer_than_the_window_fails_the_runs_llm_unavailable(
    worker_env: Callable[..., dict[str, str]],
    pg_engine: Engine,
    make_job: Any,
    tmp_path: Path,
) -> None:
    """REFLECTION_LLM_OUTAGE_RETRY_HOURS of a few seconds and an endpoint that stays
    down: each run is deferred, then fails `llm_unavailable` with one row."""
    window = {"REFLECTION_LLM_OUTAGE_RETRY_HOURS": "0.001"}  # 3.6 s
    with outage_worker(worker_env, pg_engine, tmp_path, **window) as w:
        _publish_all(w, make_job)
        rows = w.wait_rows(len(JOBS), timeout=90)
        time.sleep(1)
        assert len(w.rows()) == len(JOBS)
        assert {(r["outcome"], r["error_code"]) for r in rows} == {("failed", "llm_unavailable")}
        assert sorted(r["original_job_id"] for r in rows) == sorted(JOBS)
        assert _deferrals(w) >= 1
