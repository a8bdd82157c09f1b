"""`reflection history`, `show` and `revert`: a user's snapshots, one in full, and undo."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from reflection.apply import read_or_none
from reflection.cli.common import (
    JsonOpt,
    emit_json,
    fail,
    handled,
    labelled,
    mark,
    not_found,
    out,
    plain,
    print_diff,
    require_db,
    services,
    unified_diff,
)
from reflection.cli.tables import Column, cell, print_listing
from reflection.errors import UnsafePathError
from reflection.lock import operator_lock
from reflection.models import Verdict
from reflection.paths import UserPaths
from reflection.records import AskedMeta, RevertMeta, SnapshotMeta, describe_invalid
from reflection.revert import revert_snapshot
from reflection.settings import get_settings
from reflection.snapshot import PIECE_AFTER, PIECE_BEFORE, PIECE_PROPOSED, iter_index, read_meta

UserArg = Annotated[str, typer.Argument(help="The user id (their folder's name).")]
SnapshotArg = Annotated[str, typer.Argument(help="A snapshot id, as `reflection history` lists.")]


def user_paths(user_id: str) -> UserPaths:
    """The user's folder; a user id that is not a safe folder name, or has no folder, is
    not found (exit 4)."""
    try:
        paths = UserPaths(get_settings().user_folder_root, user_id)
    except UnsafePathError as e:
        not_found(f"user {user_id!r} names no user: {e}")
    if not paths.home.is_dir():
        not_found(f"user {user_id!r} has no folder under {paths.root}")
    return paths


def load_snapshot(paths: UserPaths, snapshot_id: str) -> SnapshotMeta:
    """A snapshot's meta.json, or a clear failure (an unknown snapshot: exit 4)."""
    try:
        paths.snapshot_dir(snapshot_id)
    except UnsafePathError:
        not_found(f"{snapshot_id!r} is not a snapshot id")
    try:
        return read_meta(paths, snapshot_id)
    except FileNotFoundError:
        not_found(
            f"user {paths.user_id!r} has no snapshot {snapshot_id!r} (see `reflection history`)"
        )
    except ValidationError as e:
        fail(f"snapshot {snapshot_id}: meta.json is malformed ({describe_invalid(e)})")
    except ValueError as e:
        fail(f"snapshot {snapshot_id}: meta.json is unreadable ({e})")


def snapshot_diffs(paths: UserPaths, meta: SnapshotMeta) -> list[dict[str, str]]:
    """Each changed file's unified diff: before/ vs after/ and the piece's before vs after
    (or vs the staged proposal)."""
    folder = paths.snapshot_dir(meta.snapshot_id)
    diffs = []
    for name in meta.memory_files:
        rel = f"memory/{name}.md"
        before, after = (
            read_or_none(paths, folder / "before" / f"{name}.md"),
            read_or_none(paths, folder / "after" / f"{name}.md"),
        )
        diffs.append({"path": rel, "diff": unified_diff(rel, before, after)})
    piece = f"pieces/{meta.piece_name}.yaml"
    piece_before = read_or_none(paths, folder / PIECE_BEFORE)
    for target, label in ((PIECE_AFTER, piece), (PIECE_PROPOSED, f"{piece} (proposed)")):
        after = read_or_none(paths, folder / target)
        if after is not None:
            diffs.append({"path": label, "diff": unified_diff(piece, piece_before, after)})
    return diffs


def print_verdicts(verdicts: Iterable[Verdict]) -> None:
    """Each proposed change, accepted or rejected with its code."""
    table = Table(title="decisions")
    for col in ("", "kind", "op", "name", "code", "detail"):
        table.add_column(col)
    for v in verdicts:
        table.add_row(mark(v.accepted), *map(plain, (v.kind, v.op, v.name, v.code.value, v.detail)))
    if table.row_count:
        out.print(table)
    else:
        out.print("no changes proposed (abstained)")


def print_file_diffs(diffs: Sequence[Mapping[str, str]]) -> None:
    for d in diffs:
        out.rule(plain(d["path"]))
        if d["diff"]:
            print_diff(d["diff"])
        else:
            out.print("(no difference)")


@handled
def history(
    user: UserArg,
    piece: Annotated[str | None, typer.Option(help="Only this piece's snapshots.")] = None,
    limit: Annotated[int, typer.Option(help="The newest N (0 = all).")] = 50,
    json_: JsonOpt = False,
) -> None:
    """A user's snapshots (reflections, reverts, approvals), newest first."""
    rows = [r for r in iter_index(user_paths(user)) if piece is None or r.piece_name == piece]
    rows.reverse()
    rows = rows[:limit] if limit > 0 else rows
    if json_:
        emit_json([r.to_json() for r in rows])
        return
    if not rows:
        out.print(f"no snapshots for user {user}", markup=False)
        return
    print_listing(
        f"snapshots of {user}",
        HISTORY_COLUMNS,
        [
            (
                *map(cell, (r.snapshot_id, r.kind, r.outcome, r.original_job_id, r.piece_name)),
                cell(r.memory_changes),
                "yes" if r.piece_edited else "",
                cell(r.rejected),
            )
            for r in rows  # a snapshot id starts with its time (UTC)
        ],
    )


HISTORY_COLUMNS = (
    Column("snapshot", "snapshot"),
    Column("kind", "kind"),
    Column("outcome", "outcome"),
    Column("job", "job"),
    Column("piece", "piece"),
    Column("mem", "mem"),
    Column("piece edit", "piece_edit"),
    Column("rej", "rej"),
)


@handled
def show(user: UserArg, snapshot: SnapshotArg, json_: JsonOpt = False) -> None:
    """One snapshot in full: what was decided and the diff of every file it changed."""
    paths = user_paths(user)
    meta = load_snapshot(paths, snapshot)
    diffs = snapshot_diffs(paths, meta)
    shown = meta.model_dump(mode="json", exclude_unset=True)  # as meta.json has it
    if json_:
        emit_json({"meta": shown, "diffs": diffs})
        return
    keys = (
        "snapshot_id",
        "kind",
        "created_at",
        "original_job_id",
        "reflection_job_id",
        "reverts",
        "piece_name",
        "job_outcome",
        "outcome",
        "model",
        "tokens_in",
        "tokens_out",
        "piece_staged",
    )
    for k in keys:
        if k in shown:
            out.print(labelled(k, shown[k]))
    if isinstance(meta, AskedMeta) and meta.reasoning:
        out.rule("reasoning")
        out.print(plain(meta.reasoning, multiline=True))
    if not isinstance(meta, RevertMeta):
        print_verdicts(meta.verdicts)
    print_file_diffs(diffs)


@handled
def revert(user: UserArg, snapshot: SnapshotArg, json_: JsonOpt = False) -> None:
    """Undo a snapshot (conflict-safe).

    Restores the before state if the files still equal the after state, else refuses
    naming the changed files. The revert is itself a snapshot and a metrics row
    (outcome `reverted`)."""
    paths = user_paths(user)
    meta = load_snapshot(paths, snapshot)
    if not meta.memory_files and not meta.piece_edited:
        fail(f"snapshot {snapshot} changed no file; there is nothing to revert")
    with services() as svc:
        require_db(svc.engine)  # the revert's metrics row must be recordable
        with operator_lock(svc.settings, svc.redis, user) as lock:
            folder = revert_snapshot(
                paths=paths,
                snapshot_id=snapshot,
                lock=lock,
                engine=svc.engine,
                now=datetime.now(UTC),
            )
    result = read_meta(paths, folder.name)
    if json_:
        emit_json(result.model_dump(mode="json", exclude_unset=True))
        return
    out.print(f"reverted {snapshot}; the revert is snapshot {folder.name}", markup=False)
