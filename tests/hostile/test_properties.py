"""Property-based: whatever string arrives as an id, a name or a stored path, it is either
refused by validation or the path it becomes stays inside the user's folder; and no piece
edit that widens a permission is ever accepted."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reflection import constants as c
from reflection.changes import Limits, judge_memory_changes
from reflection.errors import BadRequestError
from reflection.models import Code, MemoryChange
from reflection.paths import UnsafePathError, UserPaths
from reflection.pieces import check_piece_edit
from reflection.request import parse_request, safe_id

# Text that favours the characters that matter for paths.
hostile_text = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="./\\\x00\n-_aZ9~:%", max_size=40),
    st.sampled_from(["..", ".", "/", "a/../..", "a\x00", "CON", "a" * 200, "..a", "a..", "-a"]),
)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    """A user folder root with a planted link inside alice's folder pointing outside."""
    with tempfile.TemporaryDirectory() as tmp:
        users = Path(tmp) / "users"
        (users / "alice").mkdir(parents=True)
        (Path(tmp) / "outside").mkdir()
        (users / "alice" / "escape").symlink_to(Path(tmp) / "outside")
        yield users


def _inside(path: Path, home: Path) -> bool:
    real, home = path.resolve(), home.resolve()
    return real == home or home in real.parents


@FAST
@given(uid=hostile_text, job=hostile_text, piece=hostile_text)
def test_any_ids_are_refused_or_stay_inside(root: Path, uid: str, job: str, piece: str) -> None:
    """Task kwargs: refused (bad_request), or every path built from them is inside home."""
    kwargs = {"original_job_id": job, "user_id": uid, "piece_name": piece, "outcome": "failed"}
    try:
        req = parse_request(kwargs)
    except BadRequestError:
        return
    paths = UserPaths(root, req.user_id)
    assert paths.home.parent == root
    for p in (
        paths.memory_dir,
        paths.piece_copy(req.piece_name),
        paths.activity_log(req.original_job_id),
        paths.snapshot_dir(req.original_job_id),
        paths.journal_dir,
    ):
        assert _inside(p, paths.home), p
        assert ".." not in p.relative_to(paths.home).parts


@FAST
@given(name=hostile_text)
def test_any_memory_name_is_refused_or_one_file_in_memory(root: Path, name: str) -> None:
    """A memory name is invalid_name, or it names one file directly in memory/."""
    change = MemoryChange(op="add", name=name, description="d", type="user", body="b")
    [verdict] = judge_memory_changes([change], {}, Limits()).verdicts
    try:
        path = UserPaths(root, "alice").memory_file(name)
    except UnsafePathError:
        assert verdict.code is Code.INVALID_NAME
        return
    assert verdict.code is Code.OK
    assert path.parent == UserPaths(root, "alice").memory_dir and path.name == f"{name}.md"


@FAST
@given(rel=st.lists(st.sampled_from(["..", ".", "memory", "escape", "x", "/", "a.md"]), max_size=6))
def test_any_stored_path_is_refused_or_inside(root: Path, rel: list[str]) -> None:
    """A journal's relative path (even through a planted link) is refused or inside home."""
    paths = UserPaths(root, "alice")
    target = paths.home.joinpath(*rel) if rel else paths.home
    try:
        paths.contained(target)
    except UnsafePathError:
        return
    assert _inside(target, paths.home)


@FAST
@given(value=st.one_of(hostile_text, st.integers(), st.none(), st.binary(max_size=50)))
def test_safe_id_is_printable_and_bounded(value: Any) -> None:
    """Whatever a payload holds, its rendering in metrics and logs is short and printable."""
    out = safe_id(value)
    assert 0 < len(out) <= c.MAX_ID_IN_METRICS and out.isprintable()


TOOLS = ["Read", "Grep", "Edit", "Bash"]
movement_perms = st.fixed_dictionaries(
    {},
    optional={
        "edit": st.booleans(),
        "required_permission_mode": st.sampled_from(c.PERMISSION_MODES),
        "allowed_tools": st.lists(st.sampled_from(TOOLS), unique=True),
    },
)


def _piece(perms: dict[str, Any], limit: int | None, name: str = "work") -> str:
    m = {"name": name, "instruction": "Do the work.", **perms}
    data: dict[str, Any] = {"name": "p", "movements": [m]}
    if limit is not None:
        data["max_movements"] = limit
    return yaml.safe_dump(data)


def _widens(old: dict[str, Any], new: dict[str, Any], lo: int | None, ln: int | None) -> bool:
    rank = {m: i for i, m in enumerate(c.PERMISSION_MODES)}
    if new.get("edit", False) and not old.get("edit", False):
        return True
    if (
        rank[new.get("required_permission_mode", "readonly")]
        > rank[old.get("required_permission_mode", "readonly")]
    ):
        return True
    if "allowed_tools" in old and (
        "allowed_tools" not in new or set(new["allowed_tools"]) - set(old["allowed_tools"])
    ):
        return True
    return lo is not None and (ln is None or ln > lo)


@settings(max_examples=400, deadline=None)
@given(
    old=movement_perms,
    new=movement_perms,
    lo=st.one_of(st.none(), st.integers(1, 20)),
    ln=st.one_of(st.none(), st.integers(1, 20)),
    rename=st.booleans(),
)
def test_no_widening_edit_is_ever_accepted(
    old: dict[str, Any], new: dict[str, Any], lo: int | None, ln: int | None, rename: bool
) -> None:
    """An edit is piece_escalation exactly when it widens a permission (renames included)."""
    before = _piece(old, lo)
    after = _piece(new, ln, "renamed" if rename else "work")
    code, _ = check_piece_edit(before, after, piece_name="p")
    if code is Code.PIECE_UNCHANGED:
        assert not rename and not _widens(old, new, lo, ln)
        return
    assert code in (Code.OK, Code.PIECE_ESCALATION)
    # A renamed movement is new: bounded by the least privileged old movement (the only one).
    assert (code is Code.PIECE_ESCALATION) == _widens(old, new, lo, ln)
