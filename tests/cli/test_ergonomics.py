"""The CLI during an incident: ids never broken at 80 columns in a pipe, dry runs that
say so, one exit code for an id that names nothing, JSON errors for scripts, a diff of
what a proposal changes, and --version."""

from __future__ import annotations

import json
import re
from importlib import metadata
from typing import Any

import pytest
import yaml

from reflection.pieces import parse_piece_yaml
from tests.cli.conftest import Cli
from tests.cli.helpers import BUILTIN, applied_run
from tests.conftest import TEST_DB_URL
from tests.integration.conftest import decision
from tests.integration.test_pipeline import PYTEST_ENTRY

pytestmark = pytest.mark.integration

LONG_JOB = "job-" + "0123456789abcdef" * 4  # 68 characters: wider than any column left


def _whole(ids: list[str], output: str) -> bool:
    """Every id is on one line of `output`, whole."""
    return all(any(i in line for line in output.splitlines()) for i in ids)


def test_history_at_80_columns_in_a_pipe_never_breaks_an_id(cli: Cli, make_job: Any) -> None:
    """Too wide for 80 columns, history prints one record per line: every snapshot and
    job id whole; where the table fits (a wide terminal) it is a table."""
    make_job(LONG_JOB)
    make_job("job-short")
    snaps = [applied_run(cli.env, LONG_JOB, [PYTEST_ENTRY]).name]
    cli.env.script("job-short", {"content": decision("nothing")})
    cli.env.run("job-short")
    cli.monkeypatch.setenv("COLUMNS", "80")
    narrow = cli("history", "alice")
    assert narrow.exit_code == 0
    assert _whole([*snaps, LONG_JOB], narrow.stdout)
    first = narrow.stdout.splitlines()[0]
    assert first.startswith("snapshot=") and f"job={LONG_JOB}" in narrow.stdout
    assert "job=job-short" in narrow.stdout and "outcome=abstained" in narrow.stdout
    cli.monkeypatch.setenv("COLUMNS", "250")
    wide = cli("history", "alice")
    assert "┃ snapshot" in wide.stdout and _whole([*snaps, LONG_JOB], wide.stdout)


def test_proposals_at_80_columns_never_break_an_id(cli: Cli, make_job: Any) -> None:
    """A proposal of a long job id at 80 columns: one record per line, ids whole, the
    summary quoted."""
    cli.set("piece_edit_mode", "review")
    make_job(LONG_JOB)
    _stage(cli, LONG_JOB, _reserialised("(tuned)"))
    cli.monkeypatch.setenv("COLUMNS", "80")
    listed = cli("proposals")
    assert listed.exit_code == 0
    [line] = listed.stdout.splitlines()
    assert line.startswith("id=1 created=") and f"job={LONG_JOB}" in line
    assert 'summary="clearer description"' in line


def _reserialised(marker: str) -> dict[str, str]:
    """The built-in piece as a model might send it back: re-serialised whole (no
    comments, other quoting and layout), with one real change to its description."""
    data = parse_piece_yaml(BUILTIN.read_text())
    data["description"] = f"{data['description']} {marker}"
    return {"yaml": yaml.safe_dump(data, sort_keys=False), "summary": "clearer description"}


def _stage(cli: Cli, job_id: str, edit: dict[str, str]) -> None:
    cli.env.script(job_id, {"content": decision("tune", piece_edit=edit)})
    assert cli.env.run(job_id).outcome.value == "applied"


def test_proposals_diff_shows_the_change_not_a_reserialised_file(cli: Cli, make_job: Any) -> None:
    """A proposal that re-serialises the whole piece to change one line diffs as that one
    line: both pieces are compared as data, comments and layout aside."""
    cli.set("piece_edit_mode", "review")
    make_job("job-d")
    _stage(cli, "job-d", _reserialised("(tuned)"))
    shown = cli.json("proposals", "--diff", "1")
    changed = [
        line
        for line in shown["diff"].splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert len(changed) == 2, shown["diff"]
    assert changed[0].startswith("-description: ") and changed[1].endswith(" (tuned)")
    text = cli("proposals", "--diff", "1")
    assert text.exit_code == 0 and "(tuned)" in text.stdout


def test_run_dry_run_says_it_was_one(cli: Cli, make_job: Any) -> None:
    """`run --dry-run` says, first and last, that nothing was written."""
    make_job("job-dr")
    cli.env.script("job-dr", {"content": decision("learned", [PYTEST_ENTRY])})
    result = cli("run", "job-dr", "--dry-run")
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("dry run: ") and "nothing was written" in lines[0]
    assert lines[-1].startswith("dry run: ") and "no file, no row, no claim" in lines[-1]
    assert "dry run" not in cli("run", "job-dr").stdout


def test_backfill_dry_run_lists_the_jobs(cli: Cli, make_job: Any) -> None:
    """`backfill --dry-run` names each job it would publish, with its user and piece."""
    make_job("job-b1")
    make_job("job-b2", user_id="bob", status="aborted")
    result = cli("backfill", "--dry-run")
    assert result.exit_code == 0
    assert "would publish job-b1 (user alice, piece default, job succeeded)" in result.stdout
    assert "would publish job-b2 (user bob, piece default, job aborted)" in result.stdout
    assert "would publish 2 of 2 job(s)" in result.stdout


@pytest.mark.parametrize(
    "args",
    [("run", "job-none"), ("run", "job-none", "--dry-run"), ("enqueue", "job-none"),
     ("history", "nobody"), ("history", "../root"), ("show", "alice", "20260101T000000Z-abc"),
     ("show", "alice", "../etc"), ("revert", "alice", "20260101T000000Z-abc"),
     ("proposals", "--diff", "999"), ("approve", "999"), ("reject", "999"),
     ("protect", "alice", "nope"), ("protect", "alice", "Bad Name"),
     ("unprotect", "nobody", "x")],
    ids=" ".join,
)  # fmt: skip
def test_an_id_that_names_nothing_exits_4_in_every_command(cli: Cli, args: tuple[str, ...]) -> None:
    """Unknown or impossible: a job, user, snapshot, proposal or memory entry that does
    not exist is exit 4, one line, and with --json the error object says `not_found`."""
    cli.env.user().memory_dir.mkdir(parents=True)
    result = cli(*args)
    assert result.exit_code == 4, result.output
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    as_json = cli(*args, "--json")
    assert as_json.exit_code == 4
    error = json.loads(as_json.stdout)["error"]
    assert error["code"] == "not_found" and error["exit_code"] == 4 and error["message"]


def test_json_failures_print_an_error_object(cli: Cli, make_job: Any) -> None:
    """With --json a failure prints {"error": {code, message, exit_code}} on stdout and
    exits with that code: a service down (3), a refused revert (its code)."""
    cli.monkeypatch.setenv("REFLECTION_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/x")
    down = cli("stats", "--json")
    assert down.exit_code == 3
    error = json.loads(down.stdout)["error"]
    assert error["code"] == "unavailable" and "PostgreSQL is not reachable" in error["message"]
    assert error["exit_code"] == 3
    cli.monkeypatch.setenv("REFLECTION_DATABASE_URL", TEST_DB_URL)
    make_job("job-j")
    snap = applied_run(cli.env, "job-j", [PYTEST_ENTRY])
    cli.env.user().memory_file("prefers-pytest").write_text("edited by hand\n")
    refused = cli("revert", "alice", snap.name, "--json")
    assert refused.exit_code == 1
    assert json.loads(refused.stdout)["error"]["code"] == "revert_conflict"


def test_version(cli: Cli) -> None:
    """`reflection --version` prints the installed version."""
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"reflection {metadata.version('reflection-worker')}"
    assert re.fullmatch(r"reflection \d+\.\d+\.\d+\S*", result.stdout.strip())
