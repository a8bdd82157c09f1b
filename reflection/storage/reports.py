"""The operator's queries: `stats` over `reflection_metrics`, the finished jobs `backfill`
publishes, and the checks `doctor` and the commands make before they write."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from alembic.migration import MigrationContext
from sqlalchemy import ColumnElement, Engine, func, inspect, or_, select, text

from reflection import constants as c
from reflection.models import Job, Outcome
from reflection.storage.tables import jobs, reflection_claims, reflection_metrics

_M = reflection_metrics.c
# The outcomes of runs that asked the LLM.
RAN_LLM = (Outcome.APPLIED.value, Outcome.ABSTAINED.value, Outcome.REJECTED.value)
# The kinds of rows that can ask it (an operator's approval is `applied` without a call).
_ASKED = _M.kind.in_(("reflection", "consolidation"))


@dataclass(frozen=True)
class RunFilters:
    """Which metrics rows a report counts."""

    since: datetime | None = None
    user: str | None = None
    piece: str | None = None

    def where(self) -> list[ColumnElement[bool]]:
        cond: list[ColumnElement[bool]] = []
        if self.since is not None:
            cond.append(_M.created_at >= self.since)
        if self.user is not None:
            cond.append(_M.user_id == self.user)
        if self.piece is not None:
            cond.append(_M.piece_name == self.piece)
        return cond


@dataclass(frozen=True)
class ModelUsage:
    """What one model's runs cost."""

    model: str | None
    runs: int
    tokens_in: int
    tokens_out: int
    avg_duration_ms: int


def _counts(engine: Engine, column: Any, *where: ColumnElement[bool]) -> dict[str, int]:
    q = select(column, func.count()).where(*where).group_by(column)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    return {str(k): int(n) for k, n in sorted(rows, key=lambda r: -r[1])}


def runs_by_outcome(*, engine: Engine, f: RunFilters) -> dict[str, int]:
    """Runs per outcome, most first."""
    return _counts(engine, _M.outcome, *f.where())


def failures_by_code(*, engine: Engine, f: RunFilters) -> dict[str, int]:
    """Failed runs per error code, most first."""
    return _counts(engine, _M.error_code, *f.where(), _M.outcome == Outcome.FAILED.value)


def usage_by_model(*, engine: Engine, f: RunFilters) -> list[ModelUsage]:
    """Runs, tokens and mean duration per model, of the runs that asked the LLM."""
    q = (
        select(
            _M.model,
            func.count(),
            func.coalesce(func.sum(_M.tokens_in), 0),
            func.coalesce(func.sum(_M.tokens_out), 0),
            func.coalesce(func.avg(_M.duration_ms), 0),
        )
        .where(*f.where(), _M.outcome.in_(RAN_LLM), _ASKED)
        .group_by(_M.model)
    )
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    return [ModelUsage(m, int(n), int(ti), int(to), round(float(d))) for m, n, ti, to, d in rows]


def durations_ms(*, engine: Engine, f: RunFilters) -> list[int]:
    """The durations of the runs that asked the LLM or failed, sorted."""
    q = select(_M.duration_ms).where(
        *f.where(), _M.outcome.in_((*RAN_LLM, Outcome.FAILED.value)), _ASKED
    )
    with engine.connect() as conn:
        return sorted(int(v) for v in conn.execute(q).scalars())


def token_totals(*, engine: Engine, f: RunFilters) -> tuple[int, int, int, int]:
    """(runs, tokens in, tokens out, tokens of those in served from the provider's prompt
    cache) of the runs that asked the LLM."""
    q = select(
        func.count(),
        func.coalesce(func.sum(_M.tokens_in), 0),
        func.coalesce(func.sum(_M.tokens_out), 0),
        func.coalesce(func.sum(_M.tokens_cached), 0),
    ).where(*f.where(), _M.outcome.in_(RAN_LLM), _ASKED)
    with engine.connect() as conn:
        n, t_in, t_out, t_cached = conn.execute(q).one()
    return int(n), int(t_in), int(t_out), int(t_cached)


def snapshots_with_rejections(*, engine: Engine, f: RunFilters) -> list[tuple[str, str]]:
    """(user id, snapshot id) of each run that rejected a change."""
    q = select(_M.user_id, _M.snapshot_id).where(
        *f.where(), _M.rejections > 0, _M.snapshot_id.is_not(None)
    )
    with engine.connect() as conn:
        return [(str(u), str(s)) for u, s in conn.execute(q).all()]


def pending_jobs(
    *, engine: Engine, since: datetime | None, user: str | None, limit: int
) -> list[Job]:
    """Finished jobs without a reflection yet (no claim, or a claim not `done`), oldest first."""
    j, cl = jobs.c, reflection_claims.c
    ended = func.coalesce(j.finished_at, j.created_at)
    q = (
        select(jobs)
        .select_from(jobs.outerjoin(reflection_claims, cl.original_job_id == j.id))
        .where(j.status.in_(c.OUTCOMES), or_(cl.state.is_(None), cl.state != "done"))
        .order_by(ended, j.id)
    )
    if since is not None:
        q = q.where(ended >= since)
    if user is not None:
        q = q.where(j.user_id == user)
    if limit > 0:
        q = q.limit(limit)
    with engine.connect() as conn:
        return [Job.model_validate(dict(r)) for r in conn.execute(q).mappings()]


def ping(engine: Engine) -> None:
    """Fail (the driver's error) unless the database answers."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


@dataclass(frozen=True)
class Schema:
    """What `doctor` checks of the database: the migration it is at, the platform's table."""

    revision: str | None
    has_jobs: bool


def schema(engine: Engine) -> Schema:
    """The database's alembic revision and whether the platform's `jobs` table exists."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        revision = MigrationContext.configure(conn).get_current_revision()
        return Schema(revision, inspect(conn).has_table("jobs"))
