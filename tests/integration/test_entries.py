"""Entry records (`memory_entries`) written by real runs: in the run's one commit, exactly
once (a journal rolled forward, a stale writer, a replay), and by a revert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reflection import storage
from reflection.errors import LockLostError
from reflection.models import Outcome
from reflection.records import EntryEvidence, EntryRecord
from tests.integration.conftest import Env, decision
from tests.integration.test_pipeline import PYTEST_ENTRY, write_entry
from tests.integration.test_reliability import stopped_after_journal, taken_over_while_planning
from tests.integration.test_revert import _revert
from tests.support.db import EVIDENCE

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
UPDATE_DB = {
    "op": "update",
    "evidence": EVIDENCE,
    "name": "billing-db",
    "description": "Billing database",
    "type": "project",
    "body": "Postgres 16.",
}


def _at(env: Env, when: datetime) -> None:
    env.deps.clock = lambda: when


def _records(env: Env, removed: bool = True) -> dict[str, EntryRecord]:
    found = storage.entry_records(engine=env.engine, user_id="alice", include_removed=removed)
    return {r.name: r for r in found}


def _answer(changes: list[dict[str, Any]], confirmed: list[str] | None = None) -> dict[str, Any]:
    return {"content": {**decision("x", changes), "confirmed": confirmed or []}}


def test_a_run_records_what_it_wrote_confirmed_and_found(env: Env, make_job: Any) -> None:
    """An add is created by the run, an update updated, a merge removed into its target;
    a confirmed entry is counted; an entry written by hand gets an `external` record."""
    for name in ("billing-db", "old-db-notes", "by-hand", "kept"):
        write_entry(env, name)
    make_job("job-1")
    merge = {"op": "remove", "name": "old-db-notes", "merge_target": "billing-db"}
    env.script("job-1", _answer([PYTEST_ENTRY, UPDATE_DB, merge], ["kept", "ghost"]))
    _at(env, T0)
    assert env.run("job-1", reflection_job_id="rid-1").outcome is Outcome.APPLIED

    records = _records(env)
    evidence = EntryEvidence(job_id="rid-1", quotes=EVIDENCE)  # the quotes it was given
    assert records["prefers-pytest"] == EntryRecord(
        user_id="alice",
        name="prefers-pytest",
        type="feedback",
        origin="worker",
        created_at=T0,
        created_by_job="rid-1",
        updated_at=T0,
        updated_by_job="rid-1",
        evidence=evidence,
    )
    db = records["billing-db"]
    assert (db.origin, db.created_by_job, db.updated_by_job, db.evidence) == (
        "external",
        None,
        "rid-1",
        evidence,
    )
    gone = records["old-db-notes"]
    assert (gone.removed_at, gone.removed_by, gone.removed_reason) == (
        T0,
        "rid-1",
        "merged into billing-db",
    )
    assert (records["kept"].confirmations, records["kept"].confirmed_at) == (1, T0)
    hand = records["by-hand"]
    assert (hand.origin, hand.created_at, hand.created_by_job, hand.evidence) == (
        "external",
        T0,
        None,
        None,
    )
    assert "ghost" not in records
    assert set(_records(env, removed=False)) == {"prefers-pytest", "billing-db", "by-hand", "kept"}


def test_later_runs_count_confirmations_and_a_replay_writes_nothing(
    env: Env, make_job: Any
) -> None:
    """Each run that confirms an entry counts once; a second delivery of a reflected job
    (a duplicate) and an abstention without confirmations change no record."""
    write_entry(env, "kept")
    for n, when in ((1, T0), (2, T0 + timedelta(days=3))):
        make_job(f"job-{n}")
        env.script(f"job-{n}", _answer([], ["kept"]))
        _at(env, when)
        assert env.run(f"job-{n}").outcome is Outcome.ABSTAINED
    kept = _records(env)["kept"]
    assert (kept.confirmations, kept.confirmed_at, kept.created_at) == (
        2,
        T0 + timedelta(days=3),
        T0,
    )
    _at(env, T0 + timedelta(days=9))
    assert env.run("job-2").outcome is Outcome.DUPLICATE
    make_job("job-3")
    env.script("job-3", _answer([]))
    assert env.run("job-3").outcome is Outcome.ABSTAINED
    assert _records(env) == {"kept": kept}


def test_a_journal_rolled_forward_writes_its_records_once(
    env: Env, make_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped after its journal is completed by the user's next run: its records
    (the add, the confirmation) land once, with the next run's own."""
    write_entry(env, "kept")
    make_job("job-stopped")
    env.script("job-stopped", _answer([PYTEST_ENTRY], ["kept"]))
    stopped_after_journal(env, monkeypatch, "job-stopped", "rid-stopped")
    assert _records(env) == {}
    make_job("job-next")
    env.script("job-next", _answer([], ["kept"]))
    assert env.run("job-next", reflection_job_id="rid-next").outcome is Outcome.ABSTAINED
    records = _records(env)
    assert records["prefers-pytest"].created_by_job == "rid-stopped"
    assert records["kept"].confirmations == 2  # one each, not one more for the replay
    assert env.run("job-stopped", reflection_job_id="rid-stopped").outcome is Outcome.DUPLICATE
    assert _records(env) == records


def test_a_stale_writer_records_nothing_and_the_takeover_records_once(
    env: Env, make_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose claim was taken over commits no record; the delivery that took over
    completes its journal, and the records say the run that planned them."""
    write_entry(env, "kept")
    make_job("job-stale")
    env.script("job-stale", _answer([PYTEST_ENTRY], ["kept"]))
    taken_over_while_planning(env, monkeypatch, by="rid-b")
    with pytest.raises(LockLostError):
        env.run("job-stale", reflection_job_id="rid-a")
    assert _records(env) == {}
    monkeypatch.undo()
    assert env.run("job-stale", reflection_job_id="rid-b").outcome is Outcome.APPLIED
    records = _records(env)
    assert records["prefers-pytest"].created_by_job == "rid-a"
    assert records["kept"].confirmations == 1


def test_a_revert_updates_the_records_it_touches(env: Env, make_job: Any) -> None:
    """Reverting a run: its add is removed (`reverted <snapshot>`), its update updated
    back, its removal brought back to life; their history stays. Reverting that revert
    brings the add back."""
    write_entry(env, "billing-db", body="Postgres 15.")
    write_entry(env, "old-notes")
    make_job("job-rv")
    env.script("job-rv", _answer([PYTEST_ENTRY, UPDATE_DB, {"op": "remove", "name": "old-notes"}]))
    _at(env, T0)
    report = env.run("job-rv", reflection_job_id="rid-rv")
    assert report.snapshot_dir is not None
    snapshot = report.snapshot_dir.name
    revert_dir = _revert(env, snapshot)
    [row] = [r for r in env.metrics() if r["kind"] == "revert"]
    revert_job = row["reflection_job_id"]

    records = _records(env)
    added = records["prefers-pytest"]
    assert (added.removed_by, added.removed_reason) == (revert_job, f"reverted {snapshot}")
    assert added.created_by_job == "rid-rv"
    db = records["billing-db"]
    assert (db.updated_by_job, db.evidence, db.removed_at) == (
        revert_job,
        EntryEvidence(job_id=revert_job),
        None,
    )
    back = records["old-notes"]
    assert back.live and (back.updated_by_job, back.type) == (revert_job, "project")

    _revert(env, revert_dir.name)
    again = _records(env)["prefers-pytest"]
    assert again.live and again.created_by_job == "rid-rv" and again.type == "feedback"


def test_an_entry_written_again_by_hand_is_recorded_again(env: Env, make_job: Any) -> None:
    """An entry the worker removed and a person wrote again is live again, as theirs."""
    write_entry(env, "old-notes")
    make_job("job-rm")
    env.script("job-rm", _answer([{"op": "remove", "name": "old-notes"}]))
    _at(env, T0)
    env.run("job-rm")
    assert not _records(env)["old-notes"].live
    write_entry(env, "old-notes")
    make_job("job-after")
    env.script("job-after", _answer([]))
    _at(env, T0 + timedelta(days=1))
    env.run("job-after")
    record = _records(env)["old-notes"]
    assert record.live and (record.origin, record.created_at) == (
        "external",
        T0 + timedelta(days=1),
    )
    assert record.removed_by is None and record.removed_reason is None
