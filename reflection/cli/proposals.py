"""`reflection proposals`, `approve` and `reject`: piece edits staged in review mode."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import typer

from reflection.cli.common import (
    EXIT_FAILED,
    JsonOpt,
    emit_json,
    err,
    handled,
    out,
    print_diff,
    require_db,
    services,
    unified_diff,
)
from reflection.cli.tables import Column, print_listing
from reflection.errors import ProposalRefusedError
from reflection.inputs import load_piece
from reflection.paths import UserPaths
from reflection.pieces import PieceError, canonical_text
from reflection.proposals import (
    approve_proposal,
    get_proposal,
    list_proposals,
    reject_proposal,
)

IdArg = Annotated[int, typer.Argument(help="The proposal id, as `reflection proposals` lists.")]


def as_data(text: str) -> str:
    """A piece's canonical text (`reflection.pieces.canonical_text`: keys in the format's
    order, block layout, multi-line strings as literal blocks, no comments), as runs and
    approvals write it, so that a diff of two pieces shows what changed, not how each was
    written. Text that does not parse is kept."""
    try:
        return canonical_text(text)
    except PieceError:
        return text


@handled
def proposals(
    user: Annotated[str | None, typer.Option(help="Only this user's proposals.")] = None,
    status: Annotated[
        Literal["pending", "approved", "rejected", "all"], typer.Option(help="Which proposals.")
    ] = "pending",
    diff: Annotated[
        int | None,
        typer.Option(
            help="Show what this proposal changes in the current piece (a unified diff of "
            "the two pieces' data: comments and layout aside)."
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Piece edits staged for review (REFLECTION_PIECE_EDIT_MODE=review, or guarded)."""
    with services() as svc:
        if diff is not None:
            prop = get_proposal(engine=svc.engine, proposal_id=diff)
            paths = UserPaths(svc.settings.user_folder_root, prop.user_id)
            current = load_piece(paths, svc.settings.pieces_dir, prop.piece_name)
            text = unified_diff(
                f"pieces/{prop.piece_name}.yaml", as_data(current.yaml), as_data(prop.yaml)
            )
            if json_:
                emit_json({**prop.model_dump(), "diff": text})
            else:
                print_diff(text)
            return
        rows = list_proposals(
            engine=svc.engine, status=None if status == "all" else status, user_id=user
        )
    if json_:
        emit_json([r.model_dump() for r in rows])
        return
    if not rows:
        out.print(f"no {'' if status == 'all' else status + ' '}proposals", markup=False)
        return
    print_listing(
        "piece proposals",
        PROPOSAL_COLUMNS,
        [
            (
                str(r.id),
                str(r.created_at)[:19],
                r.user_id,
                r.piece_name,
                r.original_job_id,
                r.status,
                r.summary,
                r.detail or "",
            )
            for r in rows
        ],
    )


PROPOSAL_COLUMNS = (
    Column("id", "id"),
    Column("created", "created"),
    Column("user", "user"),
    Column("piece", "piece"),
    Column("job", "job"),
    Column("status", "status"),
    Column("summary", "summary", "text"),
    Column("detail", "detail", "text"),
)


@handled
def approve(proposal_id: IdArg, json_: JsonOpt = False) -> None:
    """Approve a staged piece edit.

    Re-checks it against the current piece (cooldown, escalation, validity), then writes
    the user's copy under the user lock, snapshotted and recorded in piece_edits."""
    with services() as svc:
        try:
            result = approve_proposal(
                settings=svc.settings,
                engine=svc.engine,
                redis_client=svc.redis,
                proposal_id=proposal_id,
                now=datetime.now(UTC),
            )
        except ProposalRefusedError as e:
            if json_:
                emit_json(
                    {"id": proposal_id, "approved": False, **e.verdict.model_dump(mode="json")}
                )
            err.print(f"error: proposal {proposal_id} {e}; it stays pending", markup=False)
            raise typer.Exit(EXIT_FAILED) from e
    snapshot = result.snapshot_dir.name if result.snapshot_dir else None
    if json_:
        emit_json({"id": proposal_id, "approved": True, "snapshot_id": snapshot})
    else:
        out.print(f"approved proposal {proposal_id}; snapshot {snapshot}", markup=False)


@handled
def reject(
    proposal_id: IdArg,
    reason: Annotated[str, typer.Option(help="Why (kept on the proposal).")] = "",
    json_: JsonOpt = False,
) -> None:
    """Reject a pending proposal; nothing is written.

    Takes the user lock, as approve does; refused if an interrupted approval of this
    proposal already wrote the piece (approve it to complete that, then revert)."""
    with services() as svc:
        require_db(svc.engine)
        reject_proposal(
            settings=svc.settings,
            engine=svc.engine,
            redis_client=svc.redis,
            proposal_id=proposal_id,
            reason=reason,
            now=datetime.now(UTC),
        )
    if json_:
        emit_json({"id": proposal_id, "rejected": True})
    else:
        out.print(f"rejected proposal {proposal_id}", markup=False)
