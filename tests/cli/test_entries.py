"""`reflection memory` and `why`: a user's entries with their records, and what stands
behind one entry (jobs, quotes, confirmations, removal), as tables and as JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reflection import storage
from reflection.cli.entries import format_age
from reflection.records import EntryChanges, EntryWrite
from reflection.text import MULTILINE, find_unsafe_chars
from tests.cli.conftest import Cli
from tests.cli.helpers import no_traceback
from tests.integration.conftest import decision
from tests.integration.test_pipeline import PYTEST_ENTRY, write_entry
from tests.support.db import EVIDENCE

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("delta", "shown"),
    [(None, "-"), (timedelta(seconds=-5), "0s"), (timedelta(seconds=45), "45s"),
     (timedelta(minutes=12, seconds=59), "12m"), (timedelta(hours=5), "5h"),
     (timedelta(days=3, hours=23), "3d"), (timedelta(days=13), "13d"),
     (timedelta(days=100), "14w")],
)  # fmt: skip
def test_ages_are_short(delta: timedelta | None, shown: str) -> None:
    """An age is one number and its largest whole unit (days up to two weeks)."""
    assert format_age(delta) == shown


def _reflect(cli: Cli, job_id: str, changes: list[dict[str, Any]], confirmed: list[str]) -> str:
    """Reflect on `job_id` in-process; its snapshot id."""
    cli.env.script(job_id, {"content": {**decision("x", changes), "confirmed": confirmed}})
    report = cli.env.run(job_id)
    assert report.snapshot_dir is not None
    return report.snapshot_dir.name


def test_memory_lists_entries_with_their_records(cli: Cli, make_job: Any) -> None:
    """Each live entry with type, origin, age, confirmations and the jobs that created and
    updated it; an entry no run has recorded yet, and with --all the removed ones."""
    write_entry(cli.env, "billing-db")
    write_entry(cli.env, "old-notes")
    make_job("job-1")
    merge = {"op": "remove", "name": "old-notes", "merge_target": "billing-db"}
    _reflect(cli, "job-1", [PYTEST_ENTRY, merge], ["billing-db"])
    write_entry(cli.env, "by-hand")

    listed = {e["name"]: e for e in cli.json("memory", "alice")}
    assert set(listed) == {"prefers-pytest", "billing-db", "by-hand"}
    pytest_entry = listed["prefers-pytest"]
    assert (pytest_entry["type"], pytest_entry["origin"], pytest_entry["confirmations"]) == (
        "feedback",
        "worker",
        0,
    )
    assert pytest_entry["created_by"]["original_job_id"] == "job-1"
    assert pytest_entry["live"] and pytest_entry["on_disk"] and pytest_entry["age_seconds"] >= 0
    db = listed["billing-db"]
    assert (db["origin"], db["confirmations"], db["created_by"]) == ("external", 1, None)
    assert listed["by-hand"] == {
        "name": "by-hand",
        "type": "project",
        "on_disk": True,
        "recorded": False,
        "origin": "external",
        "live": True,
    }
    every = {e["name"]: e for e in cli.json("memory", "alice", "--all")}
    assert every["old-notes"]["removed_reason"] == "merged into billing-db"
    assert not every["old-notes"]["live"] and not every["old-notes"]["on_disk"]

    cli.monkeypatch.setenv("COLUMNS", "200")  # a terminal wide enough for every column
    table = cli("memory", "alice", "--all")
    assert table.exit_code == 0, table.output
    for text in ("prefers-pytest", "worker", "external", "job-1", "not recorded yet", "merged"):
        assert text in table.stdout, text


def test_why_shows_the_jobs_and_the_quotes(cli: Cli, make_job: Any) -> None:
    """The job that created and last updated an entry (the platform's job id and its
    snapshot), when it was confirmed, who removed it and why."""
    write_entry(cli.env, "old-notes")
    make_job("job-1")
    snapshot = _reflect(cli, "job-1", [PYTEST_ENTRY], ["old-notes"])
    make_job("job-2")
    _reflect(cli, "job-2", [{"op": "remove", "name": "old-notes"}], [])

    shown = cli("why", "alice", "prefers-pytest")
    assert shown.exit_code == 0, shown.output
    assert "by job job-1 (reflection" in shown.stdout and snapshot in shown.stdout
    assert "confirmed: never" in shown.stdout and f"> {EVIDENCE[0]}" in shown.stdout
    data = cli.json("why", "alice", "prefers-pytest")
    rid = data["record"]["created_by_job"]
    assert data["runs"][rid] == {"original_job_id": "job-1", "snapshot_id": snapshot,
                                 "kind": "reflection"}  # fmt: skip
    assert data["record"]["evidence"] == {"job_id": rid, "quotes": EVIDENCE}

    removed = cli("why", "alice", "old-notes")
    assert removed.exit_code == 0, removed.output
    assert "state: removed" in removed.stdout and "by job job-2" in removed.stdout
    assert "confirmed: 1 time(s)" in removed.stdout and "outside the worker" in removed.stdout


def test_why_prints_the_quotes_escaped(cli: Cli) -> None:
    """A quote is the model's text: an escape sequence in it is shown, not sent raw, and
    JSON escapes it."""
    quote = "the user said \x1b[2Juse pytest\x1b]52;c;cGF5bG9hZA==\x07"
    at = datetime(2026, 12, 1, tzinfo=UTC)
    write = EntryWrite(name="prefers-pytest", action="created", type="feedback", evidence=[quote])
    with cli.env.engine.begin() as conn:
        storage.write_entries(
            conn, EntryChanges(user_id="alice", job="rid-q", at=at, writes=[write])
        )
    cli.env.user().home.mkdir(parents=True)
    shown = cli("why", "alice", "prefers-pytest")
    assert shown.exit_code == 0, shown.output
    assert find_unsafe_chars(shown.stdout, allow=MULTILINE) == []
    assert "\\x1b[2Juse pytest" in shown.stdout and "by rid-q" in shown.stdout
    raw = cli("why", "alice", "prefers-pytest", "--json").stdout
    assert "\x1b" not in raw and "\\u001b[2J" in raw


def test_why_and_memory_refuse_what_is_not_there(cli: Cli) -> None:
    """An unknown entry is exit 1, a name or user id that cannot be one is exit 2, an
    entry on disk without a record says so; never a traceback."""
    write_entry(cli.env, "by-hand")
    missing = cli("why", "alice", "nope")
    assert missing.exit_code == 4 and "has no entry 'nope'" in missing.stderr
    assert cli("why", "alice", "Bad Name").exit_code == 2
    assert cli("why", "../etc", "x").exit_code == 2
    assert cli("memory", "../etc").exit_code == 2
    nobody = cli("memory", "nobody")
    assert nobody.exit_code == 4 and "no folder" in nobody.stderr
    hand = cli("why", "alice", "by-hand")
    assert hand.exit_code == 0 and "without a record" in hand.stdout
    assert cli.json("why", "alice", "by-hand")["record"] is None
    hostile = cli("why", "alice", "x\x1b]52;c;cHduZWQ=\x07\u202e")
    assert hostile.exit_code == 2
    for result in (missing, nobody, hand, hostile):
        assert no_traceback(result.output)
        assert find_unsafe_chars(result.stdout + result.stderr, allow=MULTILINE) == []
