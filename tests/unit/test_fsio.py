"""Atomic writes never leave a half file and never follow a planted link; no open of a
user's file blocks or reads anything but a regular file."""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from reflection import fsio
from reflection.errors import InputError
from reflection.paths import FolderInPlaceError, NotRegularFileError, UnsafePathError
from tests.blocking import returns, special_file


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


def test_open_regular_names_the_whole_path_when_it_refuses(tmp_path: Path) -> None:
    """A file that is itself a link (O_NOFOLLOW) or is missing fails as the OS says, with
    the whole path in the error, not just its name in the folder."""
    home = tmp_path / "home"
    (home / "reflections").mkdir(parents=True)
    index = home / "reflections" / "index.jsonl"
    index.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError, match="symbolic links") as linked:
        fsio.open_regular(index, os.O_RDONLY, root=home)
    assert linked.value.filename == str(index)
    with pytest.raises(FileNotFoundError) as missing:
        fsio.open_regular(home / "reflections" / "meta.json", os.O_RDONLY, root=home)
    assert missing.value.filename == str(home / "reflections" / "meta.json")


KINDS = {"fifo": "FIFO", "dir": "folder", "socket": "socket"}
OPENS = {
    "read": os.O_RDONLY,
    "append": os.O_RDWR | os.O_CREAT | os.O_APPEND,
    "write": os.O_WRONLY,
}


@pytest.mark.parametrize("flags", OPENS.values(), ids=OPENS.keys())
@pytest.mark.parametrize("kind", KINDS)
def test_open_regular_refuses_what_is_not_a_regular_file(
    tmp_path: Path, kind: str, flags: int
) -> None:
    """A FIFO, a socket or a folder is refused, for reading, appending or writing,
    without blocking, by an error naming the path and what is there."""
    path = tmp_path / "f"
    with special_file(path, kind), pytest.raises(NotRegularFileError) as refused:
        returns(lambda: fsio.open_regular(path, flags, root=tmp_path), fifos=[path])
    assert str(refused.value) == (
        f"{path} is a {KINDS[kind]}, not a regular file; refusing to open it"
    )
    assert isinstance(refused.value, InputError) and isinstance(refused.value, ValueError)
    assert isinstance(refused.value, UnsafePathError) == (kind == "dir")


def test_open_regular_gives_a_blocking_descriptor(tmp_path: Path) -> None:
    """The descriptor of a regular file is blocking again (O_NONBLOCK was for the open)."""
    path = tmp_path / "f"
    path.write_text("x")
    fd = fsio.open_regular(path, os.O_RDONLY)
    try:
        assert os.get_blocking(fd)
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    finally:
        os.close(fd)


def test_reads_and_appends_refuse_a_fifo_without_blocking(tmp_path: Path) -> None:
    """read_text_limited and append_line on a FIFO raise NotRegularFileError at once;
    the FIFO is left as it is."""
    path = tmp_path / "index.jsonl"
    os.mkfifo(path)
    with pytest.raises(NotRegularFileError, match="is a FIFO"):
        returns(lambda: fsio.read_text_limited(path, 100), fifos=[path])
    with pytest.raises(NotRegularFileError, match="is a FIFO"):
        returns(lambda: fsio.append_line(path, "{}"), fifos=[path])
    assert stat.S_ISFIFO(path.lstat().st_mode)


def test_a_folder_where_a_file_goes_is_named_not_numbered(tmp_path: Path) -> None:
    """Reading, replacing or deleting a file that is a folder fails naming its path
    (it said `Is a directory: 3`, a descriptor number); the folder is left."""
    path = tmp_path / "memory" / "MEMORY.md"
    (path / "inside").mkdir(parents=True)
    with pytest.raises(FolderInPlaceError) as read:
        fsio.read_text_limited(path, 100, root=tmp_path)
    assert str(read.value).startswith(f"{path} is a folder")
    with pytest.raises(FolderInPlaceError, match="refusing to replace it") as write:
        fsio.atomic_write(path, "x", root=tmp_path)
    assert write.value.path == path
    with pytest.raises(FolderInPlaceError, match="refusing to delete it"):
        fsio.atomic_delete(path, root=tmp_path)
    assert (path / "inside").is_dir()
    assert os.listdir(path.parent) == ["MEMORY.md"]  # no temp file left


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_atomic_write_replaces_a_fifo_or_socket(tmp_path: Path, kind: str) -> None:
    """A rename replaces a FIFO or a socket at the target without opening it."""
    path = tmp_path / "f"
    with special_file(path, kind):
        returns(lambda: fsio.atomic_write(path, "new"), fifos=[path])
        assert path.read_text() == "new"
