"""Claims, fencing and rows on the real Postgres."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, func, select, update

from reflection import storage
from reflection.models import Outcome
from reflection.records import MetricsRow, PieceEditRow
from reflection.storage import piece_edits, reflection_claims, reflection_metrics

pytestmark = pytest.mark.integration


def _metrics(rid: str, outcome: str = "applied") -> MetricsRow:
    return MetricsRow(
        reflection_job_id=rid,
        original_job_id="j1",
        user_id="alice",
        piece_name="default",
        outcome=Outcome(outcome),
    )


def _count(engine: Engine, table: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_migrations_match_the_models(pg_engine: Engine) -> None:
    """`alembic upgrade head` creates exactly the tables storage.py describes."""
    with pg_engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={"include_name": lambda n, t, _: t != "table" or n in storage.metadata.tables},
        )
        diff = compare_metadata(ctx, storage.metadata)
    assert diff == []


def test_claim_lifecycle(pg_engine: Engine) -> None:
    """Fresh → claimed; same task → resumed; another task → busy; done → done."""
    kw = {"engine": pg_engine, "original_job_id": "j1", "user_id": "alice", "lease_seconds": 60}
    first = storage.claim_job(reflection_job_id="r1", **kw)  # type: ignore[arg-type]
    assert (first.status, first.fence, first.deliveries) == ("claimed", 1, 1)
    again = storage.claim_job(reflection_job_id="r1", **kw)  # type: ignore[arg-type]
    assert (again.status, again.fence, again.deliveries) == ("claimed", 1, 2)
    assert storage.claim_job(reflection_job_id="r2", **kw).status == "busy"  # type: ignore[arg-type]
    assert storage.commit_run(
        engine=pg_engine, original_job_id="j1", fence=1, metrics=_metrics("r1"), piece_edit=None
    )
    assert storage.claim_job(reflection_job_id="r3", **kw).status == "done"  # type: ignore[arg-type]


def test_expired_lease_is_taken_over_with_a_new_fence(pg_engine: Engine) -> None:
    """A crashed run's claim is taken over; the stale holder then cannot commit."""
    kw = {"engine": pg_engine, "original_job_id": "j1", "user_id": "alice"}
    storage.claim_job(reflection_job_id="r1", lease_seconds=60, **kw)  # type: ignore[arg-type]
    with pg_engine.begin() as conn:
        conn.execute(
            update(reflection_claims).values(lease_expires_at=datetime(2000, 1, 1, tzinfo=UTC))
        )
    taken = storage.claim_job(reflection_job_id="r2", lease_seconds=60, **kw)  # type: ignore[arg-type]
    assert (taken.status, taken.fence) == ("claimed", 2)
    stale = storage.commit_run(
        engine=pg_engine, original_job_id="j1", fence=1, metrics=_metrics("r1"), piece_edit=None
    )
    assert stale is False
    assert _count(pg_engine, reflection_metrics) == 0


def test_decision_is_kept_for_a_retry(pg_engine: Engine) -> None:
    """A stored decision comes back on the next claim of the same run."""
    kw = {"engine": pg_engine, "original_job_id": "j1", "user_id": "alice", "lease_seconds": 60}
    storage.claim_job(reflection_job_id="r1", **kw)  # type: ignore[arg-type]
    assert storage.store_decision(
        engine=pg_engine, original_job_id="j1", fence=1, decision={"a": 1}
    )
    assert storage.claim_job(reflection_job_id="r1", **kw).decision == {"a": 1}  # type: ignore[arg-type]


def test_failed_claim_may_be_tried_again(pg_engine: Engine) -> None:
    """A failed run releases the job so a later publish can reflect it."""
    kw = {"engine": pg_engine, "original_job_id": "j1", "user_id": "alice", "lease_seconds": 60}
    storage.claim_job(reflection_job_id="r1", **kw)  # type: ignore[arg-type]
    storage.release_failed(engine=pg_engine, original_job_id="j1", fence=1)
    again = storage.claim_job(reflection_job_id="r2", **kw)  # type: ignore[arg-type]
    assert (again.status, again.fence) == ("claimed", 2)


def test_commit_writes_rows_once(pg_engine: Engine) -> None:
    """Metrics and piece_edits rows are written once, however often commit is called."""
    storage.claim_job(
        engine=pg_engine,
        original_job_id="j1",
        reflection_job_id="r1",
        user_id="alice",
        lease_seconds=60,
    )
    edit = PieceEditRow(
        user_id="alice",
        piece_name="default",
        reflection_job_id="r1",
        original_job_id="j1",
        before_sha256="a",
        after_sha256="b",
    )
    args = {
        "engine": pg_engine,
        "original_job_id": "j1",
        "metrics": _metrics("r1"),
        "piece_edit": edit,
    }
    assert storage.commit_run(fence=1, **args) is True  # type: ignore[arg-type]
    assert storage.commit_run(fence=None, **args) is False  # type: ignore[arg-type]
    assert _count(pg_engine, reflection_metrics) == 1
    assert _count(pg_engine, piece_edits) == 1
    last = storage.last_piece_edit_at(engine=pg_engine, user_id="alice", piece_name="default")
    assert last is not None and last.tzinfo is not None
    both = {"engine": pg_engine, "user_id": "alice", "piece_name": "default"}
    assert storage.claim_state_and_last_edit(original_job_id="j1", **both) == ("done", last)  # type: ignore[arg-type]
    assert storage.claim_state_and_last_edit(original_job_id="j2", **both) == (None, last)  # type: ignore[arg-type]
    other = both | {"piece_name": "bug-triage"}
    assert storage.claim_state_and_last_edit(original_job_id="j1", **other) == ("done", None)  # type: ignore[arg-type]


def test_record_metrics_ignores_a_second_row_for_one_run(pg_engine: Engine) -> None:
    """One row per reflection job id, even if recording is repeated."""
    storage.record_metrics(engine=pg_engine, row=_metrics("r9", "failed"))
    storage.record_metrics(engine=pg_engine, row=_metrics("r9", "failed"))
    assert _count(pg_engine, reflection_metrics) == 1


def test_fetch_job(pg_engine: Engine, make_job: object) -> None:
    """The platform's job row comes back as a Job; an unknown id is None."""
    make_job("job-1", user_id="bob", piece_name="bug-triage")  # type: ignore[operator]
    job = storage.fetch_job(engine=pg_engine, job_id="job-1")
    assert job is not None and job.user_id == "bob" and job.piece_name == "bug-triage"
    assert storage.fetch_job(engine=pg_engine, job_id="nope") is None
