"""File I/O that never leaves a half-written file and never follows a link out of a folder."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

from reflection.paths import UnsafePathError, components_below

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


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _open_dir(path: Path, *, create: bool) -> int:
    try:
        return os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        if not create:
            raise
        ensure_dir(path)
        return os.open(path, _DIR_FLAGS)


def open_folder(folder: Path, root: Path | None = None, *, create: bool = False) -> int:
    """An fd of `folder` (close it), created (each missing folder 0750) when `create`.

    With `root`, each folder below it is opened from its parent's fd, never following a
    link: a link or a file on the way is refused (UnsafePathError), even one planted
    after the caller's own checks, so nothing read or written through the fd can be
    anywhere else. `root` itself may be a link (an operator's mount)."""
    if root is None:
        return _open_dir(folder, create=create)
    parts = components_below(root, folder)
    fd = _open_dir(root, create=create)
    try:
        for n, part in enumerate(parts):
            where = "/".join([str(root), *parts[: n + 1]])
            try:
                child = _open_child(fd, part, where)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, DIR_MODE, dir_fd=fd)
                child = _open_child(fd, part, where)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_child(fd: int, name: str, where: str) -> int:
    """The folder `name` in the folder `fd`, not followed if it is a link."""
    try:
        return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
    except FileNotFoundError:
        raise
    except OSError as e:
        if isinstance(e, NotADirectoryError) or e.errno == errno.ELOOP:
            raise UnsafePathError(
                f"{where} is a symlink or not a folder; refusing to go through it"
            ) from e
        raise


def open_file(path: Path, flags: int, *, root: Path | None = None, create: bool = False) -> int:
    """`os.open(path, flags, FILE_MODE)` relative to `open_folder(path.parent, root,
    create=create)`: with `root`, through no link below it."""
    folder = open_folder(path.parent, root, create=create)
    try:
        return os.open(path.name, flags, FILE_MODE, dir_fd=folder)
    except OSError as e:
        e.filename = str(path)  # not just its name in the folder: say which file it is
        raise
    finally:
        os.close(folder)


def atomic_write(path: Path, data: str | bytes, *, root: Path | None = None) -> None:
    """Write `data` to `path` atomically: temp file in the same folder, fsync, rename.

    A reader (or a worker restarted after SIGKILL) sees the old content or the new one,
    never a mix. A symlink at `path` is replaced, not followed; with `root` (the user's
    home) no folder between it and `path` may be one either (see `open_folder`).
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    folder = open_folder(path.parent, root, create=True)
    try:
        # os-level calls rather than tempfile.mkstemp + a file object: a run writes
        # several files, and mkstemp's name generator and the buffered writer's probes
        # were a tenth of a run's file I/O CPU. O_EXCL never opens an existing path (nor
        # follows a link).
        tmp = f".{path.name}.{secrets.token_hex(6)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, FILE_MODE, dir_fd=folder)
        try:
            try:
                os.fchmod(fd, FILE_MODE)  # exactly, whatever the umask
                view = memoryview(raw)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=folder)
            raise
        os.fsync(folder)
    finally:
        os.close(folder)


def atomic_delete(path: Path, *, root: Path | None = None) -> None:
    """Remove `path` if present and make the removal durable (`root` as for writes)."""
    try:
        folder = open_folder(path.parent, root)
    except FileNotFoundError:
        return
    try:
        try:
            os.unlink(path.name, dir_fd=folder)
        except FileNotFoundError:
            return
        os.fsync(folder)
    finally:
        os.close(folder)


def append_line(path: Path, line: str, *, root: Path | None = None) -> None:
    """Append one line with a single write and fsync (O_APPEND keeps lines whole).

    A file whose last line was torn (no final newline) gets one first, so the new line
    stays readable on its own. `root` as for writes."""
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = open_file(path, flags, root=root, create=True)
    try:
        size = os.fstat(fd).st_size
        torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        os.write(fd, (("\n" if torn else "") + line.rstrip("\n") + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_text_limited(path: Path, limit: int, *, root: Path | None = None) -> str:
    """Read a regular file (not a symlink) of at most `limit` bytes as UTF-8; with `root`,
    through no link below it either (see `open_folder`).

    Raises ValueError when the file is too large, a link, or not UTF-8.
    """
    fd = open_file(path, os.O_RDONLY | os.O_NOFOLLOW, root=root)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data.decode("utf-8")
