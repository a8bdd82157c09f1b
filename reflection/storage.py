"""Postgres (or, for the embedded demo, SQLite) access: table definitions and queries.

The platform owns `jobs`; the worker only reads it (its DDL ships in `sql/jobs.sql` for
tests, the demo and compose). The worker owns `reflection_metrics`, `piece_edits` and
`reflection_claims`, created by the alembic migrations in `migrations/`.

Every function takes the engine keyword-only and runs one short transaction, so a
connection is never held across the LLM call.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    bindparam,
    create_engine,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from reflection.errors import InfrastructureError
from reflection.idleping import ping_idle_connections
from reflection.models import Job
from reflection.records import MetricsRow, PieceEditRow, Proposal, ProposalRow, ProposalSummary

platform_metadata = MetaData()
metadata = MetaData()

_Id = BigInteger().with_variant(Integer(), "sqlite")
_TS = DateTime(timezone=True)

jobs = Table(
    "jobs",
    platform_metadata,
    Column("id", Text, primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("piece_name", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("task", Text, nullable=False),
    Column("result", Text),
    Column("error", Text),
    Column("created_at", _TS, nullable=False, server_default=func.now()),
    Column("finished_at", _TS),
)

reflection_metrics = Table(
    "reflection_metrics",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("reflection_job_id", Text, nullable=False, unique=True),
    Column("original_job_id", Text, nullable=False, index=True),
    Column("user_id", Text, nullable=False, index=True),
    Column("piece_name", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("error_code", Text),
    Column("memory_changes", Integer, nullable=False, server_default="0"),
    Column("piece_edited", Boolean, nullable=False, server_default="false"),
    Column("rejections", Integer, nullable=False, server_default="0"),
    Column("tokens_in", Integer, nullable=False, server_default="0"),
    Column("tokens_out", Integer, nullable=False, server_default="0"),
    Column("llm_attempts", Integer, nullable=False, server_default="0"),
    Column("duration_ms", Integer, nullable=False, server_default="0"),
    Column("model", Text),
    Column("snapshot_id", Text),
    Column("created_at", _TS, nullable=False, server_default=func.now(), index=True),
)

piece_edits = Table(
    "piece_edits",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("user_id", Text, nullable=False),
    Column("piece_name", Text, nullable=False),
    Column("reflection_job_id", Text, nullable=False, unique=True),
    Column("original_job_id", Text, nullable=False),
    Column("before_sha256", Text, nullable=False),
    Column("after_sha256", Text, nullable=False),
    Column("created_at", _TS, nullable=False, server_default=func.now()),
    Index("ix_piece_edits_user_piece_time", "user_id", "piece_name", "created_at"),
)

reflection_claims = Table(
    "reflection_claims",
    metadata,
    Column("original_job_id", Text, primary_key=True),
    Column("reflection_job_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("state", Text, nullable=False),  # running | done | failed
    Column("fence", Integer, nullable=False, server_default="1"),
    Column("deliveries", Integer, nullable=False, server_default="1"),
    Column("lease_expires_at", _TS, nullable=False),
    Column("decision", Text),  # the LLM's validated decision, kept until the run commits
    Column("outcome", Text),
    Column("updated_at", _TS, nullable=False, server_default=func.now()),
)

piece_proposals = Table(
    "piece_proposals",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("user_id", Text, nullable=False),
    Column("piece_name", Text, nullable=False),
    Column("reflection_job_id", Text, nullable=False, unique=True),
    Column("original_job_id", Text, nullable=False),
    Column("snapshot_id", Text),
    Column("summary", Text, nullable=False, server_default=""),
    Column("yaml", Text, nullable=False),  # the whole proposed piece
    Column("before_sha256", Text, nullable=False),  # the piece it was judged against
    Column("after_sha256", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),  # pending|approved|rejected
    Column("detail", Text),  # why it was approved/rejected, or the last refusal
    Column("created_at", _TS, nullable=False, server_default=func.now()),
    Column("decided_at", _TS),
    Index("ix_piece_proposals_status_user", "status", "user_id"),
)


STATEMENT_TIMEOUT_MS = 30_000
PING_AFTER_IDLE_SECONDS = 5.0  # a pooled connection unused this long is pinged first


def make_engine(url: str) -> Engine:
    """An engine with a small pool that survives server restarts (a connection idle for
    a while is pinged before use; see `idleping`)."""
    if url.startswith("sqlite"):
        return create_engine(url, connect_args={"timeout": 30})
    # No statement waits forever (a row lock held by a stalled peer, a hung server): the
    # run fails over to a retry instead of holding its worker slot.
    engine = create_engine(
        url,
        pool_size=5,
        max_overflow=5,
        pool_recycle=1800,
        connect_args={"options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"},
    )
    ping_idle_connections(engine, after_seconds=PING_AFTER_IDLE_SECONDS)
    return engine


@functools.cache
def _insert_ignoring(dialect_name: str, table: Table, key: str) -> Any:
    """INSERT ... ON CONFLICT (key) DO NOTHING for the dialect; executed with the row as
    parameters, so one statement serves every run (building and hashing a statement
    costs about as much as running it on loopback)."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=[key])


@functools.cache
def _insert_over_failed(dialect_name: str) -> Any:
    """A run's metrics row, replacing a `failed` row of the same run: the task recorded
    a failure (a soft time limit, a bug) after the run had written its journal, and the
    journal was completed later. Any other row stays (a replay writes nothing)."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    stmt = dialect.insert(reflection_metrics)
    return stmt.on_conflict_do_update(
        index_elements=["reflection_job_id"],
        set_={c.name: stmt.excluded[c.name] for c in reflection_metrics.c if not c.primary_key},
        where=reflection_metrics.c.outcome == "failed",
    )


def insert_row(conn: Connection, table: Table, key: str, row: dict[str, Any]) -> None:
    """Insert `row` unless a row with the same `key` exists (a replay writes nothing)."""
    conn.execute(_insert_ignoring(conn.dialect.name, table, key), row)


_c = reflection_claims.c
_FETCH_JOB = select(jobs).where(jobs.c.id == bindparam("job_id"))
_LAST_PIECE_EDIT = select(func.max(piece_edits.c.created_at)).where(
    piece_edits.c.user_id == bindparam("user_id"),
    piece_edits.c.piece_name == bindparam("piece_name"),
)
_CLAIM_STATE = select(_c.state).where(_c.original_job_id == bindparam("job_id"))
_CLAIM_STATE_AND_LAST_EDIT = select(
    _CLAIM_STATE.scalar_subquery(), _LAST_PIECE_EDIT.scalar_subquery()
)
_FENCED = (_c.fence == bindparam("claim_fence"), _c.state == "running")  # a live claim of ours
_STORE_DECISION = (
    update(reflection_claims)
    .where(_c.original_job_id == bindparam("job_id"), *_FENCED)
    .values(decision=bindparam("new_decision"), updated_at=bindparam("now"))
)


def _mark_done(*fenced: Any) -> Any:
    return (
        update(reflection_claims)
        .where(_c.original_job_id == bindparam("job_id"), _c.state != "done", *fenced)
        .values(
            state="done", decision=None, outcome=bindparam("outcome_"), updated_at=bindparam("now")
        )
    )


_MARK_DONE = _mark_done(*_FENCED)  # a run commits with its own fence
_MARK_DONE_UNFENCED = _mark_done()  # the lock holder rolls a journal forward


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(ts: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return ts.replace(tzinfo=UTC) if ts is not None and ts.tzinfo is None else ts


class _db:
    """Wrap driver errors as retryable infrastructure failures."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: Any) -> None:
        if isinstance(e, SQLAlchemyError):
            raise InfrastructureError(f"database error: {type(e).__name__}: {e}") from e


@contextmanager
def _single(engine: Engine) -> Iterator[Connection]:
    """A connection for one statement in autocommit: it is its own transaction, without
    the BEGIN and COMMIT round trips around it (a run makes several)."""
    with _db(), engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


def fetch_job(*, engine: Engine, job_id: str) -> Job | None:
    """The platform's job row, or None."""
    with _single(engine) as conn:
        row = conn.execute(_FETCH_JOB, {"job_id": job_id}).mappings().first()
    return Job.model_validate(dict(row)) if row else None


def last_piece_edit_at(*, engine: Engine, user_id: str, piece_name: str) -> datetime | None:
    """When this user's piece was last edited by a reflection (the cooldown reads this)."""
    with _single(engine) as conn:
        params = {"user_id": user_id, "piece_name": piece_name}
        return _aware(conn.execute(_LAST_PIECE_EDIT, params).scalar())


@dataclass(frozen=True)
class Claim:
    """The result of claiming an original job for one reflection run."""

    status: Literal["claimed", "done", "busy"]
    fence: int = 0
    deliveries: int = 0
    decision: dict[str, Any] | None = None


@functools.cache
def _fresh_claim(dialect_name: str) -> Any:
    return _insert_ignoring(dialect_name, reflection_claims, "original_job_id").returning(
        reflection_claims.c.fence
    )


def claim_job(
    *,
    engine: Engine,
    original_job_id: str,
    reflection_job_id: str,
    user_id: str,
    lease_seconds: int,
) -> Claim:
    """Claim `original_job_id` so one reflection runs for it, exactly once in effect.

    A job already reflected is `done`. A live claim by another delivery is `busy`. A claim
    whose lease expired (its worker died) or that failed is taken over with a new fence;
    our own claim (a retry or redelivery of the same task) is resumed. The stored LLM
    decision, if any, comes back so the run does not call the LLM again.
    """
    now = _now()
    lease = now + timedelta(seconds=lease_seconds)
    c = reflection_claims.c
    # The common case, a job never claimed, is one statement; any other goes through the
    # locked read below.
    with _single(engine) as conn:
        fresh = conn.execute(
            _fresh_claim(conn.dialect.name),
            {
                "original_job_id": original_job_id,
                "reflection_job_id": reflection_job_id,
                "user_id": user_id,
                "state": "running",
                "fence": 1,
                "deliveries": 1,
                "lease_expires_at": lease,
            },
        ).first()
    if fresh is not None:
        return Claim("claimed", fence=1, deliveries=1)
    with _db(), engine.begin() as conn:
        row = (
            conn.execute(
                select(reflection_claims)
                .where(c.original_job_id == original_job_id)
                .with_for_update()
            )
            .mappings()
            .one()
        )
        if row["state"] == "done":
            return Claim("done", row["fence"], row["deliveries"])
        mine = row["reflection_job_id"] == reflection_job_id
        expired = (_aware(row["lease_expires_at"]) or now) <= now
        if row["state"] == "running" and not mine and not expired:
            return Claim("busy", row["fence"], row["deliveries"])
        fence = row["fence"] if mine and row["state"] == "running" else row["fence"] + 1
        conn.execute(
            update(reflection_claims)
            .where(c.original_job_id == original_job_id)
            .values(
                reflection_job_id=reflection_job_id,
                state="running",
                fence=fence,
                deliveries=c.deliveries + 1,
                lease_expires_at=lease,
                updated_at=now,
            )
        )
        decision = json.loads(row["decision"]) if row["decision"] else None
        return Claim("claimed", fence, row["deliveries"] + 1, decision)


def claim_state(*, engine: Engine, original_job_id: str) -> str | None:
    """The claim's state (`running`, `done`, `failed`) or None when never claimed."""
    with _single(engine) as conn:
        return conn.execute(_CLAIM_STATE, {"job_id": original_job_id}).scalar_one_or_none()


def claim_state_and_last_edit(
    *, engine: Engine, original_job_id: str, user_id: str, piece_name: str
) -> tuple[str | None, datetime | None]:
    """`claim_state` and `last_piece_edit_at` in one round trip (a run under its lock
    asks both, back to back)."""
    params = {"job_id": original_job_id, "user_id": user_id, "piece_name": piece_name}
    with _single(engine) as conn:
        state, last_edit = conn.execute(_CLAIM_STATE_AND_LAST_EDIT, params).one()
    return state, _aware(last_edit)


def store_decision(
    *, engine: Engine, original_job_id: str, fence: int, decision: dict[str, Any]
) -> bool:
    """Keep the LLM's decision on the claim, so a retry or redelivery reuses it."""
    params = {
        "job_id": original_job_id,
        "claim_fence": fence,
        "new_decision": json.dumps(decision),
        "now": _now(),
    }
    with _single(engine) as conn:
        return bool(conn.execute(_STORE_DECISION, params).rowcount)


def release_failed(*, engine: Engine, original_job_id: str, fence: int) -> None:
    """Mark a claim failed so a later publish for the job may try again."""
    c = reflection_claims.c
    with _single(engine) as conn:
        conn.execute(
            update(reflection_claims)
            .where(c.original_job_id == original_job_id, c.fence == fence, c.state == "running")
            # A clean failure is no crash: a later publish starts the poison count anew.
            .values(
                state="failed", decision=None, outcome="failed", deliveries=0, updated_at=_now()
            )
        )


def release_lease(*, engine: Engine, original_job_id: str, reflection_job_id: str) -> None:
    """End our live claim's lease now, keeping its stored decision: the next delivery
    takes it over at once (and reuses the decision) instead of waiting for the lease.
    For a run that gives up without being retried (the CLI's `run`)."""
    c = reflection_claims.c
    with _single(engine) as conn:
        conn.execute(
            update(reflection_claims)
            .where(
                c.original_job_id == original_job_id,
                c.reflection_job_id == reflection_job_id,
                c.state == "running",
            )
            .values(lease_expires_at=_now(), updated_at=_now())
        )


def reset_deliveries(*, engine: Engine, original_job_id: str, fence: int) -> None:
    """A run that ended cleanly (to be retried) was no crash: restart the poison count."""
    c = reflection_claims.c
    with _single(engine) as conn:
        conn.execute(
            update(reflection_claims)
            .where(c.original_job_id == original_job_id, c.fence == fence, c.state == "running")
            .values(deliveries=0)
        )


def record_metrics(*, engine: Engine, row: MetricsRow) -> None:
    """Insert one `reflection_metrics` row; a second row for the same run is ignored."""
    with _single(engine) as conn:
        insert_row(conn, reflection_metrics, "reflection_job_id", row.model_dump(mode="json"))


def commit_run(
    *,
    engine: Engine,
    original_job_id: str,
    fence: int | None,
    metrics: MetricsRow,
    piece_edit: PieceEditRow | None,
    proposal: ProposalRow | None = None,
) -> bool:
    """Mark the job reflected, record its piece edit (or staged proposal) and metrics row,
    in one transaction.

    `fence` is the claim's fencing token: a stale writer (one whose claim was taken over)
    commits nothing and gets False. `fence=None` is the journal roll-forward by the current
    lock holder, which completes a run that reached its journal whoever started it.
    Returns False when the job was already marked done (nothing is written twice).
    """
    params = {
        "job_id": original_job_id,
        "claim_fence": fence,
        "outcome_": metrics.outcome.value,
        "now": _now(),
    }
    with _db(), engine.begin() as conn:
        if not conn.execute(
            _MARK_DONE if fence is not None else _MARK_DONE_UNFENCED, params
        ).rowcount:
            return False
        if piece_edit is not None:
            record_piece_edit(conn, piece_edit)
        if proposal is not None:
            insert_row(conn, piece_proposals, "reflection_job_id", proposal.model_dump())
        conn.execute(_insert_over_failed(conn.dialect.name), metrics.model_dump(mode="json"))
        return True


def record_piece_edit(conn: Connection, row: PieceEditRow) -> None:
    """Insert a `piece_edits` row (in the caller's transaction) unless it exists."""
    insert_row(conn, piece_edits, "reflection_job_id", row.model_dump(exclude_none=True))


# Piece proposals (review mode).

_p = piece_proposals.c


def list_proposals(
    *, engine: Engine, status: str | None = "pending", user_id: str | None = None
) -> list[ProposalSummary]:
    """Proposals (newest first), without their YAML."""
    q = select(*(col for col in piece_proposals.c if col.name != "yaml")).order_by(_p.id.desc())
    if status is not None:
        q = q.where(_p.status == status)
    if user_id is not None:
        q = q.where(_p.user_id == user_id)
    with _single(engine) as conn:
        return [ProposalSummary.model_validate(dict(r)) for r in conn.execute(q).mappings()]


def get_proposal(*, engine: Engine, proposal_id: int) -> Proposal | None:
    """One proposal with its YAML, or None."""
    with _single(engine) as conn:
        row = conn.execute(select(piece_proposals).where(_p.id == proposal_id)).mappings().first()
    return None if row is None else Proposal.model_validate(dict(row))


def decide_proposal(
    *,
    engine: Engine,
    proposal_id: int,
    status: str,
    detail: str,
    now: datetime,
    piece_edit: PieceEditRow | None = None,
) -> bool:
    """Move a pending proposal to `status` (and record its piece edit) in one transaction;
    False when it was no longer pending."""
    with _db(), engine.begin() as conn:
        res = conn.execute(
            update(piece_proposals)
            .where(_p.id == proposal_id, _p.status == "pending")
            .values(status=status, detail=detail, decided_at=now)
        )
        if not res.rowcount:
            return False
        if piece_edit is not None:
            record_piece_edit(conn, piece_edit)
        return True


def note_proposal_refusal(*, engine: Engine, proposal_id: int, detail: str) -> None:
    """Keep why an approval was refused on the (still pending) proposal."""
    with _single(engine) as conn:
        conn.execute(update(piece_proposals).where(_p.id == proposal_id).values(detail=detail))
