"""Entry records (`memory_entries`): written in the commit of the change that touched
them, and read by `reflection memory`/`why` and the consolidation pass, with the facts
of `reflection_metrics` that pass needs (who was reflected since when, the last pass).

A change's records go in its own transaction, after the row that makes it happen once
(the claim marked done, or an operator's metrics row inserted), so a replay writes
nothing twice. At most four statements, each one round trip (executemany), and only
those with rows: the records started anew (adds, and the entries found on disk without
a record), the updates, the removals, the confirmations.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from reflection.records import EntryChanges, EntryRecord, EntryWrite
from reflection.storage.db import as_utc, single_statement
from reflection.storage.tables import memory_entries, reflection_metrics

_e = memory_entries.c
_m = reflection_metrics.c
_KEY = ["user_id", "name"]
# The outcomes of reflections that asked the LLM (failed and duplicate runs read nothing).
_REFLECTED = ("applied", "abstained", "rejected")


def _insert(dialect_name: str) -> Any:
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(memory_entries)


@functools.cache
def _start(dialect_name: str) -> Any:
    """A record started anew: an add by the worker replaces whatever record the name had
    (a removed entry's); an entry found on disk gets one only if it has none, or if its
    record says removed (it was written again by hand)."""
    stmt = _insert(dialect_name)
    ex = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=_KEY,
        set_={c.name: ex[c.name] for c in memory_entries.c if c.name not in _KEY},
        where=_e.removed_at.is_not(None) | (ex.origin == "worker"),
    )


@functools.cache
def _update(dialect_name: str) -> Any:
    """An update (or a revert bringing the entry back): the latest write and its evidence,
    alive again; an entry without a record gets one (`external`: written outside)."""
    stmt = _insert(dialect_name)
    ex = stmt.excluded
    latest = ("type", "updated_at", "updated_by_job", "evidence")
    alive = dict.fromkeys(("removed_at", "removed_by", "removed_reason"))
    return stmt.on_conflict_do_update(index_elements=_KEY, set_={c: ex[c] for c in latest} | alive)


@functools.cache
def _remove(dialect_name: str) -> Any:
    """A removal: when, by whom and why; an entry without a record gets one, removed."""
    stmt = _insert(dialect_name)
    ex = stmt.excluded
    removal = ("removed_at", "removed_by", "removed_reason")
    return stmt.on_conflict_do_update(index_elements=_KEY, set_={c: ex[c] for c in removal})


_CONFIRM = (
    update(memory_entries)
    .where(
        _e.user_id == bindparam("uid"),
        _e.name.in_(bindparam("names", expanding=True)),
        _e.removed_at.is_(None),
    )
    .values(confirmations=_e.confirmations + 1, confirmed_at=bindparam("at"))
)


@dataclass(frozen=True)
class RunRef:
    """A run as an entry's record names it: its original job, snapshot and kind."""

    original_job_id: str
    snapshot_id: str | None
    kind: str


def _row(changes: EntryChanges, name: str, type_: str | None, **fields: Any) -> dict[str, Any]:
    """A full row (executemany needs one shape): an `external` record made at `at`."""
    row = {
        "user_id": changes.user_id,
        "name": name,
        "type": type_,
        "origin": "external",
        "created_at": changes.at,
        "created_by_job": None,
        "updated_at": changes.at,
        "updated_by_job": None,
        "confirmed_at": None,
        "confirmations": 0,
        "evidence": None,
        "removed_at": None,
        "removed_by": None,
        "removed_reason": None,
    }
    return row | fields


def _evidence(changes: EntryChanges, w: EntryWrite) -> dict[str, Any]:
    return {"job_id": changes.job, "quotes": w.evidence}


def entry_rows(changes: EntryChanges) -> dict[str, list[dict[str, Any]]]:
    """The rows of each statement (`start`, `update`, `remove`), in that order."""
    by: dict[str, list[EntryWrite]] = {"created": [], "updated": [], "removed": []}
    for w in changes.writes:
        by[w.action].append(w)
    job = changes.job
    start = [
        _row(
            changes,
            w.name,
            w.type,
            origin="worker",
            created_by_job=job,
            updated_by_job=job,
            evidence=_evidence(changes, w),
        )
        for w in by["created"]
    ] + [_row(changes, name, type_) for name, type_ in sorted(changes.found.items())]
    return {
        "start": start,
        "update": [
            _row(changes, w.name, w.type, updated_by_job=job, evidence=_evidence(changes, w))
            for w in by["updated"]
        ],
        "remove": [
            _row(
                changes,
                w.name,
                w.type,
                removed_at=changes.at,
                removed_by=job,
                removed_reason=w.reason,
            )
            for w in by["removed"]
        ],
    }


_STATEMENTS = {"start": _start, "update": _update, "remove": _remove}


def write_entries(conn: Connection, changes: EntryChanges) -> None:
    """Write a change's entry records in the caller's transaction (call it once per
    change: confirmations are counted, not set)."""
    for kind, rows in entry_rows(changes).items():
        if rows:
            conn.execute(_STATEMENTS[kind](conn.dialect.name), rows)
    if changes.confirmed:
        params = {"uid": changes.user_id, "names": changes.confirmed, "at": changes.at}
        conn.execute(_CONFIRM, params)


def _records(rows: Iterable[Any]) -> list[EntryRecord]:
    out = []
    for r in rows:
        row = dict(r)
        for col in ("created_at", "updated_at", "confirmed_at", "removed_at"):
            row[col] = as_utc(row[col])
        out.append(EntryRecord.model_validate(row))
    return out


def entry_records(
    *, engine: Engine, user_id: str, include_removed: bool = False
) -> list[EntryRecord]:
    """A user's entry records by name: the live ones, or every one ever recorded."""
    q = select(memory_entries).where(_e.user_id == user_id).order_by(_e.name)
    if not include_removed:
        q = q.where(_e.removed_at.is_(None))
    with single_statement(engine) as conn:
        return _records(conn.execute(q).mappings())


def live_entries(*, engine: Engine, user_id: str) -> list[EntryRecord]:
    """A user's live entries with their records (age, confirmations, last confirmed, last
    changed: `EntryRecord`), by name; what the consolidation pass weighs."""
    return entry_records(engine=engine, user_id=user_id)


def entry_record(*, engine: Engine, user_id: str, name: str) -> EntryRecord | None:
    """One entry's record (removed or not), or None when it was never recorded."""
    q = select(memory_entries).where(_e.user_id == user_id, _e.name == name)
    with single_statement(engine) as conn:
        found = _records(conn.execute(q).mappings())
    return found[0] if found else None


def users_reflected_since(*, engine: Engine, since: datetime) -> list[str]:
    """The users with a reflection that asked the LLM at or after `since`, sorted."""
    q = (
        select(_m.user_id)
        .where(_m.kind == "reflection", _m.outcome.in_(_REFLECTED), _m.created_at >= since)
        .distinct()
        .order_by(_m.user_id)
    )
    with single_statement(engine) as conn:
        return [str(u) for u in conn.execute(q).scalars()]


def last_consolidation_at(*, engine: Engine, user_id: str) -> datetime | None:
    """When the user's last consolidation pass was recorded (any outcome: a failed pass
    counts, so a pass that keeps failing is not retried after every reflection)."""
    q = select(func.max(_m.created_at)).where(_m.user_id == user_id, _m.kind == "consolidation")
    with single_statement(engine) as conn:
        return as_utc(conn.execute(q).scalar())


def runs_by_id(*, engine: Engine, reflection_job_ids: Iterable[str]) -> dict[str, RunRef]:
    """The original job and snapshot of each of these runs (reflections, reverts,
    approvals) that has a metrics row: what an entry's record points back to."""
    ids = sorted({i for i in reflection_job_ids if i})
    if not ids:
        return {}
    q = select(_m.reflection_job_id, _m.original_job_id, _m.snapshot_id, _m.kind).where(
        _m.reflection_job_id.in_(ids)
    )
    with single_statement(engine) as conn:
        return {
            str(rid): RunRef(str(job), snap, str(kind))
            for rid, job, snap, kind in conn.execute(q).all()
        }
