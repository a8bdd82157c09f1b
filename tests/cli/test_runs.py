"""`reflection run` (in-process, --dry-run), `enqueue` and `backfill`."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
import redis_lock
from sqlalchemy import select, update

from reflection import storage
from reflection.constants import USER_LOCK_PREFIX
from reflection.storage.db import as_utc, utcnow
from tests.cli.conftest import Cli
from tests.cli.helpers import row_counts, tree, tuned_piece
from tests.integration.conftest import decision
from tests.integration.test_pipeline import PYTEST_ENTRY, write_entry
from tests.support.db import EVIDENCE

pytestmark = pytest.mark.integration

BAD = {
    "op": "add",
    "evidence": EVIDENCE,
    "name": "Bad Name",
    "description": "d",
    "type": "user",
    "body": "b",
}


def test_run_applies_and_shows_the_decision(cli: Cli, make_job: Any) -> None:
    """`run` reflects in-process: reasoning, each decision with its code, coloured diffs,
    and a metrics row under a `cli-` reflection id."""
    make_job("job-r1")
    cli.env.script("job-r1", {"content": decision("the user wants pytest", [PYTEST_ENTRY, BAD])})
    result = cli("run", "job-r1")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "applied" in out and "the user wants pytest" in out
    assert "invalid_name" in out and "prefers-pytest" in out
    assert "+The user rejected a unittest suite" in out
    assert cli.env.user().memory_file("prefers-pytest").exists()
    [row] = cli.env.metrics()
    assert row["reflection_job_id"].startswith("cli-") and row["outcome"] == "applied"


def test_run_reflects_at_once_whatever_the_coalescing_window(cli: Cli, make_job: Any) -> None:
    """An operator's `run` waits for no burst: with the workers' window at 20 s it still
    reflects the job now, alone."""
    make_job("job-w1")
    cli.env.script("job-w1", {"content": decision("x", [PYTEST_ENTRY])})
    cli.set("coalesce_window_seconds", "20")
    report = cli.json("run", "job-w1")
    assert report["outcome"] == "applied"
    assert cli.env.llm_calls() == 1


def test_run_json_and_duplicate(cli: Cli, make_job: Any) -> None:
    """--json prints the run as JSON; a second run of the same job is a duplicate (exit 0)."""
    make_job("job-r2")
    cli.env.script("job-r2", {"content": decision("x", [PYTEST_ENTRY])})
    first = cli.json("run", "job-r2")
    assert first["outcome"] == "applied" and first["snapshot_id"]
    assert [d["path"] for d in first["diffs"]] == ["memory/prefers-pytest.md"]
    assert first["decisions"][0]["code"] == "ok"
    again = cli.json("run", "job-r2")
    assert again["outcome"] == "duplicate"
    assert cli.env.llm_calls() == 1


def test_dry_run_writes_nothing(cli: Cli, make_job: Any) -> None:
    """--dry-run asks the LLM and judges, but no file, row or claim changes."""
    write_entry(cli.env, "billing-db", body="Postgres 15.")
    make_job("job-d")
    update_ = {
        "op": "update",
        "evidence": EVIDENCE,
        "name": "billing-db",
        "description": "DB",
        "type": "project",
        "body": "Postgres 16.",
    }
    cli.env.script("job-d", {"content": decision("dry", [PYTEST_ENTRY, update_], tuned_piece())})
    before_files, before_rows = tree(cli.env.root), row_counts(cli.env.engine)
    report = cli.json("run", "job-d", "--dry-run")
    assert tree(cli.env.root) == before_files
    assert row_counts(cli.env.engine) == before_rows
    assert report["dry_run"] and report["outcome"] == "applied"
    paths = [d["path"] for d in report["diffs"]]
    assert paths == [
        "memory/prefers-pytest.md",
        "memory/billing-db.md",
        "memory/MEMORY.md",
        "pieces/default.yaml",
    ]
    assert "+Postgres 16." in report["diffs"][1]["diff"]
    assert "(tuned)" in report["diffs"][3]["diff"]
    table = cli("run", "job-d", "--dry-run")
    assert table.exit_code == 0 and "piece_edit" not in table.stderr
    assert tree(cli.env.root) == before_files and row_counts(cli.env.engine) == before_rows


def test_run_failure_exits_1_with_the_code(cli: Cli, make_job: Any) -> None:
    """A run that fails (here: unknown piece) prints its error code and exits 1."""
    make_job("job-f", piece_name="no-such-piece")
    result = cli("run", "job-f", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["outcome"] == "failed" and report["error_code"] == "piece_not_found"


def test_run_unknown_or_unfinished_job(cli: Cli, make_job: Any) -> None:
    """An unknown job (exit 4, as every unknown id), or one still running (exit 1), is
    refused in one line."""
    make_job("job-live", status="running")
    missing = cli("run", "job-none")
    assert missing.exit_code == 4 and "not in the jobs table" in missing.stderr
    live = cli("run", "job-live")
    assert live.exit_code == 1 and "not finished" in live.stderr


def _queued(broker: redis.Redis) -> list[dict[str, Any]]:
    import base64

    msgs = [json.loads(m) for m in broker.lrange("reflection", 0, -1)]
    return [json.loads(base64.b64decode(m["body"]))[1] for m in msgs]


def test_enqueue_publishes_unless_reflected(cli: Cli, make_job: Any, broker: redis.Redis) -> None:
    """enqueue publishes `reflect` with the job's kwargs; a reflected job is skipped."""
    make_job("job-e1", status="failed")
    result = cli.json("enqueue", "job-e1")
    assert result["published"] and result["task_id"]
    assert _queued(broker) == [
        {
            "original_job_id": "job-e1",
            "user_id": "alice",
            "piece_name": "default",
            "outcome": "failed",
        }
    ]
    cli.env.run("job-e1", outcome="failed")  # now reflected (abstained)
    again = cli("enqueue", "job-e1")
    assert again.exit_code == 0 and "already reflected" in again.stdout
    assert len(_queued(broker)) == 1


def test_backfill_publishes_only_jobs_without_reflection(
    cli: Cli, make_job: Any, broker: redis.Redis
) -> None:
    """backfill publishes finished jobs with no done claim, honours --user and --since,
    and a rerun after the worker caught up publishes nothing."""
    make_job("job-b1")
    make_job("job-b2", status="aborted")
    make_job("job-b3")
    make_job("job-live", status="running")
    make_job("job-bob", user_id="bob")
    cli.env.run("job-b3")  # already reflected
    with cli.env.engine.begin() as conn:
        conn.execute(
            update(storage.jobs)
            .where(storage.jobs.c.id == "job-b1")
            .values(finished_at="2020-01-01T00:00:00+00:00")
        )
    report = cli.json("backfill", "--user", "alice", "--rate", "100/s")
    assert sorted(report["published"]) == ["job-b1", "job-b2"]
    assert sorted(m["original_job_id"] for m in _queued(broker)) == ["job-b1", "job-b2"]
    recent = cli.json("backfill", "--user", "alice", "--since", "2021-01-01", "--dry-run")
    assert recent["published"] == ["job-b2"] and recent["dry_run"]
    for job in ("job-b1", "job-b2"):
        cli.env.run(job, outcome="aborted" if job == "job-b2" else "succeeded")
    broker.delete("reflection")
    table = cli("backfill", "--user", "alice")
    assert table.exit_code == 0 and "published 0 of 0" in table.stdout
    assert _queued(broker) == []


def test_backfill_rejects_a_bad_rate(cli: Cli) -> None:
    """--rate must be a positive number of tasks per second (exit 2)."""
    result = cli("backfill", "--rate", "fast")
    assert result.exit_code == 2 and "--rate" in result.stderr


def test_run_hitting_a_busy_lock_hands_the_claim_back(
    cli: Cli, make_job: Any, redis_client: redis.Redis
) -> None:
    """A CLI run that cannot get the user lock exits 1 and ends its claim's lease at once,
    keeping the LLM's decision: the next run goes ahead without waiting for the lease and
    without a second LLM call."""
    make_job("job-busy")
    cli.env.script("job-busy", {"content": decision("x", [PYTEST_ENTRY])})
    holder = redis_lock.Lock(redis_client, USER_LOCK_PREFIX + "alice", expire=30)
    assert holder.acquire(blocking=False)
    try:
        busy = cli("run", "job-busy")
    finally:
        holder.release()
    assert busy.exit_code == 1 and "locked by another worker" in busy.stderr
    with cli.env.engine.connect() as conn:
        claim = (
            conn.execute(
                select(storage.reflection_claims).where(
                    storage.reflection_claims.c.original_job_id == "job-busy"
                )
            )
            .mappings()
            .one()
        )
    assert claim["state"] == "running" and claim["decision"]
    assert as_utc(claim["lease_expires_at"]) <= utcnow()  # type: ignore[operator]
    again = cli.json("run", "job-busy")
    assert again["outcome"] == "applied"
    assert cli.env.llm_calls() == 1
