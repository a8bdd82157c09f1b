"""Operator commands (`revert`, `protect`) finish a killed writer's journal before they
plan: otherwise its roll-forward, by the user's next run, would undo what they wrote."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from reflection import apply, storage
from tests.cli.conftest import Cli
from tests.cli.helpers import applied_run, no_traceback, rows, tuned_piece
from tests.integration.conftest import Env, decision
from tests.integration.test_pipeline import PYTEST_ENTRY, write_entry
from tests.support.db import EVIDENCE

pytestmark = pytest.mark.integration

UPDATE = {
    "op": "update",
    "evidence": EVIDENCE,
    "name": "billing-db",
    "description": "DB",
    "type": "project",
    "body": "Postgres 16.",
}


class Killed(Exception):
    """Stands for the SIGKILL of the fault suite: the writer stops, its journal stays."""


@contextmanager
def killed_at(point: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def fault(name: str) -> None:
        if name == point:
            raise Killed(point)

    with monkeypatch.context() as m:
        m.setattr(apply, "fault_point", fault)
        yield


def body(env: Env, name: str) -> str:
    return env.user().memory_file(name).read_text().splitlines()[-1]


def outcomes(env: Env) -> list[str]:
    return sorted(r["outcome"] for r in rows(env.engine, storage.reflection_metrics))


def killed_update(env: Env, make_job: Any, point: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run updating billing-db (Postgres 15 -> 16), killed at `point`."""
    write_entry(env, "billing-db", body="Postgres 15.")
    make_job("job-killed")
    env.script("job-killed", {"content": decision("x", [UPDATE])})
    with killed_at(point, monkeypatch), pytest.raises(Killed):
        env.run("job-killed")


def test_revert_of_a_killed_run_is_not_undone_by_its_recovery(
    cli: Cli, make_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    killed_update(cli.env, make_job, "after_snapshot", monkeypatch)
    assert list(cli.env.user().journal_dir.iterdir())  # files and snapshot written, no commit
    snap = cli.json("history", "alice")[0]["snapshot_id"]
    assert cli("revert", "alice", snap).exit_code == 0
    assert body(cli.env, "billing-db") == "Postgres 15."
    make_job("zz-next")
    cli.env.script("zz-next", {"content": decision("nothing")})
    cli.env.run("zz-next")  # would roll the killed run's journal forward over the revert
    assert body(cli.env, "billing-db") == "Postgres 15."
    assert outcomes(cli.env) == ["abstained", "applied", "reverted"]


def test_a_revert_killed_midway_is_finished_and_recorded(
    cli: Cli, make_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_entry(cli.env, "billing-db", body="Postgres 15.")
    make_job("job-k")
    snap = applied_run(cli.env, "job-k", [PYTEST_ENTRY, UPDATE])
    with killed_at("between_writes", monkeypatch):
        assert cli("revert", "alice", snap.name).exit_code != 0
    again = cli("revert", "alice", snap.name)  # finishes the first revert, then has nothing to do
    assert again.exit_code == 1 and "already" in again.stderr and no_traceback(again.stderr)
    user = cli.env.user()
    assert not user.memory_file("prefers-pytest").exists()
    assert "prefers-pytest" not in user.memory_index.read_text()
    assert body(cli.env, "billing-db") == "Postgres 15."
    assert not list(user.journal_dir.iterdir())
    assert outcomes(cli.env) == ["applied", "reverted"]


def test_revert_of_a_revert_restores_a_piece_copy_it_removed(cli: Cli, make_job: Any) -> None:
    make_job("job-a")
    cli.env.script("job-a", {"content": decision("tune", piece_edit=tuned_piece())})
    assert cli.json("run", "job-a")["outcome"] == "applied"
    copy = cli.env.user().piece_copy("default")
    tuned = copy.read_text()
    snap = cli.json("history", "alice")[0]["snapshot_id"]
    undo = cli.json("revert", "alice", snap)
    assert not copy.exists()  # the edit was of the built-in: reverting removes the copy
    assert cli("revert", "alice", undo["snapshot_id"]).exit_code == 0
    assert copy.read_text() == tuned


def test_revert_over_an_unreadable_file_is_a_conflict(cli: Cli, make_job: Any) -> None:
    make_job("job-u")
    snap = applied_run(cli.env, "job-u", [PYTEST_ENTRY])
    cli.env.user().memory_file("prefers-pytest").write_bytes(b"\xff\xfe hand edited")
    res = cli("revert", "alice", snap.name)
    assert res.exit_code == 1 and no_traceback(res.stderr)
    assert "memory/prefers-pytest.md (unreadable)" in res.stderr


def test_protect_finishes_a_killed_run_first(
    cli: Cli, make_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    killed_update(cli.env, make_job, "after_journal", monkeypatch)  # only its journal written
    assert cli("protect", "alice", "billing-db").exit_code == 0
    text = cli.env.user().memory_file("billing-db").read_text()
    assert "protected: true" in text and text.rstrip().endswith("Postgres 16.")
    assert not list(cli.env.user().journal_dir.iterdir())
    assert outcomes(cli.env) == ["applied"]
