"""A real `celery -A tasks worker` process on the real Redis broker and Postgres."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine, select

from reflection.devtools.scripted_llm import ScriptedLlmServer
from reflection.paths import UserPaths
from reflection.producer import make_producer, publish_reflect
from reflection.shipped import BUILTIN_PIECES_DIR
from reflection.storage import reflection_metrics
from tests.conftest import TEST_BROKER_URL, TEST_DB_URL, TEST_REDIS_URL
from tests.support import worker as testing_worker
from tests.support.broker import empty_broker
from tests.support.db import EVIDENCE

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-e2e-worker-key-abcdef0123456789"


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path
    llm: ScriptedLlmServer
    producer: Celery
    engine: Engine
    root: Path

    def rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            q = select(reflection_metrics).order_by(reflection_metrics.c.id)
            return [dict(r) for r in conn.execute(q).mappings()]

    def wait_rows(self, n: int, timeout: float = 60) -> list[dict[str, Any]]:
        """Wait until `n` metrics rows exist (or fail with the worker's log)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.rows()
            if len(rows) >= n:
                return rows
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        pytest.fail(f"{n} metrics rows not seen; worker log:\n{self.log.read_text()[-4000:]}")

    def llm_calls(self) -> int:
        return sum(1 for r in self.llm.requests if r["path"].endswith("/chat/completions"))

    def publish(self, job_id: str, user_id: str = "alice") -> str:
        """Publish `reflect` for a succeeded job of `user_id` on the default piece."""
        return publish_reflect(
            self.producer,
            original_job_id=job_id,
            user_id=user_id,
            piece_name="default",
            outcome="succeeded",
        )


def entry(job_id: str) -> dict[str, Any]:
    return {
        "reasoning": "learned",
        "memory_changes": [
            {
                "op": "add",
                "evidence": EVIDENCE,
                "name": f"lesson-{job_id}",
                "description": "A lesson",
                "type": "feedback",
                "body": f"Learned from {job_id}.",
            }
        ],
        "piece_edit": None,
    }


def script_for(jobs: list[str], delay: float = 0.0) -> dict[str, Any]:
    return {
        "rules": [
            {"match": f"job id: {j}\n", "replies": [{"content": entry(j), "delay": delay}]}
            for j in jobs
        ]
    }


def check_exactly_once(w: Worker, jobs: dict[str, str]) -> None:
    """Every job applied once: one applied row, one entry, one index line per job."""
    applied = [r["original_job_id"] for r in w.rows() if r["outcome"] == "applied"]
    assert sorted(applied) == sorted(jobs), "a job was lost or applied twice"
    failed = [r for r in w.rows() if r["outcome"] == "failed"]
    assert failed == []
    for user in set(jobs.values()):
        u = UserPaths(w.root, user)
        mine = sorted(j for j, uid in jobs.items() if uid == user)
        lines = [json.loads(x) for x in u.snapshot_index.read_text().splitlines()]
        assert sorted(line["original_job_id"] for line in lines) == mine
        names = sorted(p.stem for p in u.memory_dir.glob("lesson-*.md"))
        assert names == sorted(f"lesson-{j}" for j in mine)


def start_worker(
    env: dict[str, str], log: Path, *extra: str, **options: Any
) -> subprocess.Popen[bytes]:
    """`tests.support.worker.start_worker` (same options), failing the test on error."""
    try:
        return testing_worker.start_worker(env, log, *extra, name="e2e", **options)
    except testing_worker.WorkerStartError as e:
        pytest.fail(str(e))


stop_worker = testing_worker.stop_worker


@pytest.fixture
def worker_env(
    pg_engine: Engine, redis_client: redis.Redis, tmp_path: Path
) -> Callable[..., dict[str, str]]:
    empty_broker(TEST_BROKER_URL)

    def make(llm_url: str, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REFLECTION_")}
        env.update(
            REFLECTION_BROKER_URL=TEST_BROKER_URL,
            REFLECTION_REDIS_URL=TEST_REDIS_URL,
            REFLECTION_DATABASE_URL=TEST_DB_URL,
            REFLECTION_USER_FOLDER_ROOT=str(tmp_path / "users"),
            REFLECTION_PIECES_DIR=str(BUILTIN_PIECES_DIR),
            REFLECTION_LLM_ENDPOINT=llm_url,
            REFLECTION_LLM_API_KEY=API_KEY,
            REFLECTION_LLM_MODEL="scripted-1",
            REFLECTION_LLM_BACKOFF_BASE_SECONDS="0.01",
            REFLECTION_LLM_BACKOFF_MAX_SECONDS="0.05",
            REFLECTION_LOCK_WAIT_SECONDS="1",
            REFLECTION_LOCK_EXPIRE_SECONDS="4",
            REFLECTION_COALESCE_WINDOW_SECONDS="0",  # unless a test coalesces (SPEC §14)
            PYTHONUNBUFFERED="1",
        )
        env.update(overrides)
        return env

    return make


@pytest.fixture
def worker(
    worker_env: Callable[..., dict[str, str]], pg_engine: Engine, tmp_path: Path
) -> Iterator[Worker]:
    with (
        ScriptedLlmServer({"rules": []}, require_key=API_KEY) as llm,
        running_worker(worker_env(llm.base_url), llm, pg_engine, tmp_path) as w,
    ):
        yield w
    assert "sk-e2e-worker-key" not in w.log.read_text(), "the API key reached the worker log"


@contextmanager
def running_worker(
    env: dict[str, str], llm: ScriptedLlmServer, engine: Engine, tmp_path: Path, *args: str
) -> Iterator[Worker]:
    """A worker started with `env` and `args` (logging to tmp_path/worker.log), and a
    producer on its broker; both stopped at the end."""
    log = tmp_path / "worker.log"
    proc = start_worker(env, log, *args)
    producer = make_producer(env["REFLECTION_BROKER_URL"])
    try:
        yield Worker(proc, log, llm, producer, engine, tmp_path / "users")
    finally:
        stop_worker(proc)
        producer.close()


BURST_JOBS = {f"burst-{i:02d}": f"user{i % 6}" for i in range(24)}


def burst_through_outage(
    worker_env: Callable[..., dict[str, str]],
    make_job: Any,
    pg_engine: Engine,
    tmp_path: Path,
    outage: Callable[[], None],
    worker_args: tuple[str, ...] = ("--concurrency", "4"),
    recover_within: float = 150,
    **env_overrides: str,
) -> None:
    """Publish 24 jobs of 6 users (the LLM answering in 1 s), call `outage` once six of
    them are done, and check that every job then ends applied exactly once, by the same
    worker process, within `recover_within` seconds of the outage's end."""
    for job, user in BURST_JOBS.items():
        make_job(job, user_id=user)
    with ScriptedLlmServer(script_for(list(BURST_JOBS), delay=1.0), require_key=API_KEY) as llm:
        env = worker_env(llm.base_url, **env_overrides)
        log = tmp_path / "worker.log"
        proc = start_worker(env, log, *worker_args)
        producer = make_producer(env["REFLECTION_BROKER_URL"])
        w = Worker(proc, log, llm, producer, pg_engine, tmp_path / "users")
        try:
            for job, user in BURST_JOBS.items():
                publish_reflect(
                    producer,
                    original_job_id=job,
                    user_id=user,
                    piece_name="default",
                    outcome="succeeded",
                )
            deadline = time.monotonic() + 60
            while len(w.rows()) < 6:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.1)
            outage()
            w.wait_rows(len(BURST_JOBS), timeout=recover_within)
            time.sleep(1)
            check_exactly_once(w, BURST_JOBS)
            assert w.proc.poll() is None, "the worker died"
        finally:
            stop_worker(w.proc)
            producer.close()
