"""Review mode: a piece edit is staged, then approved (re-checked) or rejected."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reflection import storage
from tests.cli.conftest import Cli
from tests.cli.helpers import BUILTIN, rows, tuned_piece
from tests.integration.conftest import decision

pytestmark = pytest.mark.integration


def _stage(cli: Cli, job_id: str, marker: str = "(tuned)") -> dict[str, Any]:
    cli.env.script(job_id, {"content": decision("tune", piece_edit=tuned_piece(marker))})
    report = cli.env.run(job_id)
    assert report.outcome.value == "applied" and report.snapshot_dir is not None
    meta: dict[str, Any] = json.loads((report.snapshot_dir / "meta.json").read_text())
    return meta


def test_review_mode_stages_then_approve_writes(cli: Cli, make_job: Any) -> None:
    """In review mode the edit is staged (no copy, no piece_edits row, meta says so);
    approve writes the copy, records piece_edits, snapshots it; revert undoes it."""
    cli.set("piece_edit_mode", "review")
    make_job("job-p1")
    meta = _stage(cli, "job-p1")
    copy = cli.env.user().piece_copy("default")
    assert meta["piece_staged"] and not meta["piece_edited"] and not copy.exists()
    assert rows(cli.env.engine, storage.piece_edits) == []
    [prop] = cli.json("proposals")
    assert prop["status"] == "pending" and prop["original_job_id"] == "job-p1"
    assert prop["snapshot_id"] == meta["snapshot_id"]
    shown = cli.json("show", "alice", meta["snapshot_id"])
    assert shown["diffs"][0]["path"].endswith("(proposed)")
    diff = cli.json("proposals", "--diff", str(prop["id"]))
    assert "(tuned)" in diff["diff"]

    approved = cli.json("approve", str(prop["id"]))
    assert approved["approved"] and approved["snapshot_id"]
    assert "(tuned)" in copy.read_text()
    [edit] = rows(cli.env.engine, storage.piece_edits)
    assert edit["original_job_id"] == "job-p1"
    assert cli.json("proposals") == []
    assert cli.json("proposals", "--status", "approved")[0]["id"] == prop["id"]
    history = cli.json("history", "alice")
    assert history[0]["kind"] == "approval"
    stats = cli.json("stats")  # an approval asked no LLM: not a run in the cost figures
    assert stats["tokens"]["runs"] == 1 and [m["model"] for m in stats["by_model"]] == [
        "scripted-1"
    ]
    again = cli("approve", str(prop["id"]))
    assert again.exit_code == 1 and "already approved" in again.stderr
    assert cli("revert", "alice", approved["snapshot_id"]).exit_code == 0
    assert not copy.exists()
    kinds = [(r["kind"], r["reflection_job_id"], r["snapshot_id"]) for r in cli.env.metrics()]
    assert [k for k, _, _ in kinds] == ["reflection", "approval", "revert"]
    _, approval_id, approval_snapshot = kinds[1]
    assert approval_id.startswith("approve-") and approval_snapshot == approved["snapshot_id"]
    assert kinds[2][1].startswith("revert-")


def test_approve_refused_by_cooldown(cli: Cli, make_job: Any) -> None:
    """A second proposal approved within the cooldown is refused and stays pending."""
    cli.set("piece_edit_mode", "review")
    make_job("job-c1")
    make_job("job-c2")
    _stage(cli, "job-c1", "(one)")
    _stage(cli, "job-c2", "(two)")
    second, first = cli.json("proposals")
    assert cli("approve", str(first["id"])).exit_code == 0
    refused = cli("approve", str(second["id"]))
    assert refused.exit_code == 1
    assert "piece_cooldown" in refused.stderr and "stays pending" in refused.stderr
    [still] = cli.json("proposals")
    assert still["id"] == second["id"] and "piece_cooldown" in still["detail"]
    assert "(one)" in cli.env.user().piece_copy("default").read_text()


def test_approve_refused_by_escalation_against_the_current_piece(cli: Cli, make_job: Any) -> None:
    """Approval judges against the piece as it is now: a proposal that would re-grant a
    tool an operator removed since is `piece_escalation`."""
    cli.set("piece_edit_mode", "review")
    cli.set("piece_edit_cooldown_hours", "0")
    make_job("job-x")
    _stage(cli, "job-x")
    copy = cli.env.user().piece_copy("default")
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(
        BUILTIN.read_text().replace("allowed_tools: [Read, Glob, Grep]", "allowed_tools: [Read]", 1)
    )
    [prop] = cli.json("proposals")
    result = cli("approve", str(prop["id"]), "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["code"] == "piece_escalation"
    assert "(tuned)" not in copy.read_text()
    assert rows(cli.env.engine, storage.piece_edits) == []


def test_reject_proposal(cli: Cli, make_job: Any) -> None:
    """reject marks the proposal rejected, writes nothing; it can't be approved after."""
    cli.set("piece_edit_mode", "review")
    make_job("job-r")
    _stage(cli, "job-r")
    [prop] = cli.json("proposals")
    result = cli("reject", str(prop["id"]), "--reason", "too vague")
    assert result.exit_code == 0
    assert cli.json("proposals", "--status", "rejected")[0]["detail"] == "too vague"
    assert cli("approve", str(prop["id"])).exit_code == 1
    assert not cli.env.user().piece_copy("default").exists()
    missing = cli("reject", "9999")
    assert missing.exit_code == 4 and "no proposal 9999" in missing.stderr


def test_auto_mode_writes_the_piece(cli: Cli, make_job: Any) -> None:
    """The default mode (auto) still writes an accepted piece edit at once."""
    make_job("job-auto")
    cli.env.script("job-auto", {"content": decision("tune", piece_edit=tuned_piece())})
    assert cli.json("run", "job-auto")["outcome"] == "applied"
    assert "(tuned)" in cli.env.user().piece_copy("default").read_text()
    assert cli.json("proposals", "--status", "all") == []
