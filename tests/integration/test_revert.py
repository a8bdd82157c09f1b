"""Undo: a snapshot's before state comes back, unless the files changed since."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from reflection.errors import RevertConflictError
from reflection.lock import user_lock
from reflection.models import Outcome
from reflection.paths import UnsafePathError
from reflection.revert import revert_snapshot
from tests.integration.conftest import Env, decision
from tests.integration.test_pipeline import PYTEST_ENTRY, write_entry
from tests.support.db import EVIDENCE

pytestmark = pytest.mark.integration


def _revert(env: Env, snapshot_id: str) -> Any:
    with user_lock(env.deps.redis, "alice", expire=30, wait=1) as lock:
        return revert_snapshot(
            paths=env.user(),
            snapshot_id=snapshot_id,
            lock=lock,
            engine=env.engine,
            now=datetime.now(UTC),
        )


def test_revert_restores_memory_and_piece(env: Env, make_job: Any) -> None:
    """Adds disappear, updates get their old text back, the piece copy goes away, and the
    revert is itself snapshotted and indexed."""
    write_entry(env, "billing-db", body="Postgres 15.")
    make_job("job-rv")
    builtin = (env.deps.settings.pieces_dir / "default.yaml").read_text()
    line = next(x for x in builtin.splitlines() if "description:" in x)
    edit = {"yaml": builtin.replace(line, line + " (tuned)", 1), "summary": "s"}
    update = {
        "op": "update",
        "evidence": EVIDENCE,
        "name": "billing-db",
        "description": "DB",
        "type": "project",
        "body": "Postgres 16.",
    }
    env.script("job-rv", {"content": decision("x", [PYTEST_ENTRY, update], edit)})
    report = env.run("job-rv")
    assert report.outcome is Outcome.APPLIED and report.snapshot_dir is not None
    u = env.user()
    before_index = u.memory_index.read_text()
    assert "prefers-pytest" in before_index

    revert_dir = _revert(env, report.snapshot_dir.name)

    assert not u.memory_file("prefers-pytest").exists()
    assert "Postgres 15." in u.memory_file("billing-db").read_text()
    assert not u.piece_copy("default").exists()
    assert "prefers-pytest" not in u.memory_index.read_text()
    meta = json.loads((revert_dir / "meta.json").read_text())
    assert meta["kind"] == "revert" and meta["reverts"] == report.snapshot_dir.name
    kinds = [json.loads(x).get("kind") for x in u.snapshot_index.read_text().splitlines()]
    assert kinds == ["reflection", "revert"]


def test_revert_reads_no_snapshot_file_through_a_link(env: Env, make_job: Any) -> None:
    """A snapshot's before/ replaced by a link to a folder outside the home is refused,
    not restored from: nothing of the outside reaches the user's memory."""
    write_entry(env, "billing-db", body="Postgres 15.")
    make_job("job-rl")
    update = {
        "op": "update",
        "evidence": EVIDENCE,
        "name": "billing-db",
        "description": "DB",
        "type": "project",
        "body": "Postgres 16.",
    }
    env.script("job-rl", {"content": decision("x", [update])})
    report = env.run("job-rl")
    assert report.snapshot_dir is not None
    outside = env.user().root.parent / "outside-before"
    (report.snapshot_dir / "before").rename(outside)
    (outside / "billing-db.md").write_text((outside / "billing-db.md").read_text() + "SECRET")
    (report.snapshot_dir / "before").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="symlink or not a folder"):
        _revert(env, report.snapshot_dir.name)
    assert "Postgres 16." in env.user().memory_file("billing-db").read_text()


def test_revert_refuses_when_files_changed(env: Env, make_job: Any) -> None:
    """A file edited after the snapshot makes the revert refuse, naming the file."""
    make_job("job-rc")
    env.script("job-rc", {"content": decision("x", [PYTEST_ENTRY])})
    report = env.run("job-rc")
    assert report.snapshot_dir is not None
    path = env.user().memory_file("prefers-pytest")
    path.write_text(path.read_text() + "\nEdited by hand.")
    with pytest.raises(RevertConflictError, match=r"memory/prefers-pytest\.md"):
        _revert(env, report.snapshot_dir.name)
    assert "Edited by hand." in path.read_text()
