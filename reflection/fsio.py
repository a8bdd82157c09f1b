"""File I/O that never leaves a half-written file and never follows a link out of a folder."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

FILE_MODE = 0o640
DIR_MODE = 0o750


def ensure_dir(path: Path) -> None:
    """Create `path` and its missing parents, each with restrictive permissions
    (`mkdir(parents=True)` would give the parents the default mode)."""
    if path.is_dir():
        return
    ensure_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=DIR_MODE)


def _create(path: str, flags: int, parent: Path) -> int:
    """`os.open(path, flags)` (flags with O_CREAT), creating `parent` first if it is
    missing: asked only on a miss, since the folders nearly always exist already."""
    try:
        return os.open(path, flags, FILE_MODE)
    except FileNotFoundError:
        ensure_dir(parent)
        return os.open(path, flags, FILE_MODE)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` atomically: temp file in the same folder, fsync, rename.

    A reader (or a worker restarted after SIGKILL) sees the old content or the new one,
    never a mix. A symlink at `path` is replaced, not followed.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    # os-level calls rather than tempfile.mkstemp + a file object: a run writes several
    # files, and mkstemp's name generator and the buffered writer's probes were a tenth
    # of a run's file I/O CPU. O_EXCL never opens an existing path (nor follows a link).
    tmp = f"{path.parent}/.{path.name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = _create(tmp, flags, path.parent)
    try:
        try:
            os.fchmod(fd, FILE_MODE)  # exactly, whatever the umask
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_delete(path: Path) -> None:
    """Remove `path` if present and make the removal durable."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        _fsync_dir(path.parent)


def append_line(path: Path, line: str) -> None:
    """Append one line with a single write and fsync (O_APPEND keeps lines whole).

    A file whose last line was torn (no final newline) gets one first, so the new line
    stays readable on its own."""
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = _create(str(path), flags, path.parent)
    try:
        size = os.fstat(fd).st_size
        torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        os.write(fd, (("\n" if torn else "") + line.rstrip("\n") + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_text_limited(path: Path, limit: int) -> str:
    """Read a regular file (not a symlink) of at most `limit` bytes as UTF-8.

    Raises ValueError when the file is too large, a link, or not UTF-8.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data.decode("utf-8")
