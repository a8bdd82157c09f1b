"""No path built from input leaves the user's folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from reflection.paths import UnsafePathError, UserPaths, builtin_piece


@pytest.mark.parametrize("uid", ["..", "../x", "a/b", "", ".hidden", "a\x00", "x" * 129])
def test_bad_user_ids(tmp_path: Path, uid: str) -> None:
    """A user id that is not one safe path component is refused."""
    with pytest.raises(UnsafePathError):
        UserPaths(tmp_path, uid)


@pytest.mark.parametrize("name", ["..", "../x", "A", "x/y", "", "-x", "a" * 65])
def test_bad_names(tmp_path: Path, name: str) -> None:
    """Memory and piece names must be slugs."""
    u = UserPaths(tmp_path, "alice")
    with pytest.raises(UnsafePathError):
        u.memory_file(name)
    with pytest.raises(UnsafePathError):
        u.piece_copy(name)
    with pytest.raises(UnsafePathError):
        builtin_piece(tmp_path, name)


def test_layout(tmp_path: Path) -> None:
    """The folder layout of SPEC section 3."""
    u = UserPaths(tmp_path, "alice")
    assert u.memory_file("x") == tmp_path / "alice/memory/x.md"
    assert u.memory_index == tmp_path / "alice/memory/MEMORY.md"
    assert u.piece_copy("default") == tmp_path / "alice/pieces/default.yaml"
    assert u.activity_log("j-1") == tmp_path / "alice/jobs/j-1/activity.log"
    assert u.snapshot_index == tmp_path / "alice/reflections/index.jsonl"


def test_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    """A symlink planted inside a user folder that points outside is caught."""
    outside = tmp_path / "outside"
    outside.mkdir()
    u = UserPaths(tmp_path / "users", "alice")
    u.home.mkdir(parents=True)
    (u.home / "memory").symlink_to(outside)
    with pytest.raises(UnsafePathError):
        u.contained(u.memory_file("x"))
    assert u.contained(u.piece_copy("default")) == u.piece_copy("default")
