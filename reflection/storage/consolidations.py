"""What the consolidation sweep reads (`reflection.consolidate`): the users reflected
since their last pass, in one query."""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from reflection.storage.db import single_statement
from reflection.storage.tables import reflection_metrics

_m = reflection_metrics.c
# The outcomes of reflections that asked the LLM (as `entries.users_reflected_since`).
_REFLECTED = ("applied", "abstained", "rejected")


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
