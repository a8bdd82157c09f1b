"""`reflection history`, `show`, `revert` and `stats` on real runs, failures and reverts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import Cli
from tests.cli.helpers import applied_run, no_traceback
from tests.integration.conftest import decision
from tests.integration.test_pipeline import PYTEST_ENTRY
from tests.support.db import EVIDENCE

pytestmark = pytest.mark.integration

BAD = {
    "op": "add",
    "evidence": EVIDENCE,
    "name": "Bad Name",
    "description": "d",
    "type": "user",
    "body": "b",
}


def test_history_and_show(cli: Cli, make_job: Any) -> None:
    """history lists a user's snapshots newest first; show prints one with its diffs."""
    make_job("job-h1")
    make_job("job-h2")
    first = applied_run(cli.env, "job-h1", [PYTEST_ENTRY])
    cli.env.script("job-h2", {"content": decision("nothing")})
    cli.env.run("job-h2")
    rows = cli.json("history", "alice")
    assert [r["original_job_id"] for r in rows] == ["job-h2", "job-h1"]
    assert [r["outcome"] for r in rows] == ["abstained", "applied"]
    assert cli.json("history", "alice", "--piece", "other") == []
    table = cli("history", "alice")
    assert table.exit_code == 0 and first.name in table.stdout
    shown = cli.json("show", "alice", first.name)
    assert shown["meta"]["original_job_id"] == "job-h1"
    [diff] = shown["diffs"]
    assert diff["path"] == "memory/prefers-pytest.md" and "+type: feedback" in diff["diff"]
    text = cli("show", "alice", first.name)
    assert text.exit_code == 0 and "prefers-pytest" in text.stdout and "reasoning" in text.stdout


def test_show_and_history_refuse_unknown_things(cli: Cli) -> None:
    """An unknown user or snapshot, or an id that cannot be one, is one line and exit 4."""
    cli.env.user().home.mkdir()
    assert cli("history", "nobody").exit_code == 4
    missing = cli("show", "alice", "20260101T000000Z-abcdef")
    assert missing.exit_code == 4 and "no snapshot" in missing.stderr
    unsafe = cli("show", "alice", "../etc")
    assert unsafe.exit_code == 4 and no_traceback(unsafe.output)
    assert cli("history", "../root").exit_code == 4


def test_history_and_show_read_nothing_through_a_planted_link(
    cli: Cli, make_job: Any, tmp_path: Path
) -> None:
    """An index or a snapshot folder made a link to files outside the home is refused
    with one line, and nothing of those files is printed."""
    make_job("job-l1")
    snap = applied_run(cli.env, "job-l1", [PYTEST_ENTRY])
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = '{"snapshot_id": "SECRET-LINE", "original_job_id": "x"}\n'
    (outside / "index.jsonl").write_text(secret)
    index = cli.env.user().snapshot_index
    index.unlink()
    index.symlink_to(outside / "index.jsonl")
    history = cli("history", "alice")
    assert history.exit_code == 1
    assert f"{index} is a symlink; refusing to follow it" in history.stderr
    assert "SECRET" not in history.output and no_traceback(history.output)
    snap.rename(outside / snap.name)
    snap.symlink_to(outside / snap.name)
    shown = cli("show", "alice", snap.name)
    assert shown.exit_code == 1 and "symlink" in shown.stderr and no_traceback(shown.output)


def test_revert_restores_and_is_recorded(cli: Cli, make_job: Any) -> None:
    """revert restores the before state, is snapshotted, and adds a metrics row
    `reverted` carrying the reverted run's job id."""
    make_job("job-v")
    snap = applied_run(cli.env, "job-v", [PYTEST_ENTRY])
    entry = cli.env.user().memory_file("prefers-pytest")
    assert entry.exists()
    result = cli.json("revert", "alice", snap.name)
    assert result["kind"] == "revert" and result["reverts"] == snap.name
    assert not entry.exists()
    reverted = [r for r in cli.env.metrics() if r["outcome"] == "reverted"]
    assert len(reverted) == 1
    assert reverted[0]["reflection_job_id"].startswith("revert-")
    assert reverted[0]["kind"] == "revert"
    assert reverted[0]["original_job_id"] == "job-v"
    assert reverted[0]["snapshot_id"] == result["snapshot_id"]
    kinds = [r.get("kind") for r in cli.json("history", "alice")]
    assert kinds == ["revert", "reflection"]
    shown = cli.json("show", "alice", result["snapshot_id"])
    assert "-type: feedback" in shown["diffs"][0]["diff"]
    stats = cli.json("stats")
    assert stats["runs_by_outcome"] == {"applied": 1, "reverted": 1}


def test_revert_conflict_is_refused(cli: Cli, make_job: Any) -> None:
    """A file edited since the snapshot makes revert refuse, naming it, exit 1."""
    make_job("job-c")
    snap = applied_run(cli.env, "job-c", [PYTEST_ENTRY])
    path = cli.env.user().memory_file("prefers-pytest")
    path.write_text(path.read_text() + "\nEdited by hand.")
    result = cli("revert", "alice", snap.name)
    assert result.exit_code == 1, result.output
    assert "cannot revert" in result.stderr and "memory/prefers-pytest.md" in result.stderr
    assert no_traceback(result.output)
    assert "Edited by hand." in path.read_text()
    assert [r["outcome"] for r in cli.env.metrics()] == ["applied"]


def test_revert_of_an_empty_snapshot_is_refused(cli: Cli, make_job: Any) -> None:
    """An abstained run changed nothing: revert says so and exits 1."""
    make_job("job-n")
    snap = applied_run(cli.env, "job-n", [])
    result = cli("revert", "alice", snap.name)
    assert result.exit_code == 1 and "nothing to revert" in result.stderr


def test_stats_after_runs_failures_and_rejections(cli: Cli, make_job: Any) -> None:
    """stats counts outcomes, failure codes, rejection codes (from the snapshots),
    tokens and duration percentiles, per model, and honours --user and --piece."""
    make_job("job-s1")
    make_job("job-s2")
    make_job("job-s3", piece_name="no-such-piece")
    applied_run(cli.env, "job-s1", [PYTEST_ENTRY, BAD])
    applied_run(cli.env, "job-s2", [BAD])
    cli.env.run("job-s3", piece_name="no-such-piece")
    report = cli.json("stats")
    assert report["runs_by_outcome"] == {"applied": 1, "rejected": 1, "failed": 1}
    assert report["failures_by_error_code"] == {"piece_not_found": 1}
    assert report["top_rejection_codes"] == {"invalid_name": 2}
    assert report["tokens"]["runs"] == 2 and report["tokens"]["in"] > 0
    assert report["tokens"]["in_per_run"] == report["tokens"]["in"] // 2 or report["tokens"][
        "in_per_run"
    ] == round(report["tokens"]["in"] / 2)
    assert report["duration_ms"]["p50"] is not None
    assert [m["model"] for m in report["by_model"]] == ["scripted-1"]
    assert cli.json("stats", "--user", "bob")["runs_by_outcome"] == {}
    assert cli.json("stats", "--piece", "no-such-piece")["runs_by_outcome"] == {"failed": 1}
    assert cli.json("stats", "--since", "1h")["runs_by_outcome"]["applied"] == 1
    table = cli("stats")
    assert table.exit_code == 0 and "invalid_name" in table.stdout
    assert cli("stats", "--since", "yesterday").exit_code == 2
