"""Hostile or broken state on disk: symlinks planted inside the user's folder, malformed
memory files, a broken piece copy, a torn index line, garbage journals. Each is reported
and survived with a precise code; nothing outside the user's folder is read into a write,
nothing planted is deleted."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reflection.paths import UserPaths
from reflection.records import FileChange, Journal
from reflection.snapshot import iter_index
from tests.hostile.conftest import (
    CANARY,
    Hostile,
    add,
    decision,
    edit,
    expect,
    movement,
    piece_yaml,
)

pytestmark = pytest.mark.integration

ABSTAIN = decision("nothing to learn")
GOOD_EDIT = edit(piece_yaml(lambda d: movement(d, "plan").update(instruction="Plan it well.")))


def _link(h: Hostile, rel: str, target: Path) -> None:
    link = h.user().home / rel
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def _write(h: Hostile, rel: str, data: bytes) -> None:
    path = h.user().home / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def memory_dir_out(h: Hostile, job: str) -> None:
    _link(h, "memory", h.outside)


def memory_file_out(h: Hostile, job: str) -> None:
    h.entry("real")
    _link(h, "memory/canary.md", h.outside / "canary.md")


def memory_file_inside(h: Hostile, job: str) -> None:
    h.entry("real")
    _link(h, "memory/alias.md", h.user().memory_file("real"))


def memory_index_out(h: Hostile, job: str) -> None:
    h.entry("real")
    _link(h, "memory/MEMORY.md", h.outside / "canary.md")


def piece_copy_out(h: Hostile, job: str) -> None:
    _link(h, "pieces/default.yaml", h.outside / "default.yaml")


def pieces_dir_out(h: Hostile, job: str) -> None:
    _link(h, "pieces", h.outside)


def activity_log_out(h: Hostile, job: str) -> None:
    _link(h, f"jobs/{job}/activity.log", h.outside / "activity.log")


def job_dir_out(h: Hostile, job: str) -> None:
    _link(h, f"jobs/{job}", h.outside)


def job_dir_inside(h: Hostile, job: str) -> None:
    _write(h, "jobs/other/activity.log", b"another job's log\n")
    _link(h, f"jobs/{job}", h.user().home / "jobs" / "other")


def activity_log_fifo(h: Hostile, job: str) -> None:
    path = h.user().activity_log(job)
    path.parent.mkdir(parents=True)
    os.mkfifo(path)


def reflections_dir_out(h: Hostile, job: str) -> None:
    _link(h, "reflections", h.outside)


def index_out(h: Hostile, job: str) -> None:
    _link(h, "reflections/index.jsonl", h.outside / "canary.md")


def journal_dir_out(h: Hostile, job: str) -> None:
    _link(h, "reflections/.journal", h.outside)


def malformed_memory(h: Hostile, job: str) -> None:
    h.entry("real")
    _write(h, "memory/broken.md", b"no frontmatter at all\n")


def name_differs_from_stem(h: Hostile, job: str) -> None:
    _write(h, "memory/foo.md", b"---\nname: bar\ndescription: d\ntype: user\n---\nbody")


def memory_fifo(h: Hostile, job: str) -> None:
    h.user().memory_dir.mkdir(parents=True)
    os.mkfifo(h.user().memory_dir / "fifo.md")


def memory_bomb(h: Hostile, job: str) -> None:
    bomb = "---\nname: bomb\ndescription: d\ntype: user\na: &a [x,x,x]\nb: [*a,*a,*a]\n---\nb"
    _write(h, "memory/bomb.md", bomb.encode())


def memory_python_tag(h: Hostile, job: str) -> None:
    text = "---\nname: tag\ndescription: !!python/object/apply:os.system [id]\ntype: user\n---\n"
    _write(h, "memory/tag.md", text.encode())


def memory_huge(h: Hostile, job: str) -> None:
    head = b"---\nname: huge\ndescription: d\ntype: user\n---\n"
    _write(h, "memory/huge.md", head + b"x" * 300_000)


def memory_not_utf8(h: Hostile, job: str) -> None:
    _write(h, "memory/latin.md", b"---\nname: latin\ndescription: caf\xe9\ntype: user\n---\n")


def memory_dir_named_md(h: Hostile, job: str) -> None:
    (h.user().memory_dir / "folder.md").mkdir(parents=True)


def broken_piece_copy(h: Hostile, job: str) -> None:
    _write(h, "pieces/default.yaml", b"name: default\nmovements: [\n  - {name: plan\n")


def piece_copy_not_utf8(h: Hostile, job: str) -> None:
    _write(h, "pieces/default.yaml", b"name: d\xe9fault\n")


def garbage_journal(h: Hostile, job: str) -> None:
    _write(h, "reflections/.journal/20200101T000000Z-garbage.json", b"\x00garbage{{{")


def escaping_journal(h: Hostile, job: str) -> None:
    planted = Journal(
        snapshot_id="20200101T000000Z-planted",
        original_job_id="job-planted",
        reflection_job_id="r",
        user_id="alice",
        fence=1,
        files=[FileChange(path="../../outside/canary.md", before=None, after="pwned")],
        snapshot={},
        meta={},
        metrics={},
        piece_edit=None,
    )
    _write(
        h, "reflections/.journal/20200101T000000Z-planted.json", planted.model_dump_json().encode()
    )


Setup = Callable[[Hostile, str], None]
# (case id, setup, LLM answer, expected failure code or decision codes)
DISK: list[tuple[str, Setup, dict[str, Any], str | list[str]]] = [
    ("memory-dir-out-add", memory_dir_out, decision("x", [add("new")]), "input_invalid"),
    ("memory-dir-out-abstain", memory_dir_out, ABSTAIN, []),
    (
        "memory-file-out-update",
        memory_file_out,
        decision("x", [{**add("canary"), "op": "update"}]),
        ["not_found"],
    ),
    ("memory-file-out-add", memory_file_out, decision("x", [add("canary")]), ["exists"]),
    (
        "memory-file-out-remove",
        memory_file_out,
        decision("x", [{"op": "remove", "name": "canary"}]),
        ["not_found"],
    ),
    (
        "memory-file-inside-link",
        memory_file_inside,
        decision("x", [{**add("alias"), "op": "update"}]),
        ["not_found"],
    ),
    ("memory-index-out", memory_index_out, decision("x", [add("new")]), "input_invalid"),
    ("piece-copy-out", piece_copy_out, GOOD_EDIT, "input_invalid"),
    ("pieces-dir-out", pieces_dir_out, GOOD_EDIT, "input_invalid"),
    ("activity-log-out", activity_log_out, ABSTAIN, "input_invalid"),
    ("job-dir-out", job_dir_out, ABSTAIN, "input_invalid"),
    # Nothing below the home is read through a link, even one that stays inside.
    ("job-dir-inside", job_dir_inside, ABSTAIN, "input_invalid"),
    ("activity-log-fifo", activity_log_fifo, ABSTAIN, "input_invalid"),
    ("reflections-dir-out", reflections_dir_out, ABSTAIN, "input_invalid"),
    ("index-out", index_out, ABSTAIN, "input_invalid"),
    ("journal-dir-out", journal_dir_out, ABSTAIN, "input_invalid"),
    ("malformed-memory-add", malformed_memory, decision("x", [add("new")]), ["ok"]),
    (
        "malformed-memory-update",
        malformed_memory,
        decision("x", [{**add("broken"), "op": "update"}]),
        ["not_found"],
    ),
    ("malformed-memory-overwrite", malformed_memory, decision("x", [add("broken")]), ["exists"]),
    (
        "name-not-stem-update",
        name_differs_from_stem,
        decision("x", [{**add("foo"), "op": "update"}]),
        ["not_found"],
    ),
    ("name-not-stem-add-stem", name_differs_from_stem, decision("x", [add("foo")]), ["exists"]),
    ("name-not-stem-add-name", name_differs_from_stem, decision("x", [add("bar")]), ["ok"]),
    ("memory-fifo", memory_fifo, decision("x", [{"op": "remove", "name": "fifo"}]), ["not_found"]),
    ("memory-bomb", memory_bomb, decision("x", [{**add("bomb"), "op": "update"}]), ["not_found"]),
    ("memory-python-tag", memory_python_tag, decision("x", [add("new")]), ["ok"]),
    ("memory-huge", memory_huge, decision("x", [{"op": "remove", "name": "huge"}]), ["not_found"]),
    ("memory-not-utf8", memory_not_utf8, ABSTAIN, []),
    ("memory-dir-named-md", memory_dir_named_md, decision("x", [add("folder")]), ["exists"]),
    ("broken-piece-copy-edit", broken_piece_copy, GOOD_EDIT, ["piece_invalid"]),
    ("broken-piece-copy-memory", broken_piece_copy, decision("x", [add("new")]), ["ok"]),
    ("piece-copy-not-utf8", piece_copy_not_utf8, ABSTAIN, "input_invalid"),
    ("garbage-journal", garbage_journal, decision("x", [add("new")]), ["ok"]),
    ("escaping-journal", escaping_journal, decision("x", [add("new")]), ["ok"]),
]


@pytest.mark.parametrize(("case", "setup", "reply", "expected"), DISK, ids=[d[0] for d in DISK])
def test_disk_state_is_survived(
    hostile: Hostile, case: str, setup: Setup, reply: dict[str, Any], expected: str | list[str]
) -> None:
    """Each planted or broken file gets its code; nothing planted is changed or deleted."""
    job = f"job-{case}"
    setup(hostile, job)
    report = hostile.run(job, reply)
    expect(report, expected)
    hostile.canary_intact()
    assert (hostile.outside / "canary.md").read_text() == CANARY


def test_a_link_planted_after_the_checks_is_not_read_through(
    hostile: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The activity log is opened folder by folder from the home, refusing links: a link
    planted after any check (here: no check at all) still cannot lead the read outside."""
    monkeypatch.setattr(UserPaths, "contained", lambda self, path: path)
    job_dir_out(hostile, "job-race")
    report = hostile.run("job-race", ABSTAIN)
    expect(report, "input_invalid")
    assert all(CANARY not in r["json"]["messages"][1]["content"] for r in hostile.env.llm.requests)


def test_malformed_files_are_reported_to_the_model(hostile: Hostile) -> None:
    """Skipped memory files are listed in the prompt as malformed, with the reason."""
    malformed_memory(hostile, "job-report")
    name_differs_from_stem(hostile, "job-report")
    hostile.run("job-report", ABSTAIN)
    prompt = hostile.env.llm.requests[-1]["json"]["messages"][1]["content"]
    assert "memory/broken.md" in prompt and "memory/foo.md" in prompt
    assert "differs from the file name" in prompt


def test_torn_index_line_then_a_run_appends_a_whole_line(hostile: Hostile) -> None:
    """A truncated last index line stays; the next run's line is whole and readable."""
    hostile.run("job-first", ABSTAIN)
    index = hostile.user().snapshot_index
    lines = index.read_bytes()
    index.write_bytes(lines + b'{"snapshot_id": "torn", "outc')
    report = hostile.run("job-second", ABSTAIN)
    items = list(iter_index(hostile.user()))
    assert [i.original_job_id for i in items] == ["job-first", "job-second"]
    assert report.snapshot_dir is not None and items[-1].snapshot_id == report.snapshot_dir.name
    assert b'"outc\n' in index.read_bytes()


def test_unparsable_piece_copy_is_never_overwritten(hostile: Hostile) -> None:
    """A user copy that no longer parses is left as it is: edits are piece_invalid."""
    broken_piece_copy(hostile, "job-bp")
    before = hostile.user().piece_copy("default").read_bytes()
    report = hostile.run("job-bp", GOOD_EDIT)
    assert "current piece is invalid" in report.verdicts[0].detail
    assert hostile.user().piece_copy("default").read_bytes() == before


def test_garbage_journal_is_left_for_an_operator(hostile: Hostile, caplog: Any) -> None:
    """An unreadable journal is logged and kept, never deleted or rolled forward."""
    garbage_journal(hostile, "job-gj")
    escaping_journal(hostile, "job-gj")
    hostile.run("job-gj", ABSTAIN)
    left = sorted(p.name for p in hostile.user().journal_dir.iterdir())
    assert left == ["20200101T000000Z-garbage.json", "20200101T000000Z-planted.json"]
    assert "resolves outside the user's folder" in caplog.text
    assert json.loads(hostile.user().snapshot_index.read_text().splitlines()[-1])
