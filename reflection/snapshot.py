"""Snapshots: what each reflection changed, for audit and undo (SPEC section 6).

    <uid>/reflections/<snapshot_id>/meta.json
                                   before/<name>.md   after/<name>.md
                                   piece.before.yaml  piece.after.yaml
                                   piece.proposed.yaml (review mode: staged, not applied)
    <uid>/reflections/index.jsonl   one line per snapshot

Writing is idempotent (every file is rewritten whole, the index line is appended only if
absent) so a redelivered run can finish a snapshot a killed worker started.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from pydantic import ValidationError

from reflection.fsio import append_line, atomic_write, open_regular, read_text_limited
from reflection.paths import FolderInPlaceError, NotRegularFileError, UserPaths
from reflection.records import IndexLine, SnapshotMeta, parse_meta

log = logging.getLogger(__name__)

META = "meta.json"
PIECE_BEFORE = "piece.before.yaml"
PIECE_AFTER = "piece.after.yaml"
PIECE_PROPOSED = "piece.proposed.yaml"  # a piece edit staged for review, not applied
_MAX_META_BYTES = 4 * 1024 * 1024


def snapshot_files(
    memory_before: Mapping[str, str | None],
    memory_after: Mapping[str, str | None],
    piece_before: str | None,
    piece_after: str | None,
) -> dict[str, str]:
    """The snapshot folder's content files (relative path → text), meta.json aside."""
    files: dict[str, str] = {}
    for name, text in memory_before.items():
        if text is not None:
            files[f"before/{name}.md"] = text
    for name, text in memory_after.items():
        if text is not None:
            files[f"after/{name}.md"] = text
    # `piece_before` is given only for a piece edit; an edit whose after is None (a
    # revert that removes the user's copy) still keeps its before, for its own revert.
    if piece_before is not None:
        files[PIECE_BEFORE] = piece_before
    if piece_after is not None:
        files[PIECE_AFTER] = piece_after
    return files


def write_snapshot(
    paths: UserPaths,
    meta: SnapshotMeta,
    files: Mapping[str, str],
    *,
    recovering: bool,
    before_write: Callable[[], None],
    durable: bool = True,
) -> Path:
    """Write the snapshot folder (content first, meta.json last) and its index line,
    calling `before_write` (the user lock's check) before each write. `durable=False`:
    no fsyncs; the caller syncs the filesystem once (`fsio.sync_filesystem`)."""
    folder = paths.snapshot_dir(meta.snapshot_id)
    for rel, text in files.items():
        before_write()
        atomic_write(folder / rel, text, root=paths.home, durable=durable)  # no way out
    meta_json = json.dumps(meta.to_json(), indent=2, ensure_ascii=False, sort_keys=True)
    before_write()
    atomic_write(folder / META, meta_json, root=paths.home, durable=durable)
    if not (recovering and _indexed(paths, meta.snapshot_id)):
        line = json.dumps(meta.index_line().to_json(), ensure_ascii=False)
        before_write()
        _append_index(paths, line, durable)
    return folder


def _append_index(paths: UserPaths, line: str, durable: bool = True) -> None:
    """Append `line` to index.jsonl. A FIFO, socket or device planted there holds no
    line to keep: it is replaced (by a rename) with an index holding this line. A
    folder there is refused (FolderInPlaceError), like any folder where a file goes."""
    try:
        append_line(paths.snapshot_index, line, root=paths.home, durable=durable)
    except FolderInPlaceError:
        raise
    except NotRegularFileError as e:
        log.warning("%s; replaced by a new index", e)
        atomic_write(paths.snapshot_index, line + "\n", root=paths.home, durable=durable)


def iter_index(paths: UserPaths) -> Iterator[IndexLine]:
    """Index lines, oldest first; a torn or garbled line is reported and skipped.

    A missing index has no lines; one that is not a regular file raises
    NotRegularFileError (never a wait on a planted FIFO)."""
    try:
        f = os.fdopen(open_regular(paths.snapshot_index, os.O_RDONLY, root=paths.home), "rb")
    except FileNotFoundError:
        return
    with f:
        for n, raw in enumerate(f, 1):
            try:
                item = json.loads(raw)
            except ValueError:
                log.warning("%s line %d is not JSON; skipped", paths.snapshot_index, n)
                continue
            if not isinstance(item, dict):
                continue
            try:
                yield IndexLine.model_validate(item)
            except ValidationError:
                log.warning("%s line %d is not a snapshot's line; skipped", paths.snapshot_index, n)


def _indexed(paths: UserPaths, snapshot_id: str) -> bool:
    try:
        return any(item.snapshot_id == snapshot_id for item in iter_index(paths))
    except FolderInPlaceError:
        raise
    except NotRegularFileError:
        return False  # a planted FIFO: replaced by the append that follows


def read_meta(paths: UserPaths, snapshot_id: str) -> SnapshotMeta:
    """A snapshot's meta.json as its kind's record (raises FileNotFoundError, or
    ValueError when it is not JSON or malformed; a FIFO or another special file there is
    NotRegularFileError, a ValueError, never a wait)."""
    meta = paths.snapshot_dir(snapshot_id) / META
    data = json.loads(read_text_limited(meta, _MAX_META_BYTES, root=paths.home))
    if not isinstance(data, dict):
        raise ValueError("meta.json is not an object")
    return parse_meta(data, snapshot_id)
