"""Piece edits staged for review (`REFLECTION_PIECE_EDIT_MODE=review`): list, approve, reject.

A run in review mode judges a piece edit as usual; an accepted one is inserted into
`piece_proposals` in the run's own commit instead of being written. Approval, under the
user lock (after completing any journal a killed writer left), re-judges it against the
piece as it is *now* (cooldown, secrets, escalation, validity), refuses it if that piece is
no longer the one the proposal was made against (`piece_stale`), then writes the user's
copy through a journal (crash-safe, snapshotted with `kind: approval`, revertible) and
records the `piece_edits` row and the approval in one transaction. A refused approval
leaves the proposal pending with the refusal's code.

Rejection takes the same user lock, so it cannot land between an approval's write and its
record; and it refuses a proposal whose interrupted approval already wrote the piece (its
journal or its `kind: approval` snapshot exists): `approve` completes that one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, select, update

from reflection import storage
from reflection.apply import (
    FileChange,
    Journal,
    finish_pending_journals,
    pending_journals,
    read_or_none,
    roll_forward,
    snapshot_id_for,
    write_journal,
)
from reflection.changes import judge_piece_edit
from reflection.errors import PermanentError
from reflection.inputs import load_piece
from reflection.lock import UserLock, operator_lock
from reflection.models import Code, Piece, PieceEdit, Verdict
from reflection.paths import UserPaths
from reflection.settings import Settings
from reflection.snapshot import iter_index, read_meta, snapshot_files
from reflection.storage import piece_proposals

_P = piece_proposals.c


class ProposalError(PermanentError):
    """Raised when a proposal is unknown or already decided."""

    code = "proposal_invalid"


class ProposalRefusedError(PermanentError):
    """Raised when an approval fails the re-check against the current piece."""

    code = "proposal_refused"

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(f"refused: {verdict.code.value}: {verdict.detail}".rstrip(": "))
        self.verdict = verdict


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def list_proposals(
    *, engine: Engine, status: str | None = "pending", user_id: str | None = None
) -> list[dict[str, Any]]:
    """Proposals (newest first), without their YAML."""
    cols = [col for col in piece_proposals.c if col.name != "yaml"]
    q = select(*cols).order_by(_P.id.desc())
    if status is not None:
        q = q.where(_P.status == status)
    if user_id is not None:
        q = q.where(_P.user_id == user_id)
    with storage._db(), engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def get_proposal(*, engine: Engine, proposal_id: int) -> dict[str, Any]:
    """One proposal with its YAML; `ProposalError` when there is none."""
    with storage._db(), engine.connect() as conn:
        row = conn.execute(select(piece_proposals).where(_P.id == proposal_id)).mappings().first()
    if row is None:
        raise ProposalError(f"there is no proposal {proposal_id}")
    return dict(row)


def _pending(engine: Engine, proposal_id: int) -> dict[str, Any]:
    prop = get_proposal(engine=engine, proposal_id=proposal_id)
    if prop["status"] != "pending":
        raise ProposalError(f"proposal {proposal_id} is already {prop['status']}")
    return prop


def _decide(
    engine: Engine,
    proposal_id: int,
    status: str,
    detail: str,
    now: datetime,
    piece_edit: dict[str, Any] | None = None,
) -> bool:
    """Move a pending proposal to `status` (and record its piece edit) in one transaction."""
    with storage._db(), engine.begin() as conn:
        res = conn.execute(
            update(piece_proposals)
            .where(_P.id == proposal_id, _P.status == "pending")
            .values(status=status, detail=detail, decided_at=now)
        )
        if not res.rowcount:
            return False
        if piece_edit is not None:
            storage.insert_row(conn, storage.piece_edits, "reflection_job_id", piece_edit)
        return True


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
    paths = UserPaths(settings.user_folder_root, prop["user_id"])
    with operator_lock(settings, redis_client, prop["user_id"]) as lock:
        prop = _pending(engine, proposal_id)
        if _approval_journal(paths, prop) or _approval_in_effect(paths, settings, prop):
            raise ProposalError(
                f"an interrupted approval of proposal {proposal_id} already wrote the piece; "
                f"run `reflection approve {proposal_id}` to complete it (then revert its "
                "snapshot to undo it)"
            )
        lock.ensure_owned()  # still ours: no approval can have started since the check
        if not _decide(engine, proposal_id, "rejected", reason or "rejected by an operator", now):
            raise ProposalError(f"proposal {proposal_id} was decided meanwhile")


def _note_refusal(engine: Engine, proposal_id: int, detail: str) -> None:
    with storage._db(), engine.begin() as conn:
        conn.execute(update(piece_proposals).where(_P.id == proposal_id).values(detail=detail))


def _approval_journal(paths: UserPaths, prop: dict[str, Any]) -> bool:
    """Whether a killed approval of this proposal left its journal (to be rolled forward)."""
    return any(
        j.meta.get("kind") == "approval" and j.meta.get("proposal_id") == prop["id"]
        for j in pending_journals(paths)
    )


def _approval_snapshot(paths: UserPaths, prop: dict[str, Any]) -> str | None:
    """The snapshot an approval of this very proposal wrote (the latest), if any."""
    found = None
    for item in iter_index(paths):
        sid = item.get("snapshot_id")
        if (
            item.get("kind") != "approval"
            or item.get("reflection_job_id") != prop["reflection_job_id"]
            or not isinstance(sid, str)
        ):
            continue
        try:
            meta = read_meta(paths, sid)
        except (OSError, ValueError):  # a garbled or planted line: no evidence
            continue
        if meta.get("proposal_id") == prop["id"]:
            found = sid
    return found


def _approval_in_effect(
    paths: UserPaths, settings: Settings, prop: dict[str, Any], current: Piece | None = None
) -> str | None:
    """The snapshot of this proposal's own interrupted approval (files and snapshot
    written, rows not) if the user's copy still holds the proposal; else None."""
    sid = _approval_snapshot(paths, prop)
    if sid is None:
        return None
    if current is None:
        current = load_piece(paths, settings.pieces_dir, prop["piece_name"])
    return sid if current.user_copy and current.yaml == prop["yaml"] else None


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
    paths = UserPaths(settings.user_folder_root, prop["user_id"])
    with operator_lock(settings, redis_client, prop["user_id"]) as lock:
        prop = _pending(engine, proposal_id)
        # A killed writer's journal is completed before the piece is read: planned on
        # files it has still to write, the approval would be undone by its roll-forward.
        finish_pending_journals(paths=paths, lock=lock, engine=engine)
        current = load_piece(paths, settings.pieces_dir, prop["piece_name"])
        edit = PieceEdit(yaml=prop["yaml"], summary=prop["summary"])
        sid = _approval_in_effect(paths, settings, prop, current)
        if sid is not None:
            # This proposal's own approval wrote the copy and its snapshot, then stopped
            # before its rows: record them. (A copy that merely equals the proposal, as a
            # second run proposing the same edit finds it, is judged below: unchanged.)
            verdict = Verdict(
                kind="piece",
                name=prop["piece_name"],
                op="edit",
                accepted=True,
                code=Code.OK,
                detail="completed an interrupted approval",
            )
            _record(engine, prop, prop["before_sha256"], now)
            return Approval(proposal_id, paths.snapshot_dir(sid), verdict)
        verdict = judge_piece_edit(
            edit,
            piece_name=prop["piece_name"],
            current_yaml=current.yaml,
            last_edit_at=storage.last_piece_edit_at(
                engine=engine, user_id=prop["user_id"], piece_name=prop["piece_name"]
            ),
            now=now,
            cooldown_hours=settings.piece_edit_cooldown_hours,
        )
        if verdict.accepted and _sha(current.yaml) != prop["before_sha256"]:
            # The proposal is a whole new piece written against its base: applied over
            # another (a later approval, a revert, a hand edit) it would silently undo it.
            verdict = verdict.model_copy(
                update={
                    "accepted": False,
                    "code": Code.PIECE_STALE,
                    "detail": "the piece changed since this proposal was made; reject it "
                    "and let the next run propose again",
                }
            )
        if not verdict.accepted:
            _note_refusal(engine, proposal_id, f"{verdict.code.value}: {verdict.detail}")
            raise ProposalRefusedError(verdict)
        folder = _write(paths, lock, engine, prop, current, verdict, now)
        _record(engine, prop, _sha(current.yaml), now)
    return Approval(proposal_id, folder, verdict)


def _record(engine: Engine, prop: dict[str, Any], before_sha256: str, now: datetime) -> None:
    row = {
        "user_id": prop["user_id"],
        "piece_name": prop["piece_name"],
        "reflection_job_id": prop["reflection_job_id"],
        "original_job_id": prop["original_job_id"],
        "before_sha256": before_sha256,
        "after_sha256": _sha(prop["yaml"]),
        "created_at": now,
    }
    if not _decide(engine, prop["id"], "approved", "approved by an operator", now, row):
        raise ProposalError(f"proposal {prop['id']} was decided meanwhile")


def _write(
    paths: UserPaths,
    lock: UserLock,
    engine: Engine,
    prop: dict[str, Any],
    current: Piece,
    verdict: Verdict,
    now: datetime,
) -> Path:
    """Write the user's copy through a journal and snapshot it (`kind: approval`)."""
    copy = paths.writable(paths.piece_copy(prop["piece_name"]))
    before = read_or_none(paths, copy) if current.user_copy else None
    sid = snapshot_id_for(f"approve:{prop['id']}:{now.isoformat()}", now)
    meta = {
        "kind": "approval",
        "snapshot_id": sid,
        "proposal_id": prop["id"],
        "created_at": now.isoformat(),
        "original_job_id": prop["original_job_id"],
        "reflection_job_id": prop["reflection_job_id"],
        "user_id": prop["user_id"],
        "piece_name": prop["piece_name"],
        "outcome": "applied",
        "summary": prop["summary"],
        "memory_changes": 0,
        "piece_edited": True,
        "piece_before_source": "user" if current.user_copy else "builtin",
        "rejected": 0,
        "decisions": [verdict.model_dump(mode="json")],
        "memory_files": {},
    }
    journal = Journal(
        snapshot_id=sid,
        original_job_id="",  # not the run's job: its claim is done, recovery must not skip it
        reflection_job_id=prop["reflection_job_id"],
        user_id=prop["user_id"],
        fence=0,
        files=[
            FileChange(path=str(copy.relative_to(paths.home)), before=before, after=prop["yaml"])
        ],
        snapshot=snapshot_files({}, {}, current.yaml, prop["yaml"]),
        meta=meta,
        metrics={},
        piece_edit=None,
    )
    lock.ensure_owned()
    write_journal(paths, journal)
    roll_forward(
        paths=paths, journal=journal, lock=lock, engine=engine, duration_ms=0, recovering=False
    )
    return paths.snapshot_dir(sid)
