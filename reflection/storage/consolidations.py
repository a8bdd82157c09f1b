"""What the consolidation triggers read (`reflection.consolidate`): a user's live entries
and last pass (the threshold), and the users reflected since their last pass (the sweep),
each in one query."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, bindparam, func, select

from reflection.storage.db import as_utc, single_statement
from reflection.storage.tables import memory_entries, reflection_metrics

_m = reflection_metrics.c
_e = memory_entries.c
_THRESHOLD_FACTS = select(
    select(func.count())
    .where(_e.user_id == bindparam("uid"), _e.removed_at.is_(None))
    .scalar_subquery(),
    select(func.max(_m.created_at))
    .where(_m.user_id == bindparam("uid"), _m.kind == "consolidation")
    .scalar_subquery(),
)
# The outcomes of reflections that asked the LLM (as `entries.users_reflected_since`).
_REFLECTED = ("applied", "abstained", "rejected")


def threshold_facts(*, engine: Engine, user_id: str) -> tuple[int, datetime | None]:
    """The user's live entries (records) and when their last pass was recorded (any
    outcome), in one round trip: what the threshold after each reflection asks."""
    with single_statement(engine) as conn:
        live, last = conn.execute(_THRESHOLD_FACTS, {"uid": user_id}).one()
    return int(live), as_utc(last)


def users_due_for_sweep(*, engine: Engine) -> list[str]:
    """The users with a reflection that asked the LLM after their last consolidation
    pass (any outcome: a failed pass counts, as for the threshold), or with none yet;
    sorted."""
    passes = (
        select(_m.user_id, func.max(_m.created_at).label("last"))
        .where(_m.kind == "consolidation")
        .group_by(_m.user_id)
        .subquery()
    )
    reflected = (
        select(_m.user_id, func.max(_m.created_at).label("last"))
        .where(_m.kind == "reflection", _m.outcome.in_(_REFLECTED))
        .group_by(_m.user_id)
        .subquery()
    )
    q = (
        select(reflected.c.user_id)
        .select_from(reflected.outerjoin(passes, passes.c.user_id == reflected.c.user_id))
        .where(passes.c.last.is_(None) | (reflected.c.last > passes.c.last))
        .order_by(reflected.c.user_id)
    )
    with single_statement(engine) as conn:
        return [str(u) for u in conn.execute(q).scalars()]
