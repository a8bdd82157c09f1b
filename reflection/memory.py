"""The user's memory: `<uid>/memory/<name>.md` entries and the `MEMORY.md` index.

Loading never raises and never deletes: a file that cannot be read as an entry is
reported as `Malformed` (its path relative to the user's home and why) and skipped.
"""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Iterable
from pathlib import Path

from reflection import constants as c
from reflection.frontmatter import FrontmatterError, parse_entry
from reflection.fsio import open_folder, open_regular_in, read_at_most
from reflection.models import Malformed, MemoryEntry
from reflection.paths import NotRegularFileError, UnsafePathError, UserPaths
from reflection.text import strip_unsafe

_SUFFIX = ".md"
_TO_SPACE = str.maketrans(dict.fromkeys("\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029", " "))


# Every run of a user parses the same, mostly unchanged, files twice (for the prompt and
# under the lock) and YAML parsing is most of loading; parses are cached by content, so
# a changed file is simply a new key. Large files are parsed each time, bounding the cache.
_PARSE_CACHE_ENTRIES = 1024
_PARSE_CACHE_TEXT_MAX = 16 * 1024


@functools.lru_cache(maxsize=_PARSE_CACHE_ENTRIES)
def _parse_cached(text: str, stem: str) -> MemoryEntry:
    return parse_entry(text, stem=stem)


def _parse(text: str, stem: str) -> MemoryEntry:
    if len(text) <= _PARSE_CACHE_TEXT_MAX:
        return _parse_cached(text, stem)
    return parse_entry(text, stem=stem)


class _Skip(Exception):
    """Raised inside the loader when one file is not a usable entry."""


def _read(folder: int, name: str, max_file_bytes: int) -> str:
    """The text of the regular file `name` in the folder `folder` (not a symlink, a FIFO
    or a device: opened without blocking and refused unless `fstat` says regular)."""
    where = Path(c.MEMORY_DIR) / name
    try:
        fd = open_regular_in(folder, name, os.O_RDONLY, path=where)
    except NotRegularFileError as e:
        raise _Skip(f"not a regular file (a {e.kind})") from e
    except OSError as e:
        link = e.errno == errno.ELOOP
        raise _Skip("is a symlink" if link else f"unreadable: {e.strerror}") from e
    try:
        data = read_at_most(fd, max_file_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_file_bytes:
        raise _Skip(f"larger than {max_file_bytes} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Skip(f"not UTF-8 (byte {e.start})") from e


def _load_one(folder: int, entry: os.DirEntry[str], max_file_bytes: int) -> MemoryEntry:
    stem = entry.name[: -len(_SUFFIX)]
    if entry.is_symlink():
        raise _Skip("is a symlink")
    if entry.is_dir(follow_symlinks=False):
        raise _Skip("is a directory")
    if not c.SLUG_RE.fullmatch(stem):
        raise _Skip(f"file name is not a valid entry name ({c.SLUG_RE.pattern})")
    text = _read(folder, entry.name, max_file_bytes)
    try:
        return _parse(text, stem)
    except FrontmatterError as e:
        raise _Skip(str(e)) from e


def _listing(folder: int) -> list[os.DirEntry[str]]:
    """The memory folder's `*.md` files except the index, sorted by name."""
    with os.scandir(folder) as it:
        found = [e for e in it if e.name.endswith(_SUFFIX) and e.name != c.MEMORY_INDEX]
    return sorted(found, key=lambda e: e.name)


def load_memory(
    paths: UserPaths, *, max_file_bytes: int = c.MAX_MEMORY_FILE_BYTES
) -> tuple[tuple[MemoryEntry, ...], tuple[Malformed, ...]]:
    """Every valid entry (sorted by name) and every skipped file (sorted by path).

    A missing memory folder means no entries; a link in its place is reported. A folder
    that exists but cannot be opened or listed (EIO, EMFILE, EACCES) raises OSError: the
    run is retried, never planned on an empty memory (an add would overwrite an entry it
    could not see, protected or not). A file's own error is reported and skipped. Never
    deletes anything.
    """
    try:
        # Opened from the home without following a link (one planted mid-run included):
        # every read below goes through this folder, never through a path.
        folder = open_folder(paths.memory_dir, paths.home)
    except FileNotFoundError:
        return (), ()
    except UnsafePathError as e:
        return (), (_unreadable_folder(e),)
    try:
        return _load_all(folder, max_file_bytes)
    finally:
        os.close(folder)


def _unreadable_folder(e: UnsafePathError) -> Malformed:
    return Malformed(path=f"{c.MEMORY_DIR}/", reason=str(e))


def _load_all(
    folder: int, max_file_bytes: int
) -> tuple[tuple[MemoryEntry, ...], tuple[Malformed, ...]]:
    listing = _listing(folder)
    entries: list[MemoryEntry] = []
    malformed: list[Malformed] = []
    for item in listing:
        try:
            entries.append(_load_one(folder, item, max_file_bytes))
        except _Skip as e:
            malformed.append(Malformed(path=f"{c.MEMORY_DIR}/{item.name}", reason=str(e)))
        except OSError as e:
            malformed.append(
                Malformed(path=f"{c.MEMORY_DIR}/{item.name}", reason=f"unreadable: {e.strerror}")
            )
        except Exception as e:  # one odd file must never stop the run
            malformed.append(
                Malformed(path=f"{c.MEMORY_DIR}/{item.name}", reason=f"unreadable: {e!r}"[:300])
            )
    entries.sort(key=lambda e: e.name)
    return tuple(entries), tuple(malformed)


def render_index(entries: Iterable[MemoryEntry]) -> str:
    """The text of `MEMORY.md`: a heading, then `- <name> (<type>): <description>` per entry,
    sorted by name; the same entries always give the same text. A description's line
    breaks and tabs become spaces; its control, bidi and tag characters are dropped (the index
    is read by agents and by people in terminals)."""
    lines = [
        f"- {e.name} ({e.type}): {strip_unsafe(e.description.translate(_TO_SPACE))}"
        for e in sorted(entries, key=lambda e: e.name)
    ]
    return "\n".join(["# Memory index", *([""] if lines else []), *lines]) + "\n"
