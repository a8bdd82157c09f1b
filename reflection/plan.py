"""Plan a reflection's writes, under the user's lock, in three steps:

    judge         the decision against the state read now: a verdict for every change,
                  the entries and the piece to write (pure)
    file changes  each file's text before (read now) and after
    records       the snapshot, its meta, the metrics row, the piece-edit or proposal row
                  and the entry records (pure)

and hand them on as one journal (`reflection.apply` writes it and rolls it forward).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from reflection.apply import journal_path, read_or_none, replaceable
from reflection.changes import Grounds, Limits, judge_memory_changes, judge_piece_edit
from reflection.evidence import MAX_QUOTE_CHARS, MAX_QUOTES, confirmed_names
from reflection.frontmatter import render_entry
from reflection.memory import render_index
from reflection.models import (
    LlmDecision,
    LlmResult,
    MemoryChange,
    MemoryEntry,
    Outcome,
    Piece,
    ReflectRequest,
    Verdict,
)
from reflection.paths import UserPaths
from reflection.pieces import canonical_piece, guarded_reasons, parse_piece_yaml
from reflection.records import (
    Change,
    EntryChanges,
    FileChange,
    Journal,
    MetricsRow,
    PieceEditRow,
    ProposalRow,
    ReflectionMeta,
    sha256,
)
from reflection.secrets import mask_secrets
from reflection.snapshot import PIECE_BEFORE, PIECE_PROPOSED, snapshot_files

_MAX_SUMMARY_CHARS = 2000  # of a staged piece edit's summary
_MAX_REASON_CHARS = 300  # of a removal's reason, as its entry's record keeps it


@dataclass(frozen=True)
class State:
    """The user's state as read under the lock."""

    memory: Mapping[str, MemoryEntry]
    unreadable: frozenset[str]
    piece: Piece
    last_piece_edit_at: datetime | None


@dataclass(frozen=True)
class Judgement:
    """What judging a decision settled: every change's verdict (memory changes in the
    decision's order, then the piece edit), each accepted memory change's entry (None:
    removed), and the piece to write or, in review mode (or guarded mode, for an edit
    of privileged text), to stage; both as canonical YAML, with the current piece's
    canonical text (`piece_before`) that snapshots and hashes use."""

    verdicts: tuple[Verdict, ...]
    targets: Mapping[str, MemoryEntry | None]
    piece_after: str | None = None
    staged: str | None = None
    piece_before: str | None = None


@dataclass(frozen=True)
class Writes:
    """The user's files a plan writes (memory entries, MEMORY.md, the piece's copy), and
    each memory entry's text before and after."""

    files: tuple[FileChange, ...]
    memory_before: Mapping[str, str | None]
    memory_after: Mapping[str, str | None]


def snapshot_id_for(reflection_job_id: str, now: datetime) -> str:
    """Sortable by time, unique per run, safe as a folder name."""
    return f"{now:%Y%m%dT%H%M%SZ}-{sha256(reflection_job_id)[:12]}"


def outcome_of(verdicts: tuple[Verdict, ...]) -> Outcome:
    """applied (≥1 accepted), abstained (nothing proposed), rejected (none accepted)."""
    if not verdicts:
        return Outcome.ABSTAINED
    return Outcome.APPLIED if any(v.accepted for v in verdicts) else Outcome.REJECTED


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
    piece_edit_mode: str = "guarded",
    grounds: Grounds | None = None,
) -> Journal:
    """Judge the decision against `state` and lay out every write as a journal.

    In `review` mode an accepted piece edit is not written: it is staged, and the commit
    inserts it as a `piece_proposals` row for an operator to approve; in `guarded` mode
    only an edit `reflection.pieces.guarded_reasons` names is. `grounds`: what the
    decision's claim stored beside it (`StoredDecision.grounds`)."""
    judged = judge(llm.decision, request.piece_name, state, limits, now, piece_edit_mode, grounds)
    writes = file_changes(paths, judged, state, request.piece_name)
    sid = snapshot_id_for(reflection_job_id, now)
    # Before anything is written: like the files above, no snapshot, index or journal may
    # go through a planted symlink (UnsafePathError: the run fails `input_invalid`).
    for target in (
        journal_path(paths, sid),
        paths.snapshot_dir(sid) / "meta.json",
        paths.snapshot_index,
    ):
        paths.writable_file(target)
    return records(
        Change(
            snapshot_id=sid,
            at=now,
            user_id=request.user_id,
            piece_name=request.piece_name,
            original_job_id=request.original_job_id,
            reflection_job_id=reflection_job_id,
            memory_before=writes.memory_before,
            memory_after=writes.memory_after,
            piece_edited=judged.piece_after is not None,
            piece_from_user=state.piece.user_copy,
        ),
        request=request,
        fence=fence,
        llm=llm,
        judged=judged,
        files=writes.files,
        piece_before=state.piece.yaml,
        store_llm_raw=store_llm_raw,
        memory=state.memory,
    )


# Step 1: judge.


def judge(
    decision: LlmDecision,
    piece_name: str,
    state: State,
    limits: Limits,
    now: datetime,
    piece_edit_mode: str = "guarded",
    grounds: Grounds | None = None,
) -> Judgement:
    """Every change of `decision` judged against `state` (pure). `grounds` None: a
    decision judged without stored verdicts nor SPEC §11's rules."""
    memory = judge_memory_changes(
        decision.memory_changes, state.memory, limits, state.unreadable, grounds
    )
    if decision.piece_edit is None:
        return Judgement(memory.verdicts, memory.targets)
    verdict = judge_piece_edit(
        decision.piece_edit,
        piece_name=piece_name,
        current_yaml=state.piece.yaml,
        last_edit_at=state.last_piece_edit_at,
        now=now,
        cooldown_hours=limits.cooldown_hours,
        secrets=grounds.piece_secrets if grounds is not None else None,
    )
    if not verdict.accepted:
        return Judgement((*memory.verdicts, verdict), memory.targets)
    # Accepted: both pieces parsed, validated and wrote as canonical text while judged.
    old, new = parse_piece_yaml(state.piece.yaml), parse_piece_yaml(decision.piece_edit.yaml)
    before, after = canonical_piece(old), canonical_piece(new)
    reasons = guarded_reasons(old, new) if piece_edit_mode == "guarded" else []
    if piece_edit_mode == "review" or reasons:
        why = f" ({'; '.join(reasons)})" if reasons else ""
        staged = verdict.model_copy(update={"detail": "staged for review" + why})
        return Judgement(
            (*memory.verdicts, staged), memory.targets, staged=after, piece_before=before
        )
    return Judgement(
        (*memory.verdicts, verdict), memory.targets, piece_after=after, piece_before=before
    )


# Step 2: file changes.


def file_changes(paths: UserPaths, judged: Judgement, state: State, piece_name: str) -> Writes:
    """Each file the judgement changes, with its text as it is now (read through no link:
    `UnsafePathError` for a planted one) and as it will be."""
    files: list[FileChange] = []
    before: dict[str, str | None] = {}
    after: dict[str, str | None] = {}
    for name, entry in judged.targets.items():
        path = paths.memory_file(name)
        before[name] = read_or_none(paths, paths.writable(path))
        after[name] = render_entry(entry) if entry is not None else None
        files.append(_change(paths, path, before[name], after[name]))
    if judged.targets:
        final = {**state.memory, **judged.targets}
        index = render_index(e for e in final.values() if e is not None)
        index_path = paths.writable(paths.memory_index)
        files.append(_change(paths, index_path, replaceable(paths, index_path), index))
    if judged.piece_after is not None:
        copy = paths.piece_copy(piece_name)
        current = read_or_none(paths, paths.writable(copy))
        files.append(_change(paths, copy, current, judged.piece_after))
    return Writes(tuple(files), before, after)


def _change(paths: UserPaths, path: Path, before: str | None, after: str | None) -> FileChange:
    return FileChange(path=str(path.relative_to(paths.home)), before=before, after=after)


# Step 3: records.


def records(
    change: Change,
    *,
    request: ReflectRequest,
    fence: int,
    llm: LlmResult,
    judged: Judgement,
    files: tuple[FileChange, ...],
    piece_before: str,
    store_llm_raw: bool,
    memory: Mapping[str, MemoryEntry],
) -> Journal:
    """The journal of a planned reflection: its files, snapshot, meta and rows, entry
    records included (`memory`: the entries as read under the lock) (pure). What the model
    wrote (reasoning, a rejected name or detail, a summary, a quote) is kept masked: it
    may quote a credential."""
    verdicts = tuple(
        v.model_copy(update={"name": mask_secrets(v.name), "detail": mask_secrets(v.detail)})
        for v in judged.verdicts
    )
    piece_before = _before_text(judged, piece_before)
    removed = {n for n, entry in judged.targets.items() if entry is None}
    confirmed = confirmed_names(llm.decision.confirmed, memory.keys() - removed)
    meta = ReflectionMeta.of(
        change,
        job_outcome=request.outcome,
        outcome=outcome_of(verdicts),
        reasoning=mask_secrets(llm.decision.reasoning),
        model=llm.model,
        tokens_in=llm.usage.tokens_in,
        tokens_out=llm.usage.tokens_out,
        llm_attempts=llm.attempts,
        rejected=sum(1 for v in verdicts if not v.accepted),
        verdicts=list(verdicts),
        llm_raw=mask_secrets(llm.raw) if store_llm_raw else None,
        piece_staged=True if judged.staged is not None else None,
        confirmed=list(confirmed),
    )
    snapshot = snapshot_files(
        change.memory_before,
        change.memory_after,
        piece_before if judged.piece_after is not None else None,
        judged.piece_after,
    )
    if judged.staged is not None:
        snapshot[PIECE_BEFORE] = piece_before
        snapshot[PIECE_PROPOSED] = judged.staged
    return Journal(
        snapshot_id=change.snapshot_id,
        original_job_id=change.original_job_id,
        reflection_job_id=change.reflection_job_id,
        user_id=change.user_id,
        fence=fence,
        files=list(files),
        snapshot=snapshot,
        meta=meta,
        # The snapshot's meta does not keep the cached share; the metrics row does.
        metrics=MetricsRow.of_snapshot(meta).model_copy(
            update={"tokens_cached": llm.usage.tokens_cached}
        ),
        piece_edit=_piece_edit_row(meta, piece_before, judged.piece_after, change.at),
        proposal=_proposal_row(meta, piece_before, judged.staged, llm.decision),
        entries=_entry_changes(change, judged, memory, llm.decision, confirmed),
    )


def _before_text(judged: Judgement, as_read: str) -> str:
    """The piece before the edit as snapshots and hashes keep it: its canonical text, as
    judging wrote it (the text as read when there was no accepted edit)."""
    return judged.piece_before if judged.piece_before is not None else as_read


def _entry_changes(
    change: Change,
    judged: Judgement,
    memory: Mapping[str, MemoryEntry],
    decision: LlmDecision,
    confirmed: tuple[str, ...],
) -> EntryChanges:
    """The entry records of a planned reflection: each accepted change's write with its
    quotes, a merge's target, the confirmed entries, and the entries on disk it left
    alone (recorded as `external` if nothing recorded them yet)."""
    proposed: dict[str, MemoryChange] = {}
    for ch in decision.memory_changes:
        proposed.setdefault(ch.name, ch)  # a name's accepted change is its first one
    types = {
        n: entry.type if entry is not None else getattr(memory.get(n), "type", None)
        for n, entry in judged.targets.items()
    }
    return EntryChanges.of(
        change,
        types=types,
        evidence={n: _quotes(proposed.get(n)) for n in judged.targets},
        reasons={n: _removal_reason(proposed.get(n)) for n in judged.targets},
        confirmed=confirmed,
        found={n: e.type for n, e in memory.items()},
    )


def _for_a_row(text: object, limit: int) -> str:
    """The model's text as a record keeps it: masked, bounded, without NUL (which no
    Postgres text or JSONB value may hold: the commit would fail for good)."""
    return mask_secrets(str(text)).replace("\x00", "")[:limit]


def _quotes(change: MemoryChange | None) -> list[str]:
    """The change's evidence quotes, masked and bounded (none until the decision carries
    `evidence`, SPEC §11)."""
    quotes = getattr(change, "evidence", None) or []
    return [_for_a_row(q, MAX_QUOTE_CHARS) for q in quotes[:MAX_QUOTES]]


def _removal_reason(change: MemoryChange | None) -> str | None:
    """Why an entry was removed: the entry it was merged into, or the reason given."""
    if change is None:
        return None
    if change.merge_target is not None:
        return f"merged into {change.merge_target}"
    reason = getattr(change, "reason", None)
    return _for_a_row(reason, _MAX_REASON_CHARS) if reason else None


def _piece_edit_row(
    meta: ReflectionMeta, before: str, after: str | None, at: datetime
) -> PieceEditRow | None:
    if after is None:
        return None
    return PieceEditRow.of(meta, before_sha256=sha256(before), after=after, at=at)


def _proposal_row(
    meta: ReflectionMeta, before: str, staged: str | None, decision: LlmDecision
) -> ProposalRow | None:
    """The `piece_proposals` row of a piece edit staged for review."""
    if staged is None or decision.piece_edit is None:
        return None
    return ProposalRow(
        user_id=meta.user_id,
        piece_name=meta.piece_name or "",
        reflection_job_id=meta.reflection_job_id,
        original_job_id=meta.original_job_id,
        snapshot_id=meta.snapshot_id,
        summary=mask_secrets(decision.piece_edit.summary)[:_MAX_SUMMARY_CHARS],
        yaml=staged,
        before_sha256=sha256(before),
        after_sha256=sha256(staged),
    )
