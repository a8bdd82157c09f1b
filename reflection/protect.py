"""Mark a memory entry `protected: true` (or not): a reflection never updates or removes a
protected entry (code `protected`)."""

from __future__ import annotations

from sqlalchemy import Engine

from reflection import constants as c
from reflection.apply import finish_pending_journals
from reflection.errors import EntryNotFoundError, InputError
from reflection.frontmatter import FrontmatterError, parse_entry, render_entry
from reflection.fsio import atomic_write, read_text_limited
from reflection.lock import UserLock
from reflection.paths import UserPaths


def set_protected(
    paths: UserPaths, name: str, protected: bool, *, lock: UserLock, engine: Engine
) -> bool:
    """Set the entry's `protected` flag (call under the user's lock); atomic write.

    Returns False when it already had that value. Raises `EntryNotFoundError`, or
    `InputError` for a malformed entry (left untouched). A killed run's journal is
    completed first, so that its roll-forward cannot overwrite the flag later."""
    finish_pending_journals(paths=paths, lock=lock, engine=engine)
    path = paths.writable(paths.memory_file(name))
    try:
        text = read_text_limited(path, c.MAX_MEMORY_FILE_BYTES, root=paths.home)
    except FileNotFoundError as e:
        raise EntryNotFoundError(f"user {paths.user_id} has no memory entry {name!r}") from e
    except ValueError as e:
        raise InputError(f"memory/{name}.md is unreadable: {e}") from e
    try:
        entry = parse_entry(text, stem=name)
    except FrontmatterError as e:
        raise InputError(f"memory/{name}.md is malformed ({e}); fix it by hand first") from e
    if entry.protected == protected:
        return False
    lock.ensure_owned()
    text = render_entry(entry.model_copy(update={"protected": protected}))
    atomic_write(path, text, root=paths.home)
    return True
