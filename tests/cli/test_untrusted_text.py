"""Text from the LLM or from files is printed as is, never read as Rich markup; a bad
`--status` is bad usage; a malformed meta.json is one line, not an internal error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import Cli
from tests.cli.helpers import applied_run, no_traceback, tuned_piece
from tests.integration.conftest import decision
from tests.integration.test_pipeline import PYTEST_ENTRY
from tests.support.db import EVIDENCE

pytestmark = pytest.mark.integration

# `[/b]` closes a tag never opened (MarkupError); `[tag]` would be swallowed as a style,
# `:thumbs_up:` replaced by an emoji.
NAME = "x[/b]y[tag]"
MODEL = "scripted[/b][beta]"
REASONING = "keep [bold]this[/bold] :thumbs_up: literal"


def _script_model(cli: Cli, model: str) -> None:
    script = cli.env.llm.script
    script["model"] = model
    cli.env.llm.set_script(script)


def test_llm_text_is_printed_literally(cli: Cli, make_job: Any) -> None:
    """A rejected change's name, the model's name and the reasoning, printed by run,
    run --dry-run, show and stats, keep their brackets."""
    _script_model(cli, MODEL)
    make_job("job-m")
    bad = {
        "op": "add",
        "evidence": EVIDENCE,
        "name": NAME,
        "description": "d",
        "type": "user",
        "body": "b",
    }
    cli.env.script("job-m", {"content": decision(REASONING, [PYTEST_ENTRY, bad])})
    for args in (("run", "job-m", "--dry-run"), ("run", "job-m")):
        result = cli(*args)
        assert result.exit_code == 0, result.output
        for text in (NAME, MODEL, REASONING):
            assert text in result.stdout, (text, result.stdout)
    snap = cli.json("history", "alice")[0]["snapshot_id"]
    shown = cli("show", "alice", snap)
    assert shown.exit_code == 0, shown.output
    assert NAME in shown.stdout and MODEL in shown.stdout and REASONING in shown.stdout
    stats = cli("stats")
    assert stats.exit_code == 0, stats.output
    assert MODEL in stats.stdout


def test_proposal_summary_is_printed_literally(cli: Cli, make_job: Any) -> None:
    cli.set("piece_edit_mode", "review")
    make_job("job-ms")
    edit = {**tuned_piece(), "summary": "[/b][x]"}
    cli.env.script("job-ms", {"content": decision("tune", piece_edit=edit)})
    cli.env.run("job-ms")
    result = cli("proposals")
    assert result.exit_code == 0, result.output
    assert "[/b][x]" in result.stdout


def test_doctor_detail_is_printed_literally(cli: Cli) -> None:
    cli.monkeypatch.setenv("REFLECTION_LLM_MODEL", "gpt[/b][x]")
    result = cli("doctor")
    assert result.exit_code == 1 and "internal error" not in result.output
    assert "'gpt[/b][x]'" in result.stdout


def test_proposals_refuses_an_unknown_status(cli: Cli) -> None:
    result = cli("proposals", "--status", "bogus")
    assert result.exit_code == 2
    assert "bogus" in result.stderr and "pending" in result.stderr
    assert cli.json("proposals", "--status", "all") == []


def _rewrite(snap: Path, change: Any) -> None:
    meta = json.loads((snap / "meta.json").read_text())
    change(meta)
    (snap / "meta.json").write_text(json.dumps(meta))


MALFORMED = {
    "no snapshot_id": lambda m: m.pop("snapshot_id"),
    "another snapshot_id": lambda m: m.update(snapshot_id="20260101T000000Z-abcdef"),
    "no decision keys": lambda m: m.update(decisions=[{"accepted": False}]),
    "decisions not a list": lambda m: m.update(decisions="ok"),
    "memory_files a string": lambda m: m.update(memory_files="prefers-pytest"),
    "memory_files unsafe": lambda m: m.update(memory_files={"../x": {}}),
    "edited piece unnamed": lambda m: (m.update(piece_edited=True), m.pop("piece_name")),
}


@pytest.mark.parametrize("change", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_meta_is_one_line(cli: Cli, make_job: Any, change: Any) -> None:
    """show and revert refuse a meta.json missing what they read, in one line (exit 1);
    stats skips it, as it skips an unreadable one."""
    make_job("job-o")
    snap = applied_run(cli.env, "job-o", [PYTEST_ENTRY])
    _rewrite(snap, change)
    expected = f"error: snapshot {snap.name}: meta.json is malformed"
    for cmd in ("show", "revert"):
        result = cli(cmd, "alice", snap.name)
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith(expected), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and no_traceback(result.output)
    assert cli.env.user().memory_file("prefers-pytest").exists()  # nothing reverted
    assert cli("stats").exit_code == 0
    assert cli("history", "alice").exit_code == 0


def test_stats_skips_malformed_decisions(cli: Cli, make_job: Any) -> None:
    bad = {
        "op": "add",
        "evidence": EVIDENCE,
        "name": "Bad Name",
        "description": "d",
        "type": "user",
        "body": "b",
    }
    make_job("job-s1")
    make_job("job-s2")
    applied_run(cli.env, "job-s1", [bad])
    broken = applied_run(cli.env, "job-s2", [bad])
    _rewrite(broken, lambda m: m.update(decisions=[{"accepted": False}]))
    assert cli.json("stats")["top_rejection_codes"] == {"invalid_name": 1}
