"""Atomic writes never leave a half file and never follow a planted link."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from reflection import fsio
from reflection.paths import UnsafePathError


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    """The new content replaces the old; no temp file stays behind; mode is 0640."""
    p = tmp_path / "d" / "f.md"
    fsio.atomic_write(p, "one")
    fsio.atomic_write(p, "two")
    assert p.read_text() == "two"
    assert os.listdir(p.parent) == ["f.md"]
    assert stat.S_IMODE(p.stat().st_mode) == 0o640


@pytest.mark.parametrize("write", [fsio.atomic_write, fsio.append_line])
def test_missing_folders_are_created_0750(
    tmp_path: Path, write: Callable[[Path, str], None]
) -> None:
    """A write into folders that do not exist yet creates each of them, mode 0750."""
    p = tmp_path / "a" / "b" / "f.md"
    write(p, "x")
    assert p.read_text().rstrip("\n") == "x"
    for folder in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o750


def test_failed_write_leaves_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the write dies before the rename, the old file is intact and no temp remains."""
    p = tmp_path / "f.md"
    fsio.atomic_write(p, "old")

    def boom(*a: object, **k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(fsio.os, "replace", boom)  # type: ignore[attr-defined]
    with pytest.raises(OSError, match="disk full"):
        fsio.atomic_write(p, "new")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.md"]


def test_atomic_write_replaces_a_symlink_instead_of_following_it(tmp_path: Path) -> None:
    """A link planted at the target is replaced; the file it pointed to is untouched."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "entry.md"
    link.symlink_to(victim)
    fsio.atomic_write(link, "new")
    assert victim.read_text() == "precious"
    assert not link.is_symlink() and link.read_text() == "new"


def test_read_text_limited(tmp_path: Path) -> None:
    """Too large, symlinked or non-UTF-8 files are refused."""
    p = tmp_path / "f"
    p.write_bytes(b"x" * 11)
    with pytest.raises(ValueError, match="larger"):
        fsio.read_text_limited(p, 10)
    p.write_bytes(b"\xff\xfe")
    with pytest.raises(UnicodeDecodeError):
        fsio.read_text_limited(p, 10)
    link = tmp_path / "l"
    link.symlink_to(p)
    with pytest.raises(OSError):
        fsio.read_text_limited(link, 10)


def test_append_line_keeps_lines_whole(tmp_path: Path) -> None:
    """Each append is one full line."""
    p = tmp_path / "index.jsonl"
    fsio.append_line(p, '{"a": 1}')
    fsio.append_line(p, '{"b": 2}\n')
    assert p.read_text() == '{"a": 1}\n{"b": 2}\n'


def _planted(tmp_path: Path) -> tuple[Path, Path]:
    """A home whose `memory` folder is a link to a folder outside it."""
    home, outside = tmp_path / "home", tmp_path / "outside"
    home.mkdir()
    outside.mkdir()
    (home / "memory").symlink_to(outside)
    return home, outside


@pytest.mark.parametrize(
    "write",
    [
        lambda p, root: fsio.atomic_write(p, "x", root=root),
        lambda p, root: fsio.append_line(p, "x", root=root),
        lambda p, root: fsio.atomic_delete(p, root=root),
    ],
    ids=["atomic_write", "append_line", "atomic_delete"],
)
def test_under_a_root_no_write_goes_through_a_link(
    tmp_path: Path, write: Callable[[Path, Path], None]
) -> None:
    """With `root`, a folder below it that is a link (planted even after any check the
    caller made) is refused, and nothing outside is created, changed or removed."""
    home, outside = _planted(tmp_path)
    (outside / "x.md").write_text("precious")
    with pytest.raises(UnsafePathError, match="symlink"):
        write(home / "memory" / "x.md", home)
    with pytest.raises(UnsafePathError, match="symlink"):
        write(home / "memory" / "deeper" / "x.md", home)
    assert sorted(os.listdir(outside)) == ["x.md"]
    assert (outside / "x.md").read_text() == "precious"


def test_under_a_root_writes_create_folders_and_refuse_files_and_dot_dot(
    tmp_path: Path,
) -> None:
    """Missing folders below the root are created 0750; a file where a folder should be,
    a `..` or a path outside the root is refused. The root itself may be a link."""
    real = tmp_path / "disk"
    real.mkdir()
    home = tmp_path / "home"
    home.symlink_to(real)  # an operator's mount
    fsio.atomic_write(home / "a" / "b" / "f.md", "one", root=home)
    fsio.append_line(home / "a" / "index.jsonl", "{}", root=home)
    assert (real / "a" / "b" / "f.md").read_text() == "one"
    assert stat.S_IMODE((real / "a" / "b").stat().st_mode) == 0o750
    fsio.atomic_delete(home / "a" / "b" / "f.md", root=home)
    fsio.atomic_delete(home / "a" / "b" / "f.md", root=home)  # already gone: no error
    fsio.atomic_delete(home / "missing" / "f.md", root=home)
    assert not (real / "a" / "b" / "f.md").exists()
    (real / "file").write_text("not a folder")
    with pytest.raises(UnsafePathError, match="not a folder"):
        fsio.atomic_write(home / "file" / "f.md", "x", root=home)
    with pytest.raises(UnsafePathError, match=r"\.\."):
        fsio.atomic_write(home / "a" / ".." / ".." / "f.md", "x", root=home)
    with pytest.raises(UnsafePathError, match="not under"):
        fsio.atomic_write(tmp_path / "f.md", "x", root=home)
    assert not (tmp_path / "f.md").exists()


def test_under_a_root_no_read_goes_through_a_link(tmp_path: Path) -> None:
    """read_text_limited with `root` reads a file below it, refuses one behind a linked
    folder (whatever it holds), and reports a missing one as missing."""
    home, outside = _planted(tmp_path)
    (outside / "x.md").write_text("secret")
    (home / "pieces").mkdir()
    (home / "pieces" / "p.yaml").write_text("mine")
    assert fsio.read_text_limited(home / "pieces" / "p.yaml", 100, root=home) == "mine"
    with pytest.raises(UnsafePathError, match="symlink"):
        fsio.read_text_limited(home / "memory" / "x.md", 100, root=home)
    with pytest.raises(FileNotFoundError):
        fsio.read_text_limited(home / "jobs" / "j" / "activity.log", 100, root=home)


def test_open_file_names_the_whole_path_when_it_refuses(tmp_path: Path) -> None:
    """A file that is itself a link (O_NOFOLLOW) or is missing fails as the OS says, with
    the whole path in the error, not just its name in the folder."""
    home = tmp_path / "home"
    (home / "reflections").mkdir(parents=True)
    index = home / "reflections" / "index.jsonl"
    index.symlink_to(tmp_path / "elsewhere")
    flags = os.O_RDONLY | os.O_NOFOLLOW
    with pytest.raises(OSError, match="symbolic links") as linked:
        fsio.open_file(index, flags, root=home)
    assert linked.value.filename == str(index)
    with pytest.raises(FileNotFoundError) as missing:
        fsio.open_file(home / "reflections" / "meta.json", flags, root=home)
    assert missing.value.filename == str(home / "reflections" / "meta.json")
