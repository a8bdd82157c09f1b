"""File I/O that never leaves a half-written file, never follows a link out of a folder
and never blocks on what a user planted in their folder.

A thread blocked in the kernel cannot be stopped (SPEC section 14): a FIFO opened for
reading waits for a writer forever, and a device may block or act when opened. So every
file of a user's folder is opened with `open_regular` (O_NONBLOCK, O_NOFOLLOW, O_NOCTTY)
and refused unless `fstat` on the opened descriptor says it is a regular file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from reflection.paths import (
    FolderInPlaceError,
    UnsafePathError,
    components_below,
    not_regular_error,
)

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


# O_DIRECTORY already refuses a FIFO before it is opened; O_NONBLOCK is the second lock.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK | os.O_CLOEXEC


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


def _named(e: OSError, path: Path) -> OSError:
    """`e` again (same errno, so the same subclass), naming `path` rather than a
    descriptor or a name in a folder; raise it `from e`."""
    return OSError(e.errno, e.strerror or str(e), str(path))


# What every open of a user's file adds: never wait (a FIFO), never follow a link at the
# last component, never take a terminal as the controlling one, never leak to a child.
_SAFE_FLAGS = os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC


def open_regular_in(folder: int, name: str, flags: int, *, path: Path) -> int:
    """The regular file `name` in the folder `folder`, opened with `flags` without
    blocking; `path` names it in errors. O_NONBLOCK is cleared again before returning
    (unless `flags` holds it), so reads of the descriptor behave as usual.

    Raises NotRegularFileError (FolderInPlaceError for a folder) when `fstat` on the
    opened descriptor, or the open itself, says it is not a regular file; OSError
    (ELOOP for a symlink, FileNotFoundError, ...) naming `path` otherwise."""
    try:
        fd = os.open(name, flags | _SAFE_FLAGS, FILE_MODE, dir_fd=folder)
    except OSError as e:
        # EISDIR: a folder opened for writing; ENXIO: a socket, a FIFO opened for writing
        # with no reader, or a device without a driver.
        if e.errno in (errno.EISDIR, errno.ENXIO):
            raise not_regular_error(path, _mode_of(folder, name)) from e
        raise _named(e, path) from e
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise not_regular_error(path, mode)
        if not flags & os.O_NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _mode_of(folder: int, name: str) -> int:
    """The file type bits of `name` in `folder` (0 if it cannot be told)."""
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
    except OSError:
        return 0


def open_regular(path: Path, flags: int, *, root: Path | None = None, create: bool = False) -> int:
    """`open_regular_in` for `path` (with `root`, through no link below it; see
    `open_folder`): the descriptor of a regular file, never a wait on a FIFO."""
    folder = open_folder(path.parent, root, create=create)
    try:
        return open_regular_in(folder, path.name, flags, path=path)
    finally:
        os.close(folder)


def read_at_most(fd: int, limit: int) -> bytes:
    """Up to `limit` bytes of `fd` from its current offset (fewer at its end)."""
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1024 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def atomic_write(
    path: Path, data: str | bytes, *, root: Path | None = None, durable: bool = True
) -> None:
    """Write `data` to `path` atomically: temp file in the same folder, fsync, rename,
    fsync of the folder.

    A reader (or a worker restarted after SIGKILL) sees the old content or the new one,
    never a mix. A symlink at `path` is replaced, not followed; with `root` (the user's
    home) no folder between it and `path` may be one either (see `open_folder`).
    `durable=False` leaves out both fsyncs: atomic by the rename, made durable later by
    one `sync_filesystem` of a batch of writes (a journal's roll-forward, SPEC §14).
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
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            _replace(folder, tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=folder)
            raise
        if durable:
            _fsync_folder(folder, path)
    finally:
        os.close(folder)


def _replace(folder: int, tmp: str, path: Path) -> None:
    """Rename `tmp` over `path`'s name in `folder` (a FIFO or a socket there is replaced,
    a folder refused); errors name `path`."""
    try:
        os.replace(tmp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
    except OSError as e:
        if e.errno == errno.EISDIR:
            raise FolderInPlaceError(path, "refusing to replace it") from e
        raise _named(e, path) from e


def _fsync_folder(folder: int, path: Path) -> None:
    try:
        os.fsync(folder)
    except OSError as e:
        raise _named(e, path.parent) from e


def atomic_delete(path: Path, *, root: Path | None = None, durable: bool = True) -> None:
    """Remove `path` if present and make the removal durable (`root` as for writes;
    `durable=False`: the removal may be lost to a power cut)."""
    try:
        folder = open_folder(path.parent, root)
    except FileNotFoundError:
        return
    try:
        try:
            os.unlink(path.name, dir_fd=folder)
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno in (errno.EISDIR, errno.EPERM) and stat.S_ISDIR(_mode_of(folder, path.name)):
                raise FolderInPlaceError(path, "refusing to delete it") from e
            raise _named(e, path) from e
        if durable:
            _fsync_folder(folder, path)
    finally:
        os.close(folder)


def append_line(path: Path, line: str, *, root: Path | None = None, durable: bool = True) -> None:
    """Append one line with a single write and fsync (O_APPEND keeps lines whole;
    `durable=False`: no fsync, as for `atomic_write`).

    A file whose last line was torn (no final newline) gets one first, so the new line
    stays readable on its own. `root` as for writes. Raises NotRegularFileError when
    `path` is not a regular file (a FIFO would block the write once full)."""
    fd = open_regular(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, root=root, create=True)
    try:
        size = os.fstat(fd).st_size
        torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        os.write(fd, (("\n" if torn else "") + line.rstrip("\n") + "\n").encode("utf-8"))
        if durable:
            os.fsync(fd)
    except OSError as e:
        raise _named(e, path) from e
    finally:
        os.close(fd)


def read_text_limited(path: Path, limit: int, *, root: Path | None = None) -> str:
    """Read a regular file (not a symlink) of at most `limit` bytes as UTF-8; with `root`,
    through no link below it either (see `open_folder`). Never blocks (`open_regular`).

    Raises ValueError when the file is too large or not UTF-8, NotRegularFileError (a
    ValueError too) for a FIFO, socket, device or folder, OSError (ELOOP) for a link.
    """
    fd = open_regular(path, os.O_RDONLY, root=root)
    try:
        data = read_at_most(fd, limit + 1)
    except OSError as e:
        raise _named(e, path) from e
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data.decode("utf-8")


def _libc_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn: Callable[[int], int] = libc.syncfs
    except (AttributeError, OSError):  # not Linux
        return None
    return fn


_SYNCFS = _libc_syncfs()


def syncfs(fd: int) -> None:
    """Flush every write of the filesystem holding `fd` to stable storage: data, inodes
    and folder entries (Linux `syncfs(2)`; elsewhere `sync()`, every filesystem)."""
    if _SYNCFS is None:
        os.sync()
    elif _SYNCFS(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def sync_filesystem(path: Path) -> None:
    """Make the writes made with `durable=False` under `path` durable: one `syncfs` of
    its filesystem, whatever their number (SPEC §14: a roll-forward's files are renamed
    into place, then synced once before the Postgres commit)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        syncfs(fd)
    except OSError as e:
        raise _named(e, path) from e
    finally:
        os.close(fd)
