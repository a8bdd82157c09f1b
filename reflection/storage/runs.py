"""The worker's queries: the job it reflects on, its claim (lease and fencing token), and
the rows a run commits (metrics, piece edit, proposal) in one transaction."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, Engine, bindparam, func, select, update
from sqlalchemy.dialects import postgresql

from reflection.models import Job
from reflection.records import BatchFollower, EntryChanges, MetricsRow, PieceEditRow, ProposalRow
from reflection.storage.batches import commit_followers
from reflection.storage.db import (
    as_utc,
    driver_errors,
    insert_ignoring,
    insert_over_failed,
    insert_row,
    single_statement,
    utcnow,
)
from reflection.storage.entries import write_entries
from reflection.storage.tables import (
    jobs,
    piece_edits,
    piece_proposals,
    reflection_claims,
    reflection_metrics,
)

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
            state="done",
            decision=None,
            batch=None,
            outcome=bindparam("outcome_"),
            updated_at=bindparam("now"),
        )
    )


_MARK_DONE = _mark_done(*_FENCED)  # a run commits with its own fence
_MARK_DONE_UNFENCED = _mark_done()  # the lock holder rolls a journal forward


def fetch_job(*, engine: Engine, job_id: str) -> Job | None:
    """The platform's job row, or None."""
    with single_statement(engine) as conn:
        row = conn.execute(_FETCH_JOB, {"job_id": job_id}).mappings().first()
    return Job.model_validate(dict(row)) if row else None


def last_piece_edit_at(*, engine: Engine, user_id: str, piece_name: str) -> datetime | None:
    """When this user's piece was last edited by a reflection (the cooldown reads this)."""
    with single_statement(engine) as conn:
        params = {"user_id": user_id, "piece_name": piece_name}
        return as_utc(conn.execute(_LAST_PIECE_EDIT, params).scalar())


@dataclass(frozen=True)
class Claim:
    """The result of claiming an original job for one reflection run."""

    status: Literal["claimed", "done", "busy"]
    fence: int = 0
    deliveries: int = 0
    decision: dict[str, Any] | None = None


@functools.cache
def _fresh_claim(dialect_name: str) -> Any:
    return insert_ignoring(dialect_name, reflection_claims, "original_job_id").returning(
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
    now = utcnow()
    lease = now + timedelta(seconds=lease_seconds)
    c = reflection_claims.c
    # The common case, a job never claimed, is one statement; any other goes through the
    # locked read below.
    with single_statement(engine) as conn:
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
    with driver_errors(), engine.begin() as conn:
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
        expired = (as_utc(row["lease_expires_at"]) or now) <= now
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
    with single_statement(engine) as conn:
        return conn.execute(_CLAIM_STATE, {"job_id": original_job_id}).scalar_one_or_none()


def claim_state_and_last_edit(
    *, engine: Engine, original_job_id: str, user_id: str, piece_name: str
) -> tuple[str | None, datetime | None]:
    """`claim_state` and `last_piece_edit_at` in one round trip (a run under its lock
    asks both, back to back)."""
    params = {"job_id": original_job_id, "user_id": user_id, "piece_name": piece_name}
    with single_statement(engine) as conn:
        state, last_edit = conn.execute(_CLAIM_STATE_AND_LAST_EDIT, params).one()
    return state, as_utc(last_edit)


def store_decision(
    *, engine: Engine, original_job_id: str, fence: int, decision: dict[str, Any]
) -> bool:
    """Keep the LLM's decision on the claim, so a retry or redelivery reuses it."""
    params = {
        "job_id": original_job_id,
        "claim_fence": fence,
        "new_decision": json.dumps(decision),
        "now": utcnow(),
    }
    with single_statement(engine) as conn:
        return bool(conn.execute(_STORE_DECISION, params).rowcount)


def _update_live_claim(engine: Engine, original_job_id: str, fence: int, **values: Any) -> None:
    """Update the claim of `original_job_id` if it is still running under `fence`."""
    c = reflection_claims.c
    with single_statement(engine) as conn:
        conn.execute(
            update(reflection_claims)
            .where(c.original_job_id == original_job_id, c.fence == fence, c.state == "running")
            .values(**values)
        )


def release_failed(*, engine: Engine, original_job_id: str, fence: int) -> None:
    """Mark a claim failed so a later publish for the job may try again."""
    # A clean failure is no crash: a later publish starts the poison count anew.
    _update_live_claim(
        engine,
        original_job_id,
        fence,
        state="failed",
        decision=None,
        outcome="failed",
        deliveries=0,
        updated_at=utcnow(),
    )


def release_lease(*, engine: Engine, original_job_id: str, reflection_job_id: str) -> None:
    """End our live claim's lease now, keeping its stored decision: the next delivery
    takes it over at once (and reuses the decision) instead of waiting for the lease.
    For a run that gives up without being retried (the CLI's `run`)."""
    c = reflection_claims.c
    with single_statement(engine) as conn:
        conn.execute(
            update(reflection_claims)
            .where(
                c.original_job_id == original_job_id,
                c.reflection_job_id == reflection_job_id,
                c.state == "running",
            )
            .values(lease_expires_at=utcnow(), updated_at=utcnow())
        )


def reset_deliveries(*, engine: Engine, original_job_id: str, fence: int) -> None:
    """A run that ended cleanly (to be retried) was no crash: restart the poison count."""
    _update_live_claim(engine, original_job_id, fence, deliveries=0)


def record_metrics(*, engine: Engine, row: MetricsRow) -> None:
    """Insert one `reflection_metrics` row; a second row for the same run is ignored."""
    with single_statement(engine) as conn:
        insert_row(conn, reflection_metrics, "reflection_job_id", row.model_dump(mode="json"))


def record_change(*, engine: Engine, row: MetricsRow, entries: EntryChanges | None) -> bool:
    """An operator's change (a revert): its metrics row and the entry records it touched,
    in one transaction; False (nothing written) when the row exists (a replay)."""
    with driver_errors(), engine.begin() as conn:
        if not insert_row(
            conn, reflection_metrics, "reflection_job_id", row.model_dump(mode="json")
        ):
            return False
        if entries is not None:
            write_entries(conn, entries)
        return True


@functools.cache
def _done_with_row(fenced: bool, columns: tuple[str, ...]) -> Any:
    """The claim marked done and the run's metrics row (`insert_over_failed`) in one
    statement: the row is inserted from the claim's update, so a stale run (no claim row
    updated) inserts nothing; the statement's value is the number of claims marked done
    (Postgres runs data-modifying CTEs whether or not the query reads them)."""
    done = (_MARK_DONE if fenced else _MARK_DONE_UNFENCED).returning(_c.original_job_id).cte("done")
    values = select(
        *(bindparam(f"m_{k}", type_=reflection_metrics.c[k].type) for k in columns)
    ).select_from(done)
    insert = postgresql.insert(reflection_metrics).from_select(list(columns), values)
    row = insert.on_conflict_do_update(
        index_elements=["reflection_job_id"],
        set_={c.name: insert.excluded[c.name] for c in reflection_metrics.c if not c.primary_key},
        where=reflection_metrics.c.outcome == "failed",
    ).cte("metrics_row")
    return select(func.count()).select_from(done).add_cte(row)


def commit_run(
    *,
    engine: Engine,
    original_job_id: str,
    fence: int | None,
    metrics: MetricsRow,
    piece_edit: PieceEditRow | None,
    proposal: ProposalRow | None = None,
    entries: EntryChanges | None = None,
    followers: Sequence[BatchFollower] = (),
) -> bool:
    """Mark the job reflected, record its piece edit (or staged proposal), metrics row and
    entry records, in one transaction.

    `fence` is the claim's fencing token: a stale writer (one whose claim was taken over)
    commits nothing and gets False. `fence=None` is the journal roll-forward by the current
    lock holder, which completes a run that reached its journal whoever started it.
    Returns False when the job was already marked done (nothing is written twice).
    `followers`: the other jobs of a coalesced batch, committed with it; a fenced one no
    longer held raises `StaleBatchError` and nothing is written.
    """
    params = {
        "job_id": original_job_id,
        "claim_fence": fence,
        "outcome_": metrics.outcome.value,
        "now": utcnow(),
    }
    row = metrics.model_dump(mode="json")
    with driver_errors(), engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # one round trip: the claim and the row
            stmt = _done_with_row(fence is not None, tuple(row))
            if not conn.execute(stmt, params | {f"m_{k}": v for k, v in row.items()}).scalar():
                return False
        else:
            if not conn.execute(
                _MARK_DONE if fence is not None else _MARK_DONE_UNFENCED, params
            ).rowcount:
                return False
            conn.execute(
                insert_over_failed(conn.dialect.name, reflection_metrics, "reflection_job_id"), row
            )
        commit_followers(conn, followers, fenced=fence is not None)  # or StaleBatchError
        if piece_edit is not None:
            record_piece_edit(conn, piece_edit)
        if proposal is not None:
            insert_row(conn, piece_proposals, "reflection_job_id", proposal.model_dump())
        if entries is not None:
            write_entries(conn, entries)
        return True


def record_piece_edit(conn: Connection, row: PieceEditRow) -> None:
    """Insert a `piece_edits` row (in the caller's transaction) unless it exists."""
    insert_row(conn, piece_edits, "reflection_job_id", row.model_dump(exclude_none=True))
