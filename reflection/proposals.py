"""Piece edits staged for review (`REFLECTION_PIECE_EDIT_MODE=review`, and in `guarded`
mode an edit of privileged text): list, approve, reject.

A run in review mode judges a piece edit as usual; an accepted one is inserted into
`piece_proposals` in the run's own commit instead of being written. Approval, under the
user lock (after completing any journal a killed writer left), re-judges it against the
piece as it is *now* (cooldown, secrets, escalation, validity), refuses it if that piece is
no longer the one the proposal was made against (`piece_stale`), then writes the user's
copy through a journal (crash-safe, snapshotted with `kind: approval`, revertible) and
records the `piece_edits` row, the approval and its metrics row (`kind: approval`, a job
id of its own, `approve-<uuid>`) in one transaction. A refused approval
leaves the proposal pending with the refusal's code.

Rejection takes the same user lock, so it cannot land between an approval's write and its
record; and it refuses a proposal whose interrupted approval already wrote the piece (its
journal or its `kind: approval` snapshot exists): `approve` completes that one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import redis
from sqlalchemy import Engine

from reflection import storage
from reflection.apply import (
    finish_pending_journals,
    pending_journals,
    read_or_none,
    roll_forward,
    write_journal,
)
from reflection.changes import judge_piece_edit
from reflection.errors import ProposalError, ProposalNotFoundError, ProposalRefusedError
from reflection.inputs import load_piece
from reflection.lock import UserLock, operator_lock
from reflection.models import Code, Piece, PieceEdit, Verdict
from reflection.paths import UserPaths
from reflection.pieces import PieceError, canonical_text
from reflection.plan import snapshot_id_for
from reflection.records import (
    ApprovalMeta,
    Change,
    FileChange,
    Journal,
    MetricsRow,
    PieceEditRow,
    Proposal,
    ProposalSummary,
    sha256,
)
from reflection.settings import Settings
from reflection.snapshot import iter_index, read_meta, snapshot_files


def list_proposals(
    *, engine: Engine, status: str | None = "pending", user_id: str | None = None
) -> list[ProposalSummary]:
    """Proposals (newest first), without their YAML."""
    return storage.list_proposals(engine=engine, status=status, user_id=user_id)


def get_proposal(*, engine: Engine, proposal_id: int) -> Proposal:
    """One proposal with its YAML; `ProposalNotFoundError` when there is none."""
    prop = storage.get_proposal(engine=engine, proposal_id=proposal_id)
    if prop is None:
        raise ProposalNotFoundError(f"there is no proposal {proposal_id}")
    return prop


def _pending(engine: Engine, proposal_id: int) -> Proposal:
    prop = get_proposal(engine=engine, proposal_id=proposal_id)
    if prop.status != "pending":
        raise ProposalError(f"proposal {proposal_id} is already {prop.status}")
    return prop


def reject_proposal(
    *,
    settings: Settings,
    engine: Engine,
    redis_client: redis.Redis,
    proposal_id: int,
    reason: str,
    now: datetime,
) -> None:
    """Mark a pending proposal rejected; nothing is written to the user's folder.

    Under the user lock, as approval is: a rejection cannot slip in between an approval's
    write and its record. Refused (`ProposalError`) when an interrupted approval of this
    proposal already wrote (or will write, from its journal) the piece: `approve` then
    completes it, and reverting its snapshot undoes it."""
    prop = _pending(engine, proposal_id)
    paths = UserPaths(settings.user_folder_root, prop.user_id)
    with operator_lock(settings, redis_client, prop.user_id) as lock:
        prop = _pending(engine, proposal_id)
        if _approval_journal(paths, prop) or _approval_in_effect(paths, settings, prop):
            raise ProposalError(
                f"an interrupted approval of proposal {proposal_id} already wrote the piece; "
                f"run `reflection approve {proposal_id}` to complete it (then revert its "
                "snapshot to undo it)"
            )
        lock.ensure_owned()  # still ours: no approval can have started since the check
        detail = reason or "rejected by an operator"
        if not storage.decide_proposal(
            engine=engine, proposal_id=proposal_id, status="rejected", detail=detail, now=now
        ):
            raise ProposalError(f"proposal {proposal_id} was decided meanwhile")


def _approval_journal(paths: UserPaths, prop: Proposal) -> bool:
    """Whether a killed approval of this proposal left its journal (to be rolled forward)."""
    return any(
        isinstance(j.meta, ApprovalMeta) and j.meta.proposal_id == prop.id
        for j in pending_journals(paths)
    )


def _approval_snapshot(paths: UserPaths, prop: Proposal) -> ApprovalMeta | None:
    """The snapshot an approval of this very proposal wrote (the latest), if any."""
    found = None
    for item in iter_index(paths):
        sid = item.snapshot_id
        if (
            item.kind != "approval"
            or item.reflection_job_id != prop.reflection_job_id
            or sid is None
        ):
            continue
        try:
            meta = read_meta(paths, sid)
        except (OSError, ValueError):  # a garbled or planted line: no evidence
            continue
        if isinstance(meta, ApprovalMeta) and meta.proposal_id == prop.id:
            found = meta
    return found


def _approval_in_effect(
    paths: UserPaths, settings: Settings, prop: Proposal, current: Piece | None = None
) -> ApprovalMeta | None:
    """The snapshot of this proposal's own interrupted approval (files and snapshot
    written, rows not) if the user's copy still holds the proposal; else None."""
    meta = _approval_snapshot(paths, prop)
    if meta is None:
        return None
    if current is None:
        current = load_piece(paths, settings.pieces_dir, prop.piece_name)
    return meta if current.user_copy and current.yaml == _canonical(prop.yaml) else None


def _canonical(text: str) -> str:
    """A piece's canonical text (as runs and approvals write and hash it); text that does
    not parse as it is (judging then refuses it)."""
    try:
        return canonical_text(text)
    except PieceError:
        return text


@dataclass(frozen=True)
class Approval:
    """An approved proposal and its snapshot folder (`kind: approval`)."""

    proposal_id: int
    snapshot_dir: Path
    verdict: Verdict


def approve_proposal(
    *,
    settings: Settings,
    engine: Engine,
    redis_client: redis.Redis,
    proposal_id: int,
    now: datetime,
) -> Approval:
    """Re-judge the proposal against the current piece and, if it passes, write it (under
    the user lock), snapshot it and record it. Raises `ProposalRefusedError` otherwise."""
    prop = _pending(engine, proposal_id)
    paths = UserPaths(settings.user_folder_root, prop.user_id)
    with operator_lock(settings, redis_client, prop.user_id) as lock:
        prop = _pending(engine, proposal_id)
        # A killed writer's journal is completed before the piece is read: planned on
        # files it has still to write, the approval would be undone by its roll-forward.
        finish_pending_journals(paths=paths, lock=lock, engine=engine)
        current = load_piece(paths, settings.pieces_dir, prop.piece_name)
        done = _approval_in_effect(paths, settings, prop, current)
        if done is not None:
            # This proposal's own approval wrote the copy and its snapshot, then stopped
            # before its rows: record them. (A copy that merely equals the proposal, as a
            # second run proposing the same edit finds it, is judged below: unchanged.)
            verdict = Verdict(
                kind="piece",
                name=prop.piece_name,
                op="edit",
                accepted=True,
                code=Code.OK,
                detail="completed an interrupted approval",
            )
            _record(engine, prop, prop.before_sha256, now, done)
            return Approval(proposal_id, paths.snapshot_dir(done.snapshot_id), verdict)
        verdict = _rejudge(engine, settings, prop, current, now)
        if not verdict.accepted:
            storage.note_proposal_refusal(
                engine=engine,
                proposal_id=proposal_id,
                detail=f"{verdict.code.value}: {verdict.detail}",
            )
            raise ProposalRefusedError(verdict)
        meta = _write(paths, lock, engine, prop, current, verdict, now)
        _record(engine, prop, sha256(_canonical(current.yaml)), now, meta)
    return Approval(proposal_id, paths.snapshot_dir(meta.snapshot_id), verdict)


def _rejudge(
    engine: Engine, settings: Settings, prop: Proposal, current: Piece, now: datetime
) -> Verdict:
    """The proposal judged against the piece as it is now, as a run's edit would be."""
    verdict = judge_piece_edit(
        PieceEdit(yaml=prop.yaml, summary=prop.summary),
        piece_name=prop.piece_name,
        current_yaml=current.yaml,
        last_edit_at=storage.last_piece_edit_at(
            engine=engine, user_id=prop.user_id, piece_name=prop.piece_name
        ),
        now=now,
        cooldown_hours=settings.piece_edit_cooldown_hours,
    )
    # The proposal's base is hashed as canonical text (a proposal staged before pieces
    # were written canonically hashed the raw text: either matches).
    bases = {sha256(_canonical(current.yaml)), sha256(current.yaml)}
    if verdict.accepted and prop.before_sha256 not in bases:
        # The proposal is a whole new piece written against its base: applied over
        # another (a later approval, a revert, a hand edit) it would silently undo it.
        return verdict.model_copy(
            update={
                "accepted": False,
                "code": Code.PIECE_STALE,
                "detail": "the piece changed since this proposal was made; reject it "
                "and let the next run propose again",
            }
        )
    return verdict


def _record(
    engine: Engine, prop: Proposal, before_sha256: str, now: datetime, meta: ApprovalMeta
) -> None:
    """The approval's rows: the piece edit (the cooldown starts), the proposal approved and
    the approval's own metrics row."""
    after = _canonical(prop.yaml)
    row = PieceEditRow.of(prop, before_sha256=before_sha256, after=after, at=now)
    if not storage.decide_proposal(
        engine=engine,
        proposal_id=prop.id,
        status="approved",
        detail="approved by an operator",
        now=now,
        piece_edit=row,
        metrics=MetricsRow.of_snapshot(meta, reflection_job_id=f"approve-{uuid.uuid4()}"),
    ):
        raise ProposalError(f"proposal {prop.id} was decided meanwhile")


def _write(
    paths: UserPaths,
    lock: UserLock,
    engine: Engine,
    prop: Proposal,
    current: Piece,
    verdict: Verdict,
    now: datetime,
) -> ApprovalMeta:
    """Write the user's copy through a journal and snapshot it (`kind: approval`); the
    snapshot's meta."""
    copy = paths.writable(paths.piece_copy(prop.piece_name))
    change = Change(
        snapshot_id=snapshot_id_for(f"approve:{prop.id}:{now.isoformat()}", now),
        at=now,
        user_id=prop.user_id,
        piece_name=prop.piece_name,
        original_job_id=prop.original_job_id,
        reflection_job_id=prop.reflection_job_id,
        piece_edited=True,
        piece_from_user=current.user_copy,
    )
    meta = ApprovalMeta.of(change, proposal_id=prop.id, summary=prop.summary, verdicts=[verdict])
    journal = Journal(
        snapshot_id=change.snapshot_id,
        # No original_job_id: the run's claim is done, and recovery must not skip this.
        reflection_job_id=prop.reflection_job_id,
        user_id=prop.user_id,
        files=[
            FileChange(
                path=str(copy.relative_to(paths.home)),
                before=read_or_none(paths, copy) if current.user_copy else None,
                after=_canonical(prop.yaml),
            )
        ],
        snapshot=snapshot_files({}, {}, _canonical(current.yaml), _canonical(prop.yaml)),
        meta=meta,
    )
    lock.ensure_owned()
    write_journal(paths, journal)
    roll_forward(
        paths=paths, journal=journal, lock=lock, engine=engine, duration_ms=0, recovering=False
    )
    return meta
