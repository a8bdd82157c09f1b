"""One busy user does not hold every worker slot: a real worker (both pools), a burst of
one user's jobs published ahead of other users' jobs, each LLM answer taking 0.4 s."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from reflection.devtools.scripted_llm import ScriptedLlmServer
from reflection.producer import make_producer, publish_reflect
from tests.conftest import TEST_BROKER_URL
from tests.e2e.conftest import API_KEY, Worker, start_worker, stop_worker

pytestmark = pytest.mark.e2e

ANSWER: dict[str, Any] = {"reasoning": "nothing new", "memory_changes": [], "piece_edit": None}


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_a_burst_of_one_user_waits_for_its_turn(
    worker_env: Callable[..., dict[str, str]],
    pg_engine: Engine,
    tmp_path: Path,
    make_job: Any,
    pool: str,
) -> None:
    """With 2 slots per user and 6 worker slots, the 4 other users' jobs, published
    after 10 of the hot user's, all finish before the hot user's 5th; the deferred jobs
    are not counted as retries: every job ends with one row, none failed."""
    hot = [f"job-hot-{i}" for i in range(10)]
    others = [f"job-cold-{i}" for i in range(4)]
    for job in hot:
        make_job(job, user_id="hot")
    for i, job in enumerate(others):
        make_job(job, user_id=f"cold-{i}")
    with ScriptedLlmServer(
        {"default": {"content": ANSWER, "delay": 0.4}}, require_key=API_KEY
    ) as llm:
        env = worker_env(llm.base_url, REFLECTION_USER_MAX_IN_FLIGHT="2")
        log = tmp_path / "worker.log"
        proc = start_worker(env, log, "--pool", pool, "--concurrency", "6")
        producer = make_producer(TEST_BROKER_URL)
        w = Worker(proc, log, llm, producer, pg_engine, tmp_path / "users")
        try:
            for job in hot:
                publish_reflect(
                    producer,
                    original_job_id=job,
                    user_id="hot",
                    piece_name="default",
                    outcome="succeeded",
                )
            for i, job in enumerate(others):
                publish_reflect(
                    producer,
                    original_job_id=job,
                    user_id=f"cold-{i}",
                    piece_name="default",
                    outcome="succeeded",
                )
            rows = w.wait_rows(14, timeout=120)
        finally:
            stop_worker(proc)
            producer.close()
    assert sorted(r["original_job_id"] for r in rows) == sorted(hot + others)
    assert {r["outcome"] for r in rows} == {"abstained"}
    order = [r["original_job_id"] for r in rows]  # rows are in commit order
    last_cold = max(order.index(j) for j in others)
    assert sum(1 for j in order[:last_cold] if j in hot) < 5, order
    assert "deferred" in log.read_text()
    assert w.llm_calls() == 14
