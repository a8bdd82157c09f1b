"""Loading a user's memory skips and reports malformed files; the index is stable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reflection.memory import load_memory, render_index
from reflection.models import Malformed, MemoryEntry, MemoryType
from reflection.paths import UserPaths


def entry_text(name: str, description: str = "a fact", type_: str = "project") -> str:
    return f"---\nname: {name}\ndescription: {description}\ntype: {type_}\n---\nbody of {name}\n"


@pytest.fixture
def paths(tmp_path: Path) -> UserPaths:
    return UserPaths(root=tmp_path, user_id="alice")


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {
        p.name: (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
        for p in sorted(folder.iterdir())
    }


def test_missing_memory_folder_is_empty(paths: UserPaths) -> None:
    """No memory folder yet: no entries, nothing malformed."""
    assert load_memory(paths) == ((), ())


def test_mixed_folder_loads_good_files_and_reports_the_rest(
    paths: UserPaths, tmp_path: Path
) -> None:
    """Valid entries load sorted by name; each bad file is reported once, none deleted."""
    mem = paths.memory_dir
    mem.mkdir(parents=True)
    (mem / "zeta.md").write_text(entry_text("zeta"))
    (mem / "alpha.md").write_text(entry_text("alpha", type_="user"))
    (mem / "alpha-2.md").write_text(entry_text("alpha-2"))
    (mem / "MEMORY.md").write_text("# Memory index\n")
    (mem / "notes.txt").write_text("not an entry")
    (mem / ".alpha.md.x1y2.tmp").write_text("half written")
    (mem / "broken.md").write_text("no frontmatter at all")
    (mem / "renamed.md").write_text(entry_text("original-name"))
    (mem / "Bad Name.md").write_text(entry_text("bad-name"))
    (mem / "latin1.md").write_bytes(entry_text("latin1").encode() + "caf\xe9".encode("latin-1"))
    (mem / "huge.md").write_text(entry_text("huge") + "x" * 300_000)
    (mem / "folder.md").mkdir()
    outside = tmp_path / "outside.md"
    outside.write_text(entry_text("linked"))
    (mem / "linked.md").symlink_to(outside)
    os.mkfifo(mem / "pipe.md")
    before = snapshot(mem)

    entries, malformed = load_memory(paths)

    assert [e.name for e in entries] == ["alpha", "alpha-2", "zeta"]
    assert entries[0] == MemoryEntry(
        name="alpha", description="a fact", type="user", body="body of alpha\n"
    )
    reasons = {m.path: m.reason for m in malformed}
    assert list(reasons) == sorted(reasons)
    assert reasons.keys() == {
        "memory/Bad Name.md",
        "memory/broken.md",
        "memory/folder.md",
        "memory/huge.md",
        "memory/latin1.md",
        "memory/linked.md",
        "memory/pipe.md",
        "memory/renamed.md",
    }
    assert "valid entry name" in reasons["memory/Bad Name.md"]
    assert "no frontmatter" in reasons["memory/broken.md"]
    assert "directory" in reasons["memory/folder.md"]
    assert "larger than" in reasons["memory/huge.md"]
    assert "not UTF-8" in reasons["memory/latin1.md"]
    assert "symlink" in reasons["memory/linked.md"]
    assert "regular file" in reasons["memory/pipe.md"]
    assert "differs from the file name" in reasons["memory/renamed.md"]
    assert snapshot(mem) == before


def test_max_file_bytes_is_configurable(paths: UserPaths) -> None:
    """A file over the given bound is reported, not read."""
    paths.memory_dir.mkdir(parents=True)
    (paths.memory_dir / "a.md").write_text(entry_text("a"))
    entries, malformed = load_memory(paths, max_file_bytes=20)
    assert entries == ()
    assert malformed == (Malformed(path="memory/a.md", reason="larger than 20 bytes"),)


def test_a_symlinked_memory_folder_is_not_followed(paths: UserPaths, tmp_path: Path) -> None:
    """A memory folder that is a link (out of the user's home) is reported, not read."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.md").write_text(entry_text("a"))
    paths.home.mkdir()
    paths.memory_dir.symlink_to(elsewhere)
    entries, malformed = load_memory(paths)
    assert entries == ()
    assert [m.path for m in malformed] == ["memory/"]


def test_a_memory_path_that_is_a_file_never_raises(paths: UserPaths) -> None:
    """Even a file where the folder should be is reported, not raised."""
    paths.home.mkdir()
    paths.memory_dir.write_text("oops")
    entries, malformed = load_memory(paths)
    assert entries == () and len(malformed) == 1


def e(name: str, type_: MemoryType = "project", description: str = "a fact") -> MemoryEntry:
    return MemoryEntry(name=name, description=description, type=type_, body="b")


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([], "# Memory index\n"),
        (
            [e("uses-uv", "user", "Manages envs with uv"), e("deploy-freeze")],
            "# Memory index\n\n"
            "- deploy-freeze (project): a fact\n"
            "- uses-uv (user): Manages envs with uv\n",
        ),
        ([e("x", description="one\u2028two")], "# Memory index\n\n- x (project): one two\n"),
        (
            [e("x", description="a\x1b]52;c;cHduZWQ=\x07b\x9b2J\u202ec\U000e0041\x7fd\te")],
            "# Memory index\n\n- x (project): a]52;c;cHduZWQ=b2Jcd e\n",
        ),
    ],
    ids=["empty", "sorted", "line-separator", "controls-dropped"],
)
def test_render_index(entries: list[MemoryEntry], expected: str) -> None:
    """A heading, one line per entry sorted by name, newline-terminated; line breaks
    and tabs become spaces, control, bidi and tag characters are dropped."""
    assert render_index(entries) == expected


def test_render_index_is_stable_under_order() -> None:
    """The same entries in any order give the same text."""
    items = [e("b"), e("a"), e("c")]
    assert render_index(items) == render_index(reversed(items)) == render_index(iter(items))


def test_a_changed_file_is_parsed_again(paths: UserPaths) -> None:
    """Parses are cached by content: an edited file (same size even) gives its new
    fields, a file changed to invalid is reported, a large file is parsed each time."""
    paths.memory_dir.mkdir(parents=True)
    f = paths.memory_dir / "fact.md"
    f.write_text(entry_text("fact", "first one"))
    assert load_memory(paths)[0][0].description == "first one"
    f.write_text(entry_text("fact", "other one"))
    assert load_memory(paths)[0][0].description == "other one"
    f.write_text("no frontmatter")
    assert load_memory(paths)[0] == ()
    big = entry_text("fact", "big one") + "x" * 20_000
    f.write_text(big)
    assert load_memory(paths)[0][0].description == "big one"
    f.write_text(big.replace("big one", "big two"))
    assert load_memory(paths)[0][0].description == "big two"
