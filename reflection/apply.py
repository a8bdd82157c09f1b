"""Write a planned change (`reflection.plan`) crash-safely, through a journal rolled
forward under the user's lock.

Inside the user lock a run writes a journal holding every file's before and after text,
the snapshot and the database rows, then rolls it forward: files, snapshot, index line,
one Postgres transaction (metrics row, piece_edits row, entry records, claim marked
done), and deletes the journal. Every step is idempotent, so a worker killed anywhere
leaves either no journal (nothing was written) or a journal that the next holder of the
user's lock completes exactly once. Reverts and approvals go through the same journal.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

from sqlalchemy import Engine

from reflection import storage
from reflection.clamp import INT32_MAX, clamp_record
from reflection.errors import DataRejectedError, UnsafePathError
from reflection.faults import fault_point
from reflection.fsio import atomic_delete, atomic_write, read_text_limited, sync_filesystem
from reflection.lock import UserLock
from reflection.paths import UserPaths
from reflection.records import Journal, MetricsRow
from reflection.snapshot import write_snapshot
from reflection.storage.batches import StaleBatchError

log = logging.getLogger(__name__)

_MAX_JOURNAL_BYTES = 64 * 1024 * 1024
# The metrics row's error_code of a run whose rows Postgres refused and that was
# committed clamped (the outcome stays the run's; docs/runbook.md).
COMMIT_CLAMPED = "commit_clamped"


def read_or_none(paths: UserPaths, path: Path) -> str | None:
    """A file of the user's (up to 1 MiB), or None if it is missing; read through no link
    below the home."""
    try:
        return read_text_limited(path, 1024 * 1024, root=paths.home)
    except FileNotFoundError:
        return None


def replaceable(paths: UserPaths, path: Path) -> str | None:
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
    """Whether a killed run of this job (or of a batch that took it) left a journal (it
    must be completed, not dropped)."""
    return any(
        j.original_job_id == original_job_id
        or any(f.original_job_id == original_job_id for f in j.followers)
        for j in pending_journals(paths)
    )


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
    # Ownership is confirmed before each group of writes (files, then snapshot and rows)
    # and before each write, with Redis once it has not been for a third of the lock's
    # expiry (a paused run); the commit's fence is the final judge anyway.
    lock.before_write()
    _write_files(paths, journal, lock, recovering)
    fault_point("after_files")
    write_snapshot(
        paths,
        journal.meta,
        journal.snapshot,
        recovering=recovering,
        before_write=lock.before_write,
        durable=False,
    )
    # The files and snapshot were renamed into place without an fsync each: one sync of
    # the filesystem makes them all durable before the rows say the run is done (the
    # journal, fsynced, covers a power cut before this point; SPEC §14).
    sync_filesystem(paths.home)
    fault_point("after_snapshot")
    lock.before_write()
    committed = _commit_rows(engine, journal, duration_ms, recovering)
    fault_point("after_commit")
    if committed or recovering:
        # Not made durable: a journal back after a power cut finds its claim done and
        # is only deleted (above).
        atomic_delete(journal_path(paths, journal.snapshot_id), root=paths.home, durable=False)
    # else: a stale writer (its claim was taken over) wrote these files under the lock
    # but may not commit; its journal stays for the next lock holder, who commits it
    # fenceless, so the files and the rows still end up written exactly once.
    return committed


def _write_files(paths: UserPaths, journal: Journal, lock: UserLock, recovering: bool) -> None:
    """Bring each of the journal's files to its after state (a file another writer changed
    since a killed run stopped is left as that writer left it)."""
    for n, change in enumerate(journal.files):
        if n:
            fault_point("between_writes")
            lock.before_write()
        target = paths.home / change.path  # the rooted I/O below refuses any way out
        current = replaceable(paths, target)
        if recovering and current not in (change.before, change.after):
            # Written since the killed run stopped (by hand, or by an operator command of
            # a release that did not finish journals first): the later write stands.
            log.warning(
                "journal %s: %s changed since; left as it is", journal.snapshot_id, change.path
            )
        elif change.after is None:
            atomic_delete(target, root=paths.home, durable=False)
        elif current != change.after:
            atomic_write(target, change.after, root=paths.home, durable=False)


def _commit_run(
    engine: Engine,
    journal: Journal,
    metrics: MetricsRow,
    recovering: bool,
    duration_ms: int,
    *,
    whole: bool = True,
) -> bool:
    """`storage.commit_run` of the journal's rows (`whole=False`: the metrics row alone)."""
    return storage.commit_run(
        engine=engine,
        original_job_id=journal.original_job_id,
        fence=None if recovering else journal.fence,
        metrics=metrics.model_copy(update={"duration_ms": min(duration_ms, INT32_MAX)}),
        piece_edit=journal.piece_edit if whole else None,
        proposal=journal.proposal if whole else None,
        entries=journal.entries if whole else None,
        followers=journal.followers,  # a batch's jobs are done with it, clamped or not
    )


def _commit_clamped(
    engine: Engine, journal: Journal, recovering: bool, duration_ms: int, error: Exception
) -> bool:
    """Postgres refused the journal's rows (SQLSTATE 22 or 23: an old journal's count
    past int32, a NUL in a text): replaying them can never succeed, and would block the
    user's every later run. Commit them clamped (`reflection.clamp`), the metrics row
    saying `commit_clamped`; if even that is refused, the clamped metrics row alone. The
    claim is marked done either way, and the log says what was dropped."""
    assert journal.metrics is not None
    row = clamp_record(journal.metrics).model_copy(update={"error_code": COMMIT_CLAMPED})
    fields = {"error_code": COMMIT_CLAMPED, "snapshot_id": journal.snapshot_id}
    log.error(
        "journal %s of job %s: Postgres refused its rows (%s); committing them clamped",
        journal.snapshot_id,
        journal.original_job_id,
        error,
        extra=fields,
    )
    clamped = journal.model_copy(
        update={
            name: clamp_record(value)
            for name in ("piece_edit", "proposal", "entries")
            if (value := getattr(journal, name)) is not None
        }
    )
    try:
        return _commit_run(engine, clamped, row, recovering, duration_ms)
    except DataRejectedError as again:
        log.error(
            "journal %s: its clamped rows were refused too (%s); committing its metrics row "
            "alone: its piece edit, proposal and entry records are not recorded",
            journal.snapshot_id,
            again,
            extra=fields,
        )
        return _commit_run(engine, clamped, row, recovering, duration_ms, whole=False)


def _commit_rows(engine: Engine, journal: Journal, duration_ms: int, recovering: bool) -> bool:
    """A run's rows (entry records included) and its claim marked done, in one
    transaction (False: stale); an operator's change has no run to commit, only its
    metrics row and entry records (if any), once."""
    if journal.metrics is not None:
        try:
            return _commit_run(engine, journal, journal.metrics, recovering, duration_ms)
        except DataRejectedError as e:
            return _commit_clamped(engine, journal, recovering, duration_ms, e)
        except StaleBatchError:  # a follower was taken back: stale, like a lost claim
            return False
    if journal.record is not None:
        storage.record_change(engine=engine, row=journal.record, entries=journal.entries)
    return True
