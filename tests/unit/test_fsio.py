"""Atomic writes never leave a half file and never follow a planted link."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from reflection import fsio


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

    def boom(*a: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(fsio.os, "replace", boom)
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
