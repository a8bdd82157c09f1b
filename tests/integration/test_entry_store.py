"""The entry-record store (`reflection.storage.entries`) on the real Postgres and on
SQLite (the embedded demo): the statements a commit runs, and the reads the consolidation
pass and the CLI make."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, text

from reflection import migrations, storage
from reflection.clients import make_engine
from reflection.models import Outcome
from reflection.records import EntryChanges, EntryEvidence, EntryWrite, MetricsRow
from reflection.storage import reflection_metrics

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database of each dialect."""
    if request.param == "postgresql":
        pg: Engine = request.getfixturevalue("pg_engine")
        yield pg
        return
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    migrations.upgrade(url)
    lite = make_engine(url)
    yield lite
    lite.dispose()


def _commit(engine: Engine, changes: EntryChanges) -> None:
    with engine.begin() as conn:
        storage.write_entries(conn, changes)


def _changes(at: datetime, job: str, **kw: Any) -> EntryChanges:
    return EntryChanges(user_id="alice", job=job, at=at, **kw)


def _write(name: str, action: str, **kw: Any) -> EntryWrite:
    return EntryWrite.model_validate({"name": name, "action": action, "type": "project"} | kw)


def test_records_follow_an_entry_through_its_life(engine: Engine) -> None:
    """Created with its quotes, confirmed, updated, removed, added anew: each statement
    leaves the record the next one builds on."""
    quotes = ["the deploy runs on Fridays"]
    _commit(engine, _changes(T0, "r1", writes=[_write("a", "created", evidence=quotes)]))
    _commit(engine, _changes(T0 + DAY, "r2", confirmed=["a", "never-written"]))
    _commit(engine, _changes(T0 + 2 * DAY, "r3", writes=[_write("a", "updated", type="user")]))
    a = storage.entry_record(engine=engine, user_id="alice", name="a")
    assert a is not None
    assert (a.origin, a.type, a.created_at, a.created_by_job) == ("worker", "user", T0, "r1")
    assert (a.updated_at, a.updated_by_job) == (T0 + 2 * DAY, "r3")
    assert (a.confirmations, a.confirmed_at) == (1, T0 + DAY)
    assert a.evidence == EntryEvidence(job_id="r3", quotes=[])
    assert a.age(T0 + 10 * DAY) == 10 * DAY and a.unconfirmed_for(T0 + 10 * DAY) == 8 * DAY

    _commit(engine, _changes(T0 + 3 * DAY, "r4", writes=[_write("a", "removed", reason="stale")]))
    assert storage.live_entries(engine=engine, user_id="alice") == []
    gone = storage.entry_record(engine=engine, user_id="alice", name="a")
    assert gone is not None and (gone.removed_at, gone.removed_by, gone.removed_reason) == (
        T0 + 3 * DAY,
        "r4",
        "stale",
    )
    _commit(engine, _changes(T0 + 4 * DAY, "r5", writes=[_write("a", "created")]))
    anew = storage.entry_record(engine=engine, user_id="alice", name="a")
    assert anew is not None and anew.live
    assert (anew.created_by_job, anew.created_at, anew.confirmations) == ("r5", T0 + 4 * DAY, 0)


def test_entries_found_on_disk_get_a_record_only_when_they_need_one(engine: Engine) -> None:
    """A found entry without a record gets an `external` one; one with a live record is
    left as it is; one whose record says removed (written again by hand) is live again."""
    _commit(
        engine, _changes(T0, "r1", writes=[_write("mine", "created"), _write("old", "created")])
    )
    _commit(engine, _changes(T0, "r2", writes=[_write("old", "removed")]))
    found = {"mine": "project", "old": "user", "theirs": "reference"}
    _commit(engine, _changes(T0 + DAY, "r3", found=found))
    records = {r.name: r for r in storage.live_entries(engine=engine, user_id="alice")}
    assert (records["mine"].origin, records["mine"].created_by_job) == ("worker", "r1")
    for name in ("old", "theirs"):
        assert records[name].origin == "external" and records[name].created_at == T0 + DAY
        assert records[name].type == found[name] and records[name].created_by_job is None
    assert records["old"].removed_by is None


def test_an_update_or_removal_of_an_unrecorded_entry_records_it(engine: Engine) -> None:
    """An entry written outside the worker and then updated or removed by it gets a
    record that says both."""
    writes = [_write("upd", "updated", evidence=["q"]), _write("rm", "removed", reason="why")]
    _commit(engine, _changes(T0, "r1", writes=writes))
    upd = storage.entry_record(engine=engine, user_id="alice", name="upd")
    rm = storage.entry_record(engine=engine, user_id="alice", name="rm")
    assert upd is not None and rm is not None
    assert (upd.origin, upd.created_by_job, upd.updated_by_job) == ("external", None, "r1")
    assert upd.evidence == EntryEvidence(job_id="r1", quotes=["q"])
    assert (rm.origin, rm.removed_by, rm.removed_reason, rm.live) == (
        "external",
        "r1",
        "why",
        False,
    )


def test_records_of_one_user_are_not_anothers(engine: Engine) -> None:
    """Names are unique per user, not across users."""
    _commit(engine, _changes(T0, "r1", writes=[_write("a", "created")]))
    bob = EntryChanges(user_id="bob", job="r2", at=T0, found={"a": "user"}, confirmed=["a"])
    _commit(engine, bob)
    [alice] = storage.live_entries(engine=engine, user_id="alice")
    [bobs] = storage.live_entries(engine=engine, user_id="bob")
    assert (alice.origin, alice.confirmations) == ("worker", 0)
    assert (bobs.origin, bobs.confirmations) == ("external", 1)


def _metrics(engine: Engine, rid: str, user: str, kind: str, outcome: str, at: datetime) -> None:
    row = {
        "reflection_job_id": rid,
        "original_job_id": rid,
        "user_id": user,
        "piece_name": "default",
        "outcome": outcome,
        "kind": kind,
        "created_at": at,
    }
    with engine.begin() as conn:
        conn.execute(insert(reflection_metrics).values(**row))


def test_users_reflected_since_and_their_last_consolidation(engine: Engine) -> None:
    """A user counts as reflected by a reflection that asked the LLM at or after the time
    (not a failed or duplicate run, a revert or an approval); the last consolidation is
    the newest consolidation row of that user, whatever its outcome."""
    _metrics(engine, "a1", "ann", "reflection", "applied", T0 - DAY)
    _metrics(engine, "a2", "ann", "reflection", "abstained", T0)
    _metrics(engine, "b1", "bob", "reflection", "failed", T0 + DAY)
    _metrics(engine, "b2", "bob", "revert", "reverted", T0 + DAY)
    _metrics(engine, "c1", "cy", "approval", "applied", T0 + DAY)
    _metrics(engine, "d1", "di", "reflection", "rejected", T0 + DAY)
    _metrics(engine, "ann-c1", "ann", "consolidation", "applied", T0 - 3 * DAY)
    _metrics(engine, "ann-c2", "ann", "consolidation", "failed", T0 - 2 * DAY)
    assert storage.users_reflected_since(engine=engine, since=T0) == ["ann", "di"]
    assert storage.users_reflected_since(engine=engine, since=T0 + 2 * DAY) == []
    assert storage.last_consolidation_at(engine=engine, user_id="ann") == T0 - 2 * DAY
    assert storage.last_consolidation_at(engine=engine, user_id="di") is None


def _row(rid: str, outcome: Outcome, **kw: Any) -> MetricsRow:
    return MetricsRow.model_validate(
        {"reflection_job_id": rid, "original_job_id": "job-1", "user_id": "alice",
         "piece_name": "default", "outcome": outcome} | kw
    )  # fmt: skip


def test_runs_by_id_points_records_back_to_their_runs(engine: Engine) -> None:
    """An entry's job ids resolve to the original job, snapshot and kind of their rows."""
    storage.record_metrics(engine=engine, row=_row("r1", Outcome.APPLIED, snapshot_id="s1"))
    found = storage.runs_by_id(engine=engine, reflection_job_ids=["r1", "gone", ""])
    assert found == {"r1": storage.RunRef("job-1", "s1", "reflection")}
    assert storage.runs_by_id(engine=engine, reflection_job_ids=[]) == {}


def test_an_operators_change_records_its_entries_once(engine: Engine) -> None:
    """A revert's row and its records commit together; replayed (its journal rolled
    forward again), neither is written twice."""
    row = _row("revert-1", Outcome.REVERTED, kind="revert")
    changes = _changes(T0, "revert-1", writes=[_write("a", "updated")], confirmed=["a"])
    assert storage.record_change(engine=engine, row=row, entries=changes)
    assert not storage.record_change(engine=engine, row=row, entries=changes)
    [a] = storage.live_entries(engine=engine, user_id="alice")
    assert a.confirmations == 1
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM reflection_metrics")).scalar_one()
        assert (
            n == 1
            and conn.execute(text("SELECT kind FROM reflection_metrics")).scalar() == "revert"
        )
