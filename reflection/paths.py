"""Every path the worker reads or writes, built from validated components only.

Nothing built here can leave `<user_folder_root>/<uid>`: each component is checked
against a slug pattern before it is joined, and `contained()` refuses a path whose real
location (after symlinks planted inside the user's folder) lies outside it.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from reflection import constants as c
from reflection.errors import FolderInPlaceError, NotRegularFileError, UnsafePathError

# These errors live in the error tree; they are also named here, where they are raised.
__all__ = [
    "FolderInPlaceError",
    "NotRegularFileError",
    "UnsafePathError",
    "UserPaths",
    "builtin_piece",
    "components_below",
]


_KINDS = (
    (stat.S_ISDIR, "folder"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


def not_regular_error(
    path: Path, mode: int, refusal: str = "refusing to open it"
) -> NotRegularFileError:
    """The error for the file of type `mode` (not a regular one) found at `path`."""
    if stat.S_ISDIR(mode):
        return FolderInPlaceError(path, refusal)
    kind = next((k for test, k in _KINDS if test(mode)), "special file")
    return NotRegularFileError(path, kind, refusal)


def _check(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.fullmatch(value):
        raise UnsafePathError(f"{what} {value[:64]!r} is not a safe path component")
    return value


@dataclass(frozen=True)
class UserPaths:
    """The folder layout of one user (SPEC section 3)."""

    root: Path
    user_id: str

    def __post_init__(self) -> None:
        _check(self.user_id, c.USER_ID_RE, "user id")

    @cached_property
    def home(self) -> Path:
        return self.root / self.user_id

    @cached_property
    def memory_dir(self) -> Path:
        return self.home / c.MEMORY_DIR

    @cached_property
    def memory_index(self) -> Path:
        return self.memory_dir / c.MEMORY_INDEX

    def memory_file(self, name: str) -> Path:
        return self.memory_dir / f"{_check(name, c.SLUG_RE, 'memory name')}.md"

    def piece_copy(self, piece_name: str) -> Path:
        return self.home / c.PIECES_DIR / f"{_check(piece_name, c.SLUG_RE, 'piece name')}.yaml"

    def activity_log(self, job_id: str) -> Path:
        return self.home / c.JOBS_DIR / _check(job_id, c.JOB_ID_RE, "job id") / c.ACTIVITY_LOG

    @cached_property
    def reflections_dir(self) -> Path:
        return self.home / c.REFLECTIONS_DIR

    def snapshot_dir(self, snapshot_id: str) -> Path:
        return self.reflections_dir / _check(snapshot_id, c.JOB_ID_RE, "snapshot id")

    @cached_property
    def snapshot_index(self) -> Path:
        return self.reflections_dir / c.SNAPSHOT_INDEX

    @cached_property
    def journal_dir(self) -> Path:
        return self.reflections_dir / c.JOURNAL_DIR

    def contained(self, path: Path) -> Path:
        """Return `path` if its real location is inside the user's home, else raise."""
        try:
            below: list[str] | None = components_below(self.home, path)
        except UnsafePathError:
            below = None  # outside the home or with `..`: resolve() judges
        if below is not None and self._first_link(below) is None:
            return path  # no link under the home: inside its real location by construction
        home = self._real_home
        real = path.resolve()
        if real != home and home not in real.parents:
            raise UnsafePathError(f"{path} resolves outside the user's folder")
        return path

    def writable(self, path: Path) -> Path:
        """Return `path` if a write to it follows no link: it lies under the user's home
        without `..`, and neither `path` nor any folder between the home and it is a
        symlink (a planted link, even one pointing inside, is refused, not followed).
        Such a path is inside the home's real location by construction. The home itself
        may be a link (an operator's mount)."""
        if (link := self._first_link(components_below(self.home, path))) is not None:
            raise UnsafePathError(f"{link} is a symlink; refusing to write through it")
        return path

    def writable_file(self, path: Path) -> Path:
        """`writable(path)`, and no folder stands at `path` (FolderInPlaceError): checked
        before a run writes anything, so a planted folder fails it whole, not half-way."""
        self.writable(path)
        try:
            mode = os.lstat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return path
        if stat.S_ISDIR(mode):
            raise FolderInPlaceError(path, "refusing to write it")
        return path

    # Plain strings and lstat rather than pathlib: a run checks a dozen paths, and
    # pathlib's joins and resolve() (a syscall per component from `/`) were a tenth of
    # a run's CPU.

    @cached_property
    def _real_home(self) -> Path:
        return self.home.resolve()

    def _first_link(self, below: list[str]) -> str | None:
        """The first of the home's descendants along `below` that is a symlink, or None."""
        step = str(self.home)
        for part in below:
            step = f"{step}/{part}"
            try:
                if stat.S_ISLNK(os.lstat(step).st_mode):
                    return step
            except (FileNotFoundError, NotADirectoryError):
                return None  # nothing exists further down to be a link
        return None


def components_below(root: Path, path: Path) -> list[str]:
    """`path`'s components under `root` (none for `root` itself), compared as strings;
    UnsafePathError if it is not under `root` or climbs out of it with `..`."""
    top, text = str(root), str(path)
    if text == top:
        return []
    prefix = top.rstrip("/") + "/"
    if not text.startswith(prefix):
        raise UnsafePathError(f"{path} is not under {root}")
    parts = text[len(prefix) :].split("/")
    if ".." in parts:
        raise UnsafePathError(f"{path} climbs out of its folder ('..')")
    return parts


def builtin_piece(pieces_dir: Path, piece_name: str) -> Path:
    """The built-in piece file for `piece_name` (validated as a slug)."""
    return pieces_dir / f"{_check(piece_name, c.SLUG_RE, 'piece name')}.yaml"
