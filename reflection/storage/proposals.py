"""The queries of piece edits staged for review (`reflection.proposals`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, select, update

from reflection.records import MetricsRow, PieceEditRow, Proposal, ProposalSummary
from reflection.storage.db import driver_errors, insert_row, single_statement
from reflection.storage.runs import record_piece_edit
from reflection.storage.tables import piece_proposals, reflection_metrics

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
    with single_statement(engine) as conn:
        return [ProposalSummary.model_validate(dict(r)) for r in conn.execute(q).mappings()]


def get_proposal(*, engine: Engine, proposal_id: int) -> Proposal | None:
    """One proposal with its YAML, or None."""
    with single_statement(engine) as conn:
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
    metrics: MetricsRow | None = None,
) -> bool:
    """Move a pending proposal to `status` (and record its piece edit and the approval's
    metrics row) in one transaction; False when it was no longer pending."""
    with driver_errors(), engine.begin() as conn:
        res = conn.execute(
            update(piece_proposals)
            .where(_p.id == proposal_id, _p.status == "pending")
            .values(status=status, detail=detail, decided_at=now)
        )
        if not res.rowcount:
            return False
        if piece_edit is not None:
            record_piece_edit(conn, piece_edit)
        if metrics is not None:
            insert_row(
                conn, reflection_metrics, "reflection_job_id", metrics.model_dump(mode="json")
            )
        return True


def note_proposal_refusal(*, engine: Engine, proposal_id: int, detail: str) -> None:
    """Keep why an approval was refused on the (still pending) proposal."""
    with single_statement(engine) as conn:
        conn.execute(update(piece_proposals).where(_p.id == proposal_id).values(detail=detail))
