"""`reflection memory` and `why`: a user's entries with their records (`memory_entries`),
and the jobs and quotes behind one entry.

The records say who wrote each entry and when; the user's folder says what exists now.
Both are shown: an entry on disk that no run has recorded yet (written by hand, until the
user's next reflection records it as `external`), and a live record whose file is gone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.table import Table

from reflection import storage
from reflection.cli.common import (
    JsonOpt,
    emit_json,
    fail,
    handled,
    labelled,
    not_found,
    out,
    plain,
    services,
)
from reflection.cli.snapshots import UserArg
from reflection.constants import SLUG_RE
from reflection.errors import UnsafePathError
from reflection.memory import load_memory
from reflection.models import MemoryEntry
from reflection.paths import UserPaths
from reflection.records import EntryRecord
from reflection.settings import get_settings
from reflection.storage import RunRef

NameArg = Annotated[str, typer.Argument(help="The memory entry's name (its file's stem).")]


def format_age(delta: timedelta | None) -> str:
    """A duration as an operator reads it in a table: `45s`, `12m`, `5h`, `3d`, `14w`."""
    if delta is None:
        return "-"
    seconds = max(0, int(delta.total_seconds()))
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= (2 if unit == "w" else 1) * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Listed:
    """One line of `reflection memory`: an entry's record, its file, or both."""

    name: str
    record: EntryRecord | None
    on_disk: bool
    type: str | None

    def to_json(self, now: datetime, runs: Mapping[str, RunRef]) -> dict[str, Any]:
        """The line for `--json`: the record's columns, its age, and the runs it names."""
        rec = self.record
        data: dict[str, Any] = {"name": self.name, "type": self.type, "on_disk": self.on_disk}
        data["recorded"] = rec is not None
        if rec is None:
            return data | {"origin": "external", "live": True}
        return (
            data
            | rec.model_dump(mode="json", exclude={"user_id", "name", "type"})
            | {
                "live": rec.live,
                "age_seconds": int(rec.age(now).total_seconds()),
                "created_by": _run_json(runs, rec.created_by_job),
                "updated_by": _run_json(runs, rec.updated_by_job),
            }
        )


def listing(
    records: Iterable[EntryRecord], on_disk: Mapping[str, MemoryEntry], *, removed: bool
) -> list[Listed]:
    """Every record (the live ones unless `removed`) and every entry on disk, by name
    (pure); the type is the file's, else the record's."""
    by_name = {r.name: r for r in records if removed or r.live}
    listed: list[Listed] = []
    for name in sorted(set(by_name) | set(on_disk)):
        rec, entry = by_name.get(name), on_disk.get(name)
        kind = entry.type if entry is not None else getattr(rec, "type", None)
        listed.append(Listed(name, rec, entry is not None, kind))
    return listed


def _run_json(runs: Mapping[str, RunRef], job: str | None) -> dict[str, Any] | None:
    ref = runs.get(job or "")
    return None if ref is None else asdict(ref)


def _who(runs: Mapping[str, RunRef], job: str | None) -> str:
    """A job as a table cell: the platform's job id (and the kind, unless a reflection)."""
    if job is None:
        return "-"
    ref = runs.get(job)
    if ref is None:
        return job
    return ref.original_job_id + ("" if ref.kind == "reflection" else f" ({ref.kind})")


def _jobs(records: Iterable[EntryRecord]) -> list[str]:
    """The job ids the records name (who created, updated, removed them)."""
    return [
        job
        for r in records
        for job in (
            r.created_by_job,
            r.updated_by_job,
            r.removed_by,
            getattr(r.evidence, "job_id", None),
        )
        if job
    ]


def _paths(user: str) -> UserPaths:
    try:
        return UserPaths(get_settings().user_folder_root, user)
    except UnsafePathError as e:
        fail(str(e), 2)


def _on_disk(paths: UserPaths) -> dict[str, MemoryEntry]:
    entries, _ = load_memory(paths)
    return {e.name: e for e in entries}


@handled
def memory(
    user: UserArg,
    all_: Annotated[
        bool, typer.Option("--all", help="Also the removed entries (who removed them, why).")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """A user's entries: type, age, confirmations, last confirmation, origin, and the job
    that created and last updated each (from their records in `memory_entries`)."""
    paths = _paths(user)
    with services() as svc:
        records = storage.entry_records(engine=svc.engine, user_id=user, include_removed=all_)
        if not records and not paths.home.is_dir():
            not_found(f"user {user!r} has no folder under {paths.root} and no entry records")
        rows = listing(records, _on_disk(paths), removed=all_)
        runs = storage.runs_by_id(engine=svc.engine, reflection_job_ids=_jobs(records))
    now = datetime.now(UTC)
    if json_:
        emit_json([r.to_json(now, runs) for r in rows])
    elif rows:
        out.print(_table(user, rows, runs, now, all_))
    else:
        out.print(f"no memory entries for user {user}", markup=False)


def _table(
    user: str, rows: list[Listed], runs: Mapping[str, RunRef], now: datetime, all_: bool
) -> Table:
    table = Table(title=plain(f"memory of {user}"))
    table.add_column("name", no_wrap=True)
    columns = ["type", "origin", "age", "conf", "last confirmed", "created by", "updated by"]
    for col in (*columns, *(["removed"] if all_ else []), "note"):
        table.add_column(col, overflow="fold")
    for r in rows:
        rec = r.record
        cells: list[str] = [r.name, r.type or "-"]
        if rec is None:
            cells += ["external", "-", "-", "-", "-", "-"]
        else:
            confirmed = rec.confirmed_at
            cells += [
                rec.origin,
                format_age(rec.age(now)),
                str(rec.confirmations),
                format_age(now - confirmed) + " ago" if confirmed else "never",
                _who(runs, rec.created_by_job),
                _who(runs, rec.updated_by_job),
            ]
        if all_:
            cells.append(_removed(rec, runs, now))
        cells.append(_note(r))
        table.add_row(*map(plain, cells))
    return table


def _removed(rec: EntryRecord | None, runs: Mapping[str, RunRef], now: datetime) -> str:
    if rec is None or rec.removed_at is None:
        return ""
    reason = f": {rec.removed_reason}" if rec.removed_reason else ""
    return f"{format_age(now - rec.removed_at)} ago by {_who(runs, rec.removed_by)}{reason}"


def _note(r: Listed) -> str:
    if r.record is None:
        return "not recorded yet"
    if r.record.live and not r.on_disk:
        return "file missing"
    if not r.record.live and r.on_disk:
        return "on disk again"
    return ""


@handled
def why(user: UserArg, name: NameArg, json_: JsonOpt = False) -> None:
    """The jobs and quotes behind one entry: who created and last updated it, on what
    evidence, when it was last confirmed, and who removed it and why."""
    if not SLUG_RE.fullmatch(name):
        fail(f"{name!r} is not an entry name ({SLUG_RE.pattern})", 2)
    paths = _paths(user)
    with services() as svc:
        record = storage.entry_record(engine=svc.engine, user_id=user, name=name)
        on_disk = name in _on_disk(paths)
        if record is None and not on_disk:
            not_found(f"user {user!r} has no entry {name!r} (see `reflection memory {user} --all`)")
        jobs = _jobs([] if record is None else [record])
        runs = storage.runs_by_id(engine=svc.engine, reflection_job_ids=jobs)
    if json_:
        emit_json(
            {
                "user": user,
                "name": name,
                "on_disk": on_disk,
                "record": None if record is None else record.model_dump(mode="json"),
                "runs": {rid: _run_json(runs, rid) for rid in runs},
            }
        )
        return
    if record is None:
        out.print(
            f"{name} is on disk without a record: written outside the worker; the user's "
            "next reflection records it (origin external)",
            markup=False,
        )
        return
    _print_why(record, runs, on_disk)


def why_lines(rec: EntryRecord, runs: Mapping[str, RunRef], on_disk: bool) -> list[tuple[str, str]]:
    """What `why` says of an entry's record, label by label (pure)."""
    state = ("live" if on_disk else "live (file missing)") if rec.live else "removed"
    lines = [
        ("name", rec.name),
        ("type", rec.type or "-"),
        ("origin", rec.origin),
        ("state", state),
        ("created", _when_by(rec.created_at, rec.created_by_job, runs)),
    ]
    if rec.updated_by_job is not None or rec.updated_at != rec.created_at:
        lines.append(("last updated", _when_by(rec.updated_at, rec.updated_by_job, runs)))
    confirmed = rec.confirmed_at
    last = f"{rec.confirmations} time(s), last {_time(confirmed)}" if confirmed else "never"
    lines.append(("confirmed", last))
    if rec.removed_at is not None:
        lines.append(("removed", _when_by(rec.removed_at, rec.removed_by, runs)))
        lines.append(("reason", rec.removed_reason or "-"))
    return lines


def _print_why(rec: EntryRecord, runs: Mapping[str, RunRef], on_disk: bool) -> None:
    for label, value in why_lines(rec, runs, on_disk):
        out.print(labelled(label, value))
    out.rule("evidence of the latest write")
    if rec.evidence is None or not rec.evidence.quotes:
        out.print("(no quotes recorded)")
        return
    out.print(labelled("job", _who(runs, rec.evidence.job_id)))
    for quote in rec.evidence.quotes:
        out.print(plain(f"> {quote}", multiline=True))


def _time(at: datetime) -> str:
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _when_by(at: datetime, job: str | None, runs: Mapping[str, RunRef]) -> str:
    """`<time> by job <original> (<kind> <its id>, snapshot <id>)`."""
    if job is None:
        return f"{_time(at)} outside the worker"
    ref = runs.get(job)
    if ref is None:
        return f"{_time(at)} by {job}"
    snapshot = f", snapshot {ref.snapshot_id}" if ref.snapshot_id else ""
    return f"{_time(at)} by job {ref.original_job_id} ({ref.kind} {job}{snapshot})"
