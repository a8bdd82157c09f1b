"""Undo a snapshot: restore the before state if the files still equal the after state.

The revert goes through the same journal as a reflection (so a crash mid-revert is
completed by the next lock holder), is itself snapshotted, with `kind: revert`, and is
recorded like any change: a `reflection_metrics` row with outcome `reverted` (`kind:
revert`, a job id of its own), committed with the records of the entries it touched
(`memory_entries`): an entry brought back is updated back to life, one the revert takes
away is removed with the reason `reverted <snapshot>`.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from reflection.apply import finish_pending_journals, read_or_none, roll_forward, write_journal
from reflection.errors import RevertConflictError
from reflection.frontmatter import FrontmatterError, parse_entry
from reflection.lock import UserLock
from reflection.memory import load_memory, render_index
from reflection.paths import UserPaths
from reflection.plan import snapshot_id_for
from reflection.records import (
    Change,
    EntryChanges,
    FileChange,
    Journal,
    MetricsRow,
    RevertMeta,
    SnapshotMeta,
)
from reflection.snapshot import PIECE_AFTER, PIECE_BEFORE, read_meta, snapshot_files


def _planned_files(
    paths: UserPaths, snapshot_id: str, meta: SnapshotMeta
) -> tuple[list[FileChange], list[str]]:
    """Each file to restore (before → current, after → restored) and the conflicts."""
    snap = paths.snapshot_dir(snapshot_id)
    changes: list[FileChange] = []
    conflicts: list[str] = []

    def restore(target: Path, after: str | None, before: str | None) -> None:
        rel = str(target.relative_to(paths.home))
        try:
            current = read_or_none(paths, target)
        except ValueError:  # edited by hand into something not UTF-8 or too large
            conflicts.append(f"{rel} (unreadable)")
            return
        if current != after:
            conflicts.append(rel)
        changes.append(FileChange(path=rel, before=current, after=before))

    for name in meta.memory_files:
        restore(
            paths.memory_file(name),
            read_or_none(paths, snap / "after" / f"{name}.md"),
            read_or_none(paths, snap / "before" / f"{name}.md"),
        )
    if meta.piece_edited and meta.piece_name is not None:
        restore(
            paths.piece_copy(meta.piece_name),
            read_or_none(paths, snap / PIECE_AFTER),
            read_or_none(paths, snap / PIECE_BEFORE)
            if meta.piece_before_source == "user"
            else None,
        )
    return changes, conflicts


def _index_after(paths: UserPaths, changes: list[FileChange]) -> FileChange:
    """MEMORY.md as it will be once the restored entries are back."""
    entries, _ = load_memory(paths)
    by_name = {e.name: e for e in entries}
    for ch in changes:
        p = Path(ch.path)
        if p.parent.name != "memory":
            continue
        by_name.pop(p.stem, None)
        if ch.after is not None:
            with contextlib.suppress(FrontmatterError):  # a malformed before stays unindexed
                by_name[p.stem] = parse_entry(ch.after, stem=p.stem)
    rel = str(paths.memory_index.relative_to(paths.home))
    return FileChange(
        path=rel,
        before=read_or_none(paths, paths.memory_index),
        after=render_index(by_name.values()),
    )


def _check(snapshot_id: str, changes: list[FileChange], conflicts: list[str]) -> None:
    """Refuse (`RevertConflictError`) a revert over files changed since the snapshot."""
    if not conflicts:
        return
    settled = all(ch.before == ch.after for ch in changes)  # each file at its before
    if settled and set(conflicts) <= {ch.path for ch in changes}:
        raise RevertConflictError(
            f"nothing to revert: the files of {snapshot_id} already hold their before state "
            "(already reverted?)"
        )
    raise RevertConflictError(
        f"cannot revert {snapshot_id}: changed since: {', '.join(sorted(conflicts))}"
    )


def revert_snapshot(
    *, paths: UserPaths, snapshot_id: str, lock: UserLock, engine: Engine, now: datetime
) -> Path:
    """Restore `snapshot_id`'s before state (call under the user's lock); returns the
    revert's own snapshot folder. Raises `RevertConflictError` listing changed files.

    A killed run's journal is completed first: compared with files it has still to
    write, the revert would be undone by its roll-forward."""
    finish_pending_journals(paths=paths, lock=lock, engine=engine)
    reverted = read_meta(paths, snapshot_id)
    changes, conflicts = _planned_files(paths, snapshot_id, reverted)
    _check(snapshot_id, changes, conflicts)
    if any(Path(ch.path).parent.name == "memory" for ch in changes):
        changes.append(_index_after(paths, changes))
    journal = _journal(paths, snapshot_id, reverted, changes, now)
    lock.ensure_owned()
    write_journal(paths, journal)
    roll_forward(
        paths=paths, journal=journal, lock=lock, engine=engine, duration_ms=0, recovering=False
    )
    return paths.snapshot_dir(journal.snapshot_id)


def _by_kind(changes: list[FileChange]) -> tuple[dict[str, FileChange], FileChange | None]:
    """The memory entries restored (by name) and the piece's copy, if restored."""
    memory: dict[str, FileChange] = {}
    piece = None
    for ch in changes:
        path = Path(ch.path)
        if path.parent.name == "pieces":
            piece = piece or ch
        elif path.parent.name == "memory" and path.name != "MEMORY.md":
            memory[path.stem] = ch
    return memory, piece


def _journal(
    paths: UserPaths,
    snapshot_id: str,
    reverted: SnapshotMeta,
    changes: list[FileChange],
    now: datetime,
) -> Journal:
    """The revert's journal: its files, its snapshot (`kind: revert`) and metrics row."""
    memory, piece = _by_kind(changes)
    change = Change(
        snapshot_id=snapshot_id_for(f"revert:{snapshot_id}:{now.isoformat()}", now),
        at=now,
        user_id=paths.user_id,
        piece_name=reverted.piece_name,
        original_job_id=reverted.original_job_id,
        reflection_job_id=f"revert-{uuid.uuid4()}",
        memory_before={n: c.before for n, c in memory.items()},
        memory_after={n: c.after for n, c in memory.items()},
        piece_edited=piece is not None,
        piece_from_user=piece is not None and piece.before is not None,
    )
    meta = RevertMeta.of(change, reverts=snapshot_id)
    entries = EntryChanges.of(
        change,
        types={
            n: _entry_type(n, c.after if c.after is not None else c.before)
            for n, c in memory.items()
        },
        reasons=dict.fromkeys(memory, f"reverted {snapshot_id}"),
        restores=True,
    )
    return Journal(
        snapshot_id=change.snapshot_id,
        user_id=paths.user_id,
        files=changes,
        snapshot=snapshot_files(
            change.memory_before,
            change.memory_after,
            piece.before if piece else None,
            piece.after if piece else None,
        ),
        meta=meta,
        record=MetricsRow.of_snapshot(meta),
        entries=entries,
    )


def _entry_type(name: str, text: str | None) -> str | None:
    """The type an entry's text declares (None: no text, or not an entry)."""
    if text is None:
        return None
    try:
        return parse_entry(text, stem=name).type
    except FrontmatterError:
        return None
