"""Apply a judged decision, crash-safely, through a journal rolled forward under the lock.

Inside the user lock the run (1) judges the decision against the state read *now*,
(2) writes a journal holding every file's before and after text, the snapshot and the
database rows, then (3) rolls it forward: files, snapshot, index line, one Postgres
transaction (metrics row, piece_edits row, claim marked done), and deletes the journal.
Every step is idempotent, so a worker killed anywhere leaves either no journal (nothing
was written) or a journal that the next holder of the user's lock completes exactly once.
"""

from __future__ import annotations

import errno
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Engine

from reflection import storage
from reflection.changes import Limits, judge_memory_changes, judge_piece_edit
from reflection.faults import fault_point
from reflection.frontmatter import render_entry
from reflection.fsio import atomic_delete, atomic_write, read_text_limited
from reflection.lock import UserLock
from reflection.memory import render_index
from reflection.models import (
    LlmDecision,
    LlmResult,
    MemoryEntry,
    Outcome,
    Piece,
    ReflectRequest,
    Verdict,
)
from reflection.paths import UnsafePathError, UserPaths
from reflection.secrets import mask_secrets
from reflection.snapshot import PIECE_BEFORE, PIECE_PROPOSED, snapshot_files, write_snapshot

log = logging.getLogger(__name__)

_MAX_JOURNAL_BYTES = 64 * 1024 * 1024


class FileChange(BaseModel):
    """One file of the user's folder: its text before and after (None = absent)."""

    path: str  # relative to the user's home
    before: str | None
    after: str | None


class Journal(BaseModel):
    """Everything one reflection writes, decided before the first write."""

    snapshot_id: str
    original_job_id: str
    reflection_job_id: str
    user_id: str
    fence: int
    files: list[FileChange]
    snapshot: dict[str, str]
    meta: dict[str, Any]
    metrics: dict[str, Any]
    piece_edit: dict[str, Any] | None
    proposal: dict[str, Any] | None = None  # a piece edit staged for review, not written
    # An operator's change (a revert) has no run to commit: its metrics row, recorded
    # before the journal is removed so that a crash cannot lose it.
    record: dict[str, Any] | None = None


@dataclass(frozen=True)
class State:
    """The user's state as read under the lock."""

    memory: Mapping[str, MemoryEntry]
    unreadable: frozenset[str]
    piece: Piece
    last_piece_edit_at: datetime | None


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def snapshot_id_for(reflection_job_id: str, now: datetime) -> str:
    """Sortable by time, unique per run, safe as a folder name."""
    return f"{now:%Y%m%dT%H%M%SZ}-{_sha(reflection_job_id)[:12]}"


def read_or_none(paths: UserPaths, path: Path) -> str | None:
    """A file of the user's (up to 1 MiB), or None if it is missing; read through no link
    below the home."""
    try:
        return read_text_limited(path, 1024 * 1024, root=paths.home)
    except FileNotFoundError:
        return None


def _replaceable(paths: UserPaths, path: Path) -> str | None:
    """`read_or_none` for a file the run rewrites whole (MEMORY.md, a journal's target):
    one that is no longer UTF-8 or over the size limit (edited by hand), or a link
    planted in its place (an atomic write replaces the link, never follows it), is
    treated as absent and replaced, rather than failing every run that changes memory.
    A link on the way to it is still refused (UnsafePathError)."""
    try:
        return read_or_none(paths, path)
    except UnsafePathError:
        raise
    except (ValueError, OSError) as e:
        if isinstance(e, OSError) and e.errno != errno.ELOOP:
            raise
        log.warning("%s cannot be read (%s); it is rewritten whole", path, e)
        return None


def outcome_of(decisions: tuple[Verdict, ...]) -> Outcome:
    """applied (≥1 accepted), abstained (nothing proposed), rejected (none accepted)."""
    if not decisions:
        return Outcome.ABSTAINED
    return Outcome.APPLIED if any(d.accepted for d in decisions) else Outcome.REJECTED


def plan(
    *,
    paths: UserPaths,
    request: ReflectRequest,
    reflection_job_id: str,
    fence: int,
    llm: LlmResult,
    state: State,
    limits: Limits,
    now: datetime,
    store_llm_raw: bool,
    piece_edit_mode: str = "auto",
) -> Journal:
    """Judge the decision against `state` and lay out every write as a journal.

    In `review` mode an accepted piece edit is not written: it is staged (`staged`), and
    the commit inserts it as a `piece_proposals` row for an operator to approve."""
    decision = llm.decision
    verdict = judge_memory_changes(decision.memory_changes, state.memory, limits, state.unreadable)
    decisions = verdict.verdicts
    pd, piece_after, staged = _judge_piece(
        decision, request.piece_name, state, limits, now, piece_edit_mode
    )
    decisions += pd

    files: list[FileChange] = []
    mem_before: dict[str, str | None] = {}
    mem_after: dict[str, str | None] = {}
    for name, entry in verdict.targets.items():
        path = paths.memory_file(name)
        mem_before[name] = read_or_none(paths, paths.writable(path))
        mem_after[name] = render_entry(entry) if entry is not None else None
        files.append(_change(paths, path, mem_before[name], mem_after[name]))
    if verdict.targets:
        final = {**state.memory, **verdict.targets}
        index = render_index(e for e in final.values() if e is not None)
        index_path = paths.writable(paths.memory_index)
        files.append(_change(paths, index_path, _replaceable(paths, index_path), index))
    if piece_after is not None:
        copy = paths.piece_copy(request.piece_name)
        before = read_or_none(paths, paths.writable(copy))
        files.append(_change(paths, copy, before, piece_after))

    sid = snapshot_id_for(reflection_job_id, now)
    # Before anything is written: like the files above, no snapshot, index or journal may
    # go through a planted symlink (UnsafePathError: the run fails `input_invalid`).
    for target in (
        journal_path(paths, sid),
        paths.snapshot_dir(sid) / "meta.json",
        paths.snapshot_index,
    ):
        paths.writable(target)
    # A rejected name or detail may quote a credential; the snapshot keeps it masked.
    decisions = tuple(
        d.model_copy(update={"name": mask_secrets(d.name), "detail": mask_secrets(d.detail)})
        for d in decisions
    )
    outcome = outcome_of(decisions)
    accepted_mem = sum(1 for d in decisions if d.kind == "memory" and d.accepted)
    meta: dict[str, Any] = {
        "kind": "reflection",
        "snapshot_id": sid,
        "created_at": now.isoformat(),
        "original_job_id": request.original_job_id,
        "reflection_job_id": reflection_job_id,
        "user_id": request.user_id,
        "piece_name": request.piece_name,
        "job_outcome": request.outcome,
        "outcome": outcome.value,
        "reasoning": mask_secrets(decision.reasoning),
        "model": llm.model,
        "tokens_in": llm.usage.tokens_in,
        "tokens_out": llm.usage.tokens_out,
        "llm_attempts": llm.attempts,
        "memory_changes": accepted_mem,
        "piece_edited": piece_after is not None,
        "piece_before_source": "user" if state.piece.user_copy else "builtin",
        "rejected": sum(1 for d in decisions if not d.accepted),
        "decisions": [d.model_dump(mode="json") for d in decisions],
        "memory_files": {
            n: {"before": mem_before[n] is not None, "after": mem_after[n] is not None}
            for n in verdict.targets
        },
    }
    if store_llm_raw:
        meta["llm_raw"] = mask_secrets(llm.raw)
    if staged is not None:
        meta["piece_staged"] = True
    metrics = {
        "reflection_job_id": reflection_job_id,
        "original_job_id": request.original_job_id,
        "user_id": request.user_id,
        "piece_name": request.piece_name,
        "outcome": outcome.value,
        "memory_changes": accepted_mem,
        "piece_edited": piece_after is not None,
        "rejections": meta["rejected"],
        "tokens_in": llm.usage.tokens_in,
        "tokens_out": llm.usage.tokens_out,
        "llm_attempts": llm.attempts,
        "model": llm.model,
        "snapshot_id": sid,
    }
    piece_row = None
    if piece_after is not None:
        piece_row = {
            "user_id": request.user_id,
            "piece_name": request.piece_name,
            "reflection_job_id": reflection_job_id,
            "original_job_id": request.original_job_id,
            "before_sha256": _sha(state.piece.yaml),
            "after_sha256": _sha(piece_after),
            "created_at": now,
        }
    snapshot = snapshot_files(
        mem_before, mem_after, state.piece.yaml if piece_after else None, piece_after
    )
    proposal = None
    if staged is not None:
        snapshot[PIECE_BEFORE] = state.piece.yaml
        snapshot[PIECE_PROPOSED] = staged
        proposal = _proposal_row(request, reflection_job_id, sid, state.piece.yaml, decision)
    return Journal(
        snapshot_id=sid,
        original_job_id=request.original_job_id,
        reflection_job_id=reflection_job_id,
        user_id=request.user_id,
        fence=fence,
        files=files,
        snapshot=snapshot,
        meta=meta,
        metrics=metrics,
        piece_edit=piece_row,
        proposal=proposal,
    )


def _judge_piece(
    decision: LlmDecision,
    piece_name: str,
    state: State,
    limits: Limits,
    now: datetime,
    mode: str,
) -> tuple[tuple[Verdict, ...], str | None, str | None]:
    """The piece edit's verdict (if any), the text to write, and the text to stage."""
    if decision.piece_edit is None:
        return (), None, None
    pd = judge_piece_edit(
        decision.piece_edit,
        piece_name=piece_name,
        current_yaml=state.piece.yaml,
        last_edit_at=state.last_piece_edit_at,
        now=now,
        cooldown_hours=limits.cooldown_hours,
    )
    if not pd.accepted:
        return (pd,), None, None
    if mode == "review":
        return (
            (pd.model_copy(update={"detail": "staged for review"}),),
            None,
            decision.piece_edit.yaml,
        )
    return (pd,), decision.piece_edit.yaml, None


def _proposal_row(
    request: ReflectRequest,
    reflection_job_id: str,
    snapshot_id: str,
    current_yaml: str,
    decision: LlmDecision,
) -> dict[str, Any]:
    """The `piece_proposals` row of a piece edit staged for review."""
    assert decision.piece_edit is not None
    return {
        "user_id": request.user_id,
        "piece_name": request.piece_name,
        "reflection_job_id": reflection_job_id,
        "original_job_id": request.original_job_id,
        "snapshot_id": snapshot_id,
        "summary": mask_secrets(decision.piece_edit.summary)[:2000],
        "yaml": decision.piece_edit.yaml,
        "before_sha256": _sha(current_yaml),
        "after_sha256": _sha(decision.piece_edit.yaml),
        "status": "pending",
    }


def _change(paths: UserPaths, path: Path, before: str | None, after: str | None) -> FileChange:
    return FileChange(path=str(path.relative_to(paths.home)), before=before, after=after)


def journal_path(paths: UserPaths, snapshot_id: str) -> Path:
    return paths.journal_dir / f"{snapshot_id}.json"


def write_journal(paths: UserPaths, journal: Journal) -> None:
    """The commit point for files: once this exists, the run will be completed."""
    atomic_write(
        journal_path(paths, journal.snapshot_id), journal.model_dump_json(), root=paths.home
    )


def pending_journals(paths: UserPaths) -> list[Journal]:
    """Journals a killed worker left behind, oldest first."""
    if not paths.journal_dir.is_dir():
        return []
    try:
        paths.writable(paths.journal_dir)
    except UnsafePathError as e:
        log.error("journal folder ignored: %s", e)
        return []
    found = []
    for p in sorted(paths.journal_dir.glob("*.json")):
        try:
            text = read_text_limited(p, _MAX_JOURNAL_BYTES, root=paths.home)
            journal = Journal.model_validate_json(text)
            for change in journal.files:  # a planted journal may not write outside
                paths.contained(paths.home / change.path)
            found.append(journal)
        except (OSError, ValueError) as e:
            log.error("journal %s is unreadable (%s); left in place for an operator", p, e)
    return found


def finish_pending_journals(
    *, paths: UserPaths, lock: UserLock, engine: Engine, duration_ms: int = 0
) -> list[Journal]:
    """Complete the journals killed writers left for this user (call under the user's
    lock, before anything else is read for a change or written): a change planned on
    files a journal has still to write would be undone by its roll-forward."""
    done = []
    for pending in pending_journals(paths):
        log.warning("user %s: rolling forward journal %s", paths.user_id, pending.snapshot_id)
        roll_forward(
            paths=paths,
            journal=pending,
            lock=lock,
            engine=engine,
            duration_ms=duration_ms,
            recovering=True,
        )
        done.append(pending)
    return done


def has_pending_journal(paths: UserPaths, original_job_id: str) -> bool:
    """Whether a killed run of this job left a journal (it must be completed, not dropped)."""
    return any(j.original_job_id == original_job_id for j in pending_journals(paths))


def roll_forward(
    *,
    paths: UserPaths,
    journal: Journal,
    lock: UserLock,
    engine: Engine,
    duration_ms: int,
    recovering: bool,
) -> bool:
    """Write the journal's files, snapshot and index line, then commit the rows.

    Returns False when the database says this run is stale (its claim was taken over or
    already completed): the files written are the journal's own, so nothing is doubled.
    """
    if recovering and (
        storage.claim_state(engine=engine, original_job_id=journal.original_job_id) == "done"
    ):
        # Killed after its commit: everything was written; only the journal is left.
        atomic_delete(journal_path(paths, journal.snapshot_id), root=paths.home)
        return False
    fault_point("after_journal")
    # Ownership is confirmed with Redis before each group of writes (files, then snapshot
    # and rows), and before each write once it has not been for a while (a paused run);
    # the commit's fence is the final judge anyway.
    lock.ensure_owned()
    for n, change in enumerate(journal.files):
        if n:
            fault_point("between_writes")
            lock.before_write()
        target = paths.home / change.path  # the rooted I/O below refuses any way out
        current = _replaceable(paths, target)
        if recovering and current not in (change.before, change.after):
            # Written since the killed run stopped (by hand, or by an operator command of
            # a release that did not finish journals first): the later write stands.
            log.warning("journal %s: %s changed since; left as it is", journal.snapshot_id,
                        change.path)  # fmt: skip
        elif change.after is None:
            atomic_delete(target, root=paths.home)
        elif current != change.after:
            atomic_write(target, change.after, root=paths.home)
    fault_point("after_files")
    write_snapshot(
        paths, journal.meta, journal.snapshot, recovering=recovering, before_write=lock.before_write
    )
    fault_point("after_snapshot")
    lock.ensure_owned()
    committed = True
    if journal.metrics:  # a revert has no run to commit
        committed = storage.commit_run(
            engine=engine,
            original_job_id=journal.original_job_id,
            fence=None if recovering else journal.fence,
            metrics={"duration_ms": duration_ms, **journal.metrics},
            piece_edit=journal.piece_edit,
            proposal=journal.proposal,
        )
    elif journal.record:
        storage.record_metrics(engine=engine, row=journal.record)
    fault_point("after_commit")
    if committed or recovering:
        atomic_delete(journal_path(paths, journal.snapshot_id), root=paths.home)
    # else: a stale writer (its claim was taken over) wrote these files under the lock
    # but may not commit; its journal stays for the next lock holder, who commits it
    # fenceless, so the files and the rows still end up written exactly once.
    return committed
