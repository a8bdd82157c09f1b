"""No path built from input leaves the user's folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reflection.paths import FolderInPlaceError, UnsafePathError, UserPaths, builtin_piece


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


def test_writable_refuses_any_link_on_the_way_and_dot_dot(tmp_path: Path) -> None:
    """A write may not go through a symlink: not the home, not a folder, not the file,
    even one pointing inside; nor climb out with `..`."""
    u = UserPaths(tmp_path / "users", "alice")
    (u.home / "memory").mkdir(parents=True)
    assert u.writable(u.memory_file("x")) == u.memory_file("x")
    (u.home / "memory" / "x.md").symlink_to(u.home / "memory" / "y.md")  # inside, still refused
    with pytest.raises(UnsafePathError, match="symlink"):
        u.writable(u.memory_file("x"))
    with pytest.raises(UnsafePathError, match=r"\.\."):
        u.writable(u.home / "memory" / ".." / ".." / "bob" / "memory" / "x.md")
    with pytest.raises(UnsafePathError, match="not under"):
        u.writable(tmp_path / "elsewhere.md")
    (u.home / "pieces").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError, match="symlink"):
        u.writable(u.piece_copy("default"))


def test_a_home_that_is_a_link_is_an_operators_mount(tmp_path: Path) -> None:
    """The home itself may be a symlink (another disk); links below it are still refused."""
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "memory").mkdir(parents=True)
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "alice").symlink_to(elsewhere)
    u = UserPaths(tmp_path / "users", "alice")
    assert u.writable(u.memory_file("x")) == u.memory_file("x")
    assert u.contained(u.memory_file("x")) == u.memory_file("x")
    (elsewhere / "pieces").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError, match="symlink"):
        u.writable(u.piece_copy("default"))


def test_contained_follows_links_that_stay_inside(tmp_path: Path) -> None:
    """Reads may go through a link or a `..` whose target is still inside the home;
    a `..` that climbs out is refused, and a file where a folder should be is no error."""
    u = UserPaths(tmp_path / "users", "alice")
    (u.home / "memory").mkdir(parents=True)
    (u.home / "pieces").symlink_to(u.home / "memory")
    assert u.contained(u.piece_copy("default")) == u.piece_copy("default")
    inside = u.home / "memory" / ".." / "pieces" / "default.yaml"
    assert u.contained(inside) == inside
    with pytest.raises(UnsafePathError, match="outside"):
        u.contained(u.home / "memory" / ".." / ".." / "bob" / "x.md")
    (u.home / "jobs").write_text("a file, not a folder")
    assert u.contained(u.activity_log("j-1")) == u.activity_log("j-1")
    assert u.writable(u.activity_log("j-1")) == u.activity_log("j-1")
    assert u.contained(u.home) == u.home
    assert u.writable(u.home) == u.home


def test_a_home_made_a_link_after_the_paths_were_built(tmp_path: Path) -> None:
    """The home's real location is read when a link under it needs it, not before."""
    u = UserPaths(tmp_path / "users", "alice")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "memory").mkdir(parents=True)
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "alice").symlink_to(elsewhere)
    (elsewhere / "pieces").symlink_to(elsewhere / "memory")
    assert u.contained(u.piece_copy("default")) == u.piece_copy("default")


def test_writable_file_refuses_a_folder_at_the_file(tmp_path: Path) -> None:
    """A file a run will write may be missing, a file or a FIFO (a rename replaces it),
    never a folder (FolderInPlaceError naming it) nor a link."""
    u = UserPaths(tmp_path / "users", "alice")
    u.reflections_dir.mkdir(parents=True)
    assert u.writable_file(u.snapshot_index) == u.snapshot_index
    os.mkfifo(u.snapshot_index)
    assert u.writable_file(u.snapshot_index) == u.snapshot_index
    u.snapshot_index.unlink()
    u.snapshot_index.mkdir()
    with pytest.raises(FolderInPlaceError, match=f"{u.snapshot_index} is a folder"):
        u.writable_file(u.snapshot_index)
    assert u.writable_file(u.journal_dir / "x.json") == u.journal_dir / "x.json"
    u.snapshot_index.rmdir()
    u.snapshot_index.symlink_to(tmp_path)
    with pytest.raises(UnsafePathError, match="symlink"):
        u.writable_file(u.snapshot_index)
