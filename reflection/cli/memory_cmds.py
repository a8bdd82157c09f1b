"""`reflection protect` / `unprotect`: shield a memory entry from reflections."""

from __future__ import annotations

from typing import Annotated

import typer

from reflection.cli.common import JsonOpt, emit_json, handled, not_found, out, services
from reflection.cli.snapshots import UserArg, user_paths
from reflection.constants import SLUG_RE
from reflection.lock import operator_lock
from reflection.protect import set_protected

NameArg = Annotated[str, typer.Argument(help="The memory entry's name (its file's stem).")]


def _set(user: str, name: str, protected: bool, json_: bool) -> None:
    paths = user_paths(user)
    if not SLUG_RE.fullmatch(name):
        not_found(f"{name!r} is not a memory entry name")
    with services() as svc, operator_lock(svc.settings, svc.redis, user) as lock:
        changed = set_protected(paths, name, protected, lock=lock, engine=svc.engine)
    if json_:
        emit_json({"user": user, "name": name, "protected": protected, "changed": changed})
        return
    state = "protected" if protected else "not protected"
    out.print(f"{name} is {state}{'' if changed else ' (unchanged)'}", markup=False)


@handled
def protect(user: UserArg, name: NameArg, json_: JsonOpt = False) -> None:
    """Mark a memory entry `protected: true`: reflections may no longer update or remove it."""
    _set(user, name, True, json_)


@handled
def unprotect(user: UserArg, name: NameArg, json_: JsonOpt = False) -> None:
    """Remove `protected: true` from a memory entry."""
    _set(user, name, False, json_)
