"""A FIFO, a socket or a folder planted where the worker reads or appends a file of the
user's folder never blocks the run nor crashes it (issue 22, item 1; SPEC section 14).

Each run goes through the real pipeline in a thread whose join timeout detects a block
(tests/blocking.py). What each location means, when something else than a regular file
stands there:

- a journal (`reflections/.journal/<id>.json`): reported and left for an operator;
- `memory/MEMORY.md`: a FIFO is replaced by the index the run writes (a rename); a
  folder fails the run `input_invalid` before anything is written;
- a memory entry (`memory/<name>.md`): malformed, skipped, never deleted;
- `reflections/index.jsonl`: a FIFO is replaced by an index holding the run's line; a
  folder fails the run `input_invalid` before anything is written;
- `reflections/<snapshot>/meta.json`: `show` and `revert` refuse it in one line naming
  it, `stats` skips it;
- the piece copy and the activity log: the run fails `input_invalid`, naming the file;
- a FIFO where a folder goes (`memory`, `reflections`, `jobs/<id>`): never opened
  (O_DIRECTORY), reported like a file in a folder's place.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reflection.models import Outcome
from reflection.pipeline import RunReport
from tests.blocking import returns, special_file
from tests.cli.conftest import Cli, cli
from tests.hostile.conftest import Hostile, add, decision, expect, hostile
from tests.integration.conftest import env

__all__ = ["cli", "env", "hostile"]

pytestmark = pytest.mark.integration

ABSTAIN = decision("nothing to learn")
ADD = decision("learned", [add("new-fact")])
JOURNAL = "reflections/.journal/20200101T000000Z-planted.json"


def _kind(path: Path) -> str:
    mode = path.lstat().st_mode
    if stat.S_ISFIFO(mode):
        return "fifo"
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def plant(h: Hostile, rel: str, kind: str) -> Path:
    """A FIFO (`fifo`) or an empty folder (`dir`) at `rel` in alice's home."""
    path: Path = h.user().home / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    return path


def run(h: Hostile, job: str, reply: object, planted: Path) -> RunReport:
    """The run of `job`, failing the test if it blocks (on `planted`)."""
    return returns(lambda: h.run(job, reply), fifos=[planted])


@pytest.mark.parametrize("kind", ["fifo", "dir"])
def test_a_journal_that_is_not_a_file_is_left_for_an_operator(
    hostile: Hostile, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A FIFO or a folder among the journals is reported, left as it is, and the run
    applies its own change."""
    planted = plant(hostile, JOURNAL, kind)
    expect(run(hostile, "job-j", ADD, planted), ["ok"])
    assert _kind(planted) == kind
    assert f"journal {planted} is unreadable" in caplog.text
    assert "left in place for an operator" in caplog.text


def test_a_fifo_at_memory_md_is_replaced_by_the_index(hostile: Hostile) -> None:
    """A run that changes memory replaces a FIFO at MEMORY.md by the index (a rename);
    one that changes nothing leaves it."""
    hostile.entry("real")
    planted = plant(hostile, "memory/MEMORY.md", "fifo")
    expect(run(hostile, "job-a", ABSTAIN, planted), [])
    assert _kind(planted) == "fifo"
    expect(run(hostile, "job-m", ADD, planted), ["ok"])
    assert _kind(planted) == "file"
    assert "- new-fact (project)" in planted.read_text()
    assert "- real (project)" in planted.read_text()


def test_a_folder_at_memory_md_fails_the_run_naming_it(hostile: Hostile) -> None:
    """A folder at MEMORY.md cannot be replaced: the run fails `input_invalid` before any
    write (the harness checks nothing changed), and says which path, not a descriptor."""
    planted = plant(hostile, "memory/MEMORY.md", "dir")
    report = run(hostile, "job-d", ADD, planted)
    expect(report, "input_invalid")
    assert f"{planted} is a folder, not a regular file" in report.detail


@pytest.mark.parametrize("kind", ["fifo", "dir"])
def test_a_memory_entry_that_is_not_a_file_is_malformed_and_kept(
    hostile: Hostile, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An entry that is a FIFO or a folder is reported malformed and skipped: an add of
    its name is `exists`, a remove `not_found`; it is never replaced nor deleted."""
    hostile.entry("real")
    planted = plant(hostile, "memory/odd.md", kind)
    expect(run(hostile, "job-e1", decision("x", [add("odd")]), planted), ["exists"])
    remove = {"op": "remove", "name": "odd"}
    expect(run(hostile, "job-e2", decision("x", [remove]), planted), ["not_found"])
    assert _kind(planted) == kind
    assert "malformed memory file memory/odd.md skipped" in caplog.text


def test_a_fifo_at_the_index_is_replaced_by_one_holding_the_run(hostile: Hostile) -> None:
    """The snapshot index's line is never appended to a FIFO: the FIFO is replaced by an
    index holding that line, and the next run appends to it."""
    planted = plant(hostile, "reflections/index.jsonl", "fifo")
    first = run(hostile, "job-i1", ADD, planted)
    expect(first, ["ok"])
    assert _kind(planted) == "file"
    second = run(hostile, "job-i2", ABSTAIN, planted)
    lines = [json.loads(x) for x in planted.read_text().splitlines()]
    assert [x["original_job_id"] for x in lines] == ["job-i1", "job-i2"]
    assert second.snapshot_dir is not None
    assert lines[1]["snapshot_id"] == second.snapshot_dir.name


@pytest.mark.parametrize("reply", [ADD, ABSTAIN], ids=["add", "abstain"])
def test_a_folder_at_the_index_fails_the_run_before_any_write(
    hostile: Hostile, reply: object
) -> None:
    """A folder at index.jsonl fails the run `input_invalid` when it is planned, so no
    memory file, snapshot or journal is written half-way (the harness checks)."""
    planted = plant(hostile, "reflections/index.jsonl", "dir")
    report = run(hostile, "job-x", reply, planted)
    expect(report, "input_invalid")
    assert f"{planted} is a folder" in report.detail


# (location, kind, LLM answer) -> the run fails `input_invalid` naming the path
FAILS: list[tuple[str, str, object]] = [
    ("pieces/default.yaml", "fifo", ABSTAIN),
    ("pieces/default.yaml", "dir", ABSTAIN),
    ("jobs/job-f/activity.log", "fifo", ABSTAIN),
    ("jobs/job-f/activity.log", "dir", ABSTAIN),
    ("jobs/job-f", "fifo", ABSTAIN),
    ("memory", "fifo", ADD),
    ("reflections", "fifo", ABSTAIN),
    ("reflections/.journal", "fifo", ADD),
]


@pytest.mark.parametrize(("rel", "kind", "reply"), FAILS, ids=[f"{r}-{k}" for r, k, _ in FAILS])
def test_a_required_file_or_folder_that_is_a_fifo_fails_the_run(
    hostile: Hostile, rel: str, kind: str, reply: object
) -> None:
    """The piece copy, the activity log, or a folder the run reads or writes through,
    found to be a FIFO (or a folder where a file goes), fails the run `input_invalid`
    naming it; nothing is written and the FIFO is left."""
    planted = plant(hostile, rel, kind)
    report = run(hostile, "job-f", reply, planted)
    expect(report, "input_invalid")
    assert str(planted) in report.detail
    assert _kind(planted) == kind


def test_a_fifo_memory_folder_is_reported_and_the_run_goes_on(hostile: Hostile) -> None:
    """A FIFO where the memory folder goes is reported; a run that changes no memory
    still ends with its snapshot."""
    planted = plant(hostile, "memory", "fifo")
    report = run(hostile, "job-mf", ABSTAIN, planted)
    expect(report, [])
    assert report.snapshot_dir is not None


@pytest.fixture
def applied(cli: Cli, make_job: Any) -> Iterator[tuple[Cli, Path]]:
    """An applied run's snapshot folder (the CLI's settings point at the same root)."""
    make_job("job-s")
    cli.env.script("job-s", {"content": ADD})
    report = cli.env.run("job-s")
    assert report.snapshot_dir is not None
    yield cli, report.snapshot_dir


KINDS = ["fifo", "dir", "socket"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_snapshot_meta_that_is_not_a_file_is_refused_by_the_cli(
    applied: tuple[Cli, Path], kind: str
) -> None:
    """`show` and `revert` refuse a meta.json that is a FIFO, a socket or a folder in one
    line naming it (exit 1), without blocking; `stats` and `history` still answer."""
    cli, snap = applied
    meta = snap / "meta.json"
    meta.unlink()
    with special_file(meta, kind):
        for cmd in ("show", "revert"):
            result = returns(functools.partial(cli, cmd, "alice", snap.name), fifos=[meta])
            assert result.exit_code == 1, result.output
            assert f"{meta} is a " in result.stderr and "not a regular file" in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1
        assert returns(lambda: cli("stats"), fifos=[meta]).exit_code == 0
        assert returns(lambda: cli("history", "alice"), fifos=[meta]).exit_code == 0
    assert cli.env.user().memory_file("new-fact").exists()  # nothing reverted


def test_history_refuses_a_fifo_index_in_one_line(applied: tuple[Cli, Path]) -> None:
    """`history` on an index that is a FIFO fails in one line naming it, never waits."""
    cli, _ = applied
    index = cli.env.user().snapshot_index
    index.unlink()
    os.mkfifo(index)
    result = returns(lambda: cli("history", "alice"), fifos=[index])
    assert result.exit_code == 1
    assert f"{index} is a FIFO, not a regular file" in result.stderr


def test_several_fifos_in_one_folder_never_stop_its_runs(
    hostile: Hostile, caplog: pytest.LogCaptureFixture
) -> None:
    """Several FIFOs at once in one user's folder: runs go on, one metrics row each."""
    caplog.set_level(logging.WARNING)
    planted = [
        plant(hostile, JOURNAL, "fifo"),
        plant(hostile, "memory/MEMORY.md", "fifo"),
        plant(hostile, "memory/pipe.md", "fifo"),
        plant(hostile, "reflections/index.jsonl", "fifo"),
        plant(hostile, "jobs/job-2/activity.log", "fifo"),
    ]

    def outcome(job: str) -> Outcome:
        return hostile.run(job, ADD).outcome

    outcomes = [
        returns(functools.partial(outcome, job), fifos=planted)
        for job in ("job-1", "job-2", "job-3")
    ]
    assert outcomes == [Outcome.APPLIED, Outcome.FAILED, Outcome.REJECTED]
    assert len(hostile.env.metrics()) == 3
