"""The queries of coalesced batches (SPEC §12, §14): a leader takes its followers' claims
(under its own reflection job id, each with a fence), keeps the batch on its claim, and
commits every follower's claim and `coalesced` row in its run's one transaction.

A follower's claim held by a leader is an ordinary live claim: the follower's own run
sees it busy and waits; once its lease runs out (the leader died or gave up), the
follower takes it back and is reflected on its own. A leader never takes a job whose
claim holds a decision (that job's own run got as far as the LLM: it finishes alone).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, RowMapping, bindparam, select, tuple_, update

from reflection.coalesce import Member, dump_members, load_members
from reflection.records import BatchFollower
from reflection.storage.db import (
    as_utc,
    driver_errors,
    insert_over_failed,
    insert_row,
    single_statement,
    utcnow,
)
from reflection.storage.tables import reflection_claims, reflection_metrics

_c = reflection_claims.c
_m = reflection_metrics.c
_VIEW = select(
    select(_c.state)
    .where(_c.original_job_id == bindparam("job_id"))
    .scalar_subquery()
    .label("state"),
    select(_c.reflection_job_id)
    .where(_c.original_job_id == bindparam("job_id"))
    .scalar_subquery()
    .label("holder"),
    select(_c.lease_expires_at)
    .where(_c.original_job_id == bindparam("job_id"))
    .scalar_subquery()
    .label("lease"),
    select(_m.outcome)
    .where(_m.reflection_job_id == bindparam("rid"))
    .scalar_subquery()
    .label("mine"),
)


@dataclass(frozen=True)
class ClaimView:
    """A job's claim as a waiting run sees it, and the row of its own run, if any."""

    state: str | None  # running | done | failed | None (never claimed)
    holder: str | None  # the reflection job id holding it
    expired: bool
    my_outcome: str | None  # the outcome of this run's metrics row
    lease_left: float = 0.0  # seconds until the holder's lease runs out


def claim_view(*, engine: Engine, original_job_id: str, reflection_job_id: str) -> ClaimView:
    """One round trip: the job's claim and this run's metrics row."""
    with single_statement(engine) as conn:
        row = conn.execute(_VIEW, {"job_id": original_job_id, "rid": reflection_job_id}).one()
    lease, now = as_utc(row.lease), utcnow()
    left = (lease - now).total_seconds() if lease is not None else 0.0
    return ClaimView(row.state, row.holder, left <= 0, row.mine, max(left, 0.0))


def take(
    *,
    engine: Engine,
    leader: str,
    user_id: str,
    candidates: Sequence[Member],
    lease_seconds: int,
) -> list[Member]:
    """Claim each candidate's job for the leader's batch (in one transaction); the ones
    taken, each with the fence its claim is now held under.

    Taken: a job never claimed, one the leader holds already, or one whose claim failed
    or whose lease ran out without a decision stored. Not taken: a job reflected, one
    another run holds, one whose own run already has the LLM's decision."""
    now = utcnow()
    lease = now + timedelta(seconds=lease_seconds)
    taken = []
    with driver_errors(), engine.begin() as conn:
        for m in candidates:
            fence = _take_one(conn, leader, user_id, m.original_job_id, lease, now)
            if fence is not None:
                taken.append(m.model_copy(update={"fence": fence}))
    return taken


def _take_one(
    conn: Connection, leader: str, user_id: str, job_id: str, lease: datetime, now: datetime
) -> int | None:
    fresh = {
        "original_job_id": job_id,
        "reflection_job_id": leader,
        "user_id": user_id,
        "state": "running",
        "fence": 1,
        "deliveries": 0,
        "lease_expires_at": lease,
    }
    if insert_row(conn, reflection_claims, "original_job_id", fresh):
        return 1
    row = (
        conn.execute(
            select(reflection_claims).where(_c.original_job_id == job_id).with_for_update()
        )
        .mappings()
        .one()
    )
    fence = _fence_for(row, leader, user_id, now)
    if fence is None:
        return None
    conn.execute(
        update(reflection_claims)
        .where(_c.original_job_id == job_id)
        .values(
            reflection_job_id=leader,
            state="running",
            fence=fence,
            lease_expires_at=lease,
            updated_at=now,
        )
    )
    return fence


def _fence_for(row: RowMapping, leader: str, user_id: str, now: datetime) -> int | None:
    """The fence under which a leader may take this claim, or None (see `take`)."""
    mine = row["reflection_job_id"] == leader and row["state"] == "running"
    if row["state"] == "done" or row["user_id"] != user_id:
        return None
    expired = (as_utc(row["lease_expires_at"]) or now) <= now
    if not mine and (row["decision"] or (row["state"] == "running" and not expired)):
        return None
    return int(row["fence"]) if mine else int(row["fence"]) + 1


def store_batch(
    *, engine: Engine, original_job_id: str, fence: int, members: Sequence[Member]
) -> None:
    """Keep the batch on the leader's claim: a redelivered leader resumes it."""
    with single_statement(engine) as conn:
        conn.execute(
            update(reflection_claims)
            .where(_c.original_job_id == original_job_id, _c.fence == fence, _c.state == "running")
            .values(batch=dump_members(members), updated_at=utcnow())
        )


def stored_batch(*, engine: Engine, original_job_id: str) -> list[Member]:
    """The batch kept on the leader's claim (none once it committed)."""
    with single_statement(engine) as conn:
        text = conn.execute(
            select(_c.batch).where(_c.original_job_id == original_job_id)
        ).scalar_one_or_none()
    return load_members(text)


def still_held(*, engine: Engine, leader: str, members: Sequence[Member]) -> list[Member]:
    """The members whose claims the leader still holds under their fences (checked under
    the user's lock, before the batch is planned)."""
    if not members:
        return []
    keys = [(m.original_job_id, m.fence) for m in members]
    with single_statement(engine) as conn:
        held = set(
            conn.execute(
                select(_c.original_job_id).where(
                    tuple_(_c.original_job_id, _c.fence).in_(keys),
                    _c.reflection_job_id == leader,
                    _c.state == "running",
                )
            ).scalars()
        )
    return [m for m in members if m.original_job_id in held]


def release(
    *, engine: Engine, leader: str, leader_job_id: str, job_ids: Collection[str] | None = None
) -> None:
    """End the lease of followers' claims the leader holds (all, or `job_ids`): their own
    runs take them back at once and reflect them alone."""
    conditions = [
        _c.reflection_job_id == leader,
        _c.state == "running",
        _c.original_job_id != leader_job_id,
    ]
    if job_ids is not None:
        if not job_ids:
            return
        conditions.append(_c.original_job_id.in_(list(job_ids)))
    with single_statement(engine) as conn:
        conn.execute(
            update(reflection_claims)
            .where(*conditions)
            .values(lease_expires_at=utcnow(), updated_at=utcnow())
        )


class StaleBatchError(Exception):
    """A follower's claim was taken over before the batch committed: nothing commits."""


def commit_followers(conn: Connection, followers: Sequence[BatchFollower], *, fenced: bool) -> None:
    """In the leader's commit: mark each follower's claim done (under its fence, unless
    the lock holder rolls a journal forward) and insert its row. Raises StaleBatchError
    (the transaction rolls back) when a fenced follower's claim is no longer held."""
    if not followers:
        return
    keys = [(f.original_job_id, f.fence) for f in followers]
    ids = [f.original_job_id for f in followers]
    where = [_c.state != "done"]
    where.append(
        tuple_(_c.original_job_id, _c.fence).in_(keys) if fenced else _c.original_job_id.in_(ids)
    )
    if fenced:
        where.append(_c.state == "running")
    marked = conn.execute(
        update(reflection_claims)
        .where(*where)
        .values(state="done", decision=None, batch=None, outcome="coalesced", updated_at=utcnow())
    ).rowcount
    if fenced and marked != len(followers):
        raise StaleBatchError(f"{len(followers) - marked} follower claim(s) were taken over")
    conn.execute(
        insert_over_failed(conn.dialect.name, reflection_metrics, "reflection_job_id"),
        [f.metrics.model_dump(mode="json") for f in followers],
    )
