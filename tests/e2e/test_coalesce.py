"""Coalescing bursts with real `celery worker` processes (SPEC §12, §14): a burst of one
user's jobs is reflected in one LLM call, each job keeping its own metrics row; and a
worker killed anywhere in a batch (REFLECTION_FAULT, the test-only app) leaves every
job reflected exactly once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from reflection.devtools.scripted_llm import ScriptedLlmServer
from reflection.paths import UserPaths
from reflection.producer import make_producer
from reflection.storage import reflection_claims
from tests.conftest import TEST_BROKER_URL
from tests.e2e.conftest import API_KEY, Worker, start_worker, stop_worker
from tests.support.db import EVIDENCE

pytestmark = pytest.mark.e2e
FAULT_APP = "tests.support.fault_app"
JOBS = ["job-c1", "job-c2", "job-c3"]
COALESCING = {
    "REFLECTION_COALESCE_WINDOW_SECONDS": "3",
    "REFLECTION_COALESCE_MAX_WAIT_SECONDS": "30",
    "REFLECTION_COALESCE_MAX_JOBS": "5",
}


# Each job's lesson in its own words (lessons alike would be judged near-duplicates),
# its evidence the job's request (every job here has the default task; SPEC §11).
LESSONS = {
    "job-c1": ("Invoices round half-up", "round_invoice() rounds half-up to whole cents."),
    "job-c2": ("CSV export streams its rows", "The export writes rows as it reads them."),
    "job-c3": ("Staging first for deploys", "Every deploy goes through staging first."),
}


def _change(job_id: str) -> dict[str, Any]:
    description, body = LESSONS[job_id]
    return {
        "op": "add",
        "name": f"lesson-{job_id}",
        "description": description,
        "type": "project",
        "body": body,
        "job_id": job_id,
        "evidence": EVIDENCE,
    }


def _decision(jobs: list[str]) -> dict[str, Any]:
    """One answer for the batch (or any job of it alone): a change per job; a change
    whose job is not this run's is left out by the judge only if it is a batch's."""
    return {"reasoning": "one lesson a job", "memory_changes": [_change(j) for j in jobs]}


def _script() -> dict[str, Any]:
    """A batch's answer has a change for each of the three jobs (those of jobs not in
    the batch, if a slow machine split the burst, are left out); a job reflected alone
    gets its own."""
    rules = [{"match": "One answer for ", "replies": [{"content": _decision(JOBS)}]}]
    rules += [{"match": f"job id: {j}\n", "replies": [{"content": _decision([j])}]} for j in JOBS]
    return {"rules": rules}


def _settled(w: Worker, rows: int, timeout: float = 90) -> list[dict[str, Any]]:
    """The rows, once `rows` exist, no journal is left and no claim is running."""
    w.wait_rows(rows, timeout=timeout)
    u = UserPaths(w.root, "alice")
    deadline = time.monotonic() + 45
    while True:
        with w.engine.connect() as conn:
            states = set(conn.execute(select(reflection_claims.c.state)).scalars())
        journals = list(u.journal_dir.glob("*")) if u.journal_dir.exists() else []
        if states == {"done"} and not journals:
            break
        assert time.monotonic() < deadline, f"not settled: claims {states}, {journals}"
        time.sleep(0.2)
    time.sleep(0.5)  # a doubled row would show up now
    return w.rows()


def _check_each_job_once(w: Worker, tasks: dict[str, str]) -> None:
    """Every job reflected exactly once: one row per task, every lesson written once,
    the snapshots' changes adding up to one per job, no temp file."""
    rows = w.rows()
    assert sorted(r["reflection_job_id"] for r in rows) == sorted(tasks.values())
    assert all(r["outcome"] in ("applied", "coalesced") for r in rows), rows
    by_job = {r["original_job_id"]: r for r in rows}
    assert set(by_job) == set(JOBS)
    leaders = {r["reflection_job_id"] for r in rows if r["outcome"] == "applied"}
    for r in rows:
        if r["outcome"] == "coalesced":
            assert r["coalesced_into"] in leaders and r["tokens_in"] == 0
    u = UserPaths(w.root, "alice")
    for j in JOBS:
        assert u.memory_file(f"lesson-{j}").read_text().count(LESSONS[j][1]) == 1
    lines = [json.loads(x) for x in u.snapshot_index.read_text().splitlines()]
    assert sum(line["memory_changes"] for line in lines) == len(JOBS)
    assert len(lines) == len(leaders)  # a snapshot per batch (one, unless a slow start split it)
    assert not [p for p in u.home.rglob("*.tmp")], "a temp file was left behind"


def _publish_burst(w: Worker) -> dict[str, str]:
    return {j: w.publish(j) for j in JOBS}


def test_a_burst_is_one_call_and_a_row_per_job(
    worker_env: Callable[..., dict[str, str]], pg_engine: Engine, make_job: Any, tmp_path: Path
) -> None:
    """Alice's three jobs are one call; Bob's job, of another user, is reflected alone."""
    for j in JOBS:
        make_job(j)
    make_job("job-other", user_id="bob")
    script = _script()
    script["rules"].append(
        {"match": "job id: job-other\n", "replies": [{"content": {"reasoning": "nothing"}}]}
    )
    with ScriptedLlmServer(script, require_key=API_KEY) as llm:
        env = worker_env(llm.base_url, **COALESCING)
        log = tmp_path / "worker.log"
        proc = start_worker(env, log, "--concurrency", "4")
        producer = make_producer(TEST_BROKER_URL)
        w = Worker(proc, log, llm, producer, pg_engine, tmp_path / "users")
        try:
            tasks = _publish_burst(w)
            bob = w.publish("job-other", user_id="bob")
            _settled(w, 4)
            assert w.llm_calls() == 2  # alice's three jobs in one call, bob's alone
            rows = w.rows()
            outcomes = {r["reflection_job_id"]: r["outcome"] for r in rows}
            assert outcomes.pop(bob) == "abstained"
            assert sorted(outcomes.values()) == ["applied", "coalesced", "coalesced"]
            w.rows = lambda: [r for r in rows if r["user_id"] == "alice"]  # type: ignore[method-assign]
            _check_each_job_once(w, tasks)
        finally:
            stop_worker(proc)
            producer.close()


@pytest.mark.parametrize(
    "point",
    [
        "before_llm",
        "after_llm",
        "after_journal",
        "between_writes",
        "after_files",
        "after_snapshot",
        "after_commit",
    ],
)
def test_sigkill_in_a_batch_reflects_every_job_once(
    point: str,
    worker_env: Callable[..., dict[str, str]],
    pg_engine: Engine,
    make_job: Any,
    tmp_path: Path,
) -> None:
    """The batch's leader is killed at `point`; once redelivered (or its followers
    taken back), every job of the burst is reflected exactly once."""
    for j in JOBS:
        make_job(j)
    marker = tmp_path / f"fault-{point}"
    with ScriptedLlmServer(_script(), require_key=API_KEY) as llm:
        env = worker_env(
            llm.base_url,
            REFLECTION_FAULT=f"{point}:kill:{marker}",
            REFLECTION_CLAIM_LEASE_SECONDS="20",
            **COALESCING,
        )
        log = tmp_path / "worker.log"
        proc = start_worker(env, log, "--concurrency", "3", app=FAULT_APP)
        producer = make_producer(TEST_BROKER_URL)
        w = Worker(proc, log, llm, producer, pg_engine, tmp_path / "users")
        try:
            tasks = _publish_burst(w)
            _settled(w, len(JOBS), timeout=120)
            assert marker.exists(), "the fault point was never reached"
            _check_each_job_once(w, tasks)
            # The LLM answered but its decision was not kept: asked again, once.
            assert w.llm_calls() == (2 if point == "after_llm" else 1)
        finally:
            stop_worker(proc)
            producer.close()
