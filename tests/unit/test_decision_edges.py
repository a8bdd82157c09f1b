"""Edge cases of judging a decision that used to fail the whole run (SPEC section 5:
rejections never abort the others) or to apply a change it should not."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from reflection import constants as c
from reflection import memory
from reflection.changes import Limits, judge_memory_changes
from reflection.models import Code, MemoryEntry
from reflection.paths import UserPaths
from reflection.pieces import check_piece_edit
from reflection.reply import parse_decision
from tests.unit.test_changes import add, rm
from tests.unit.test_pieces import PIECE


def test_a_remove_is_rejected_when_its_merge_target_is_full() -> None:
    """The add it merges into is rejected for memory_full: the remove must not delete
    the entry whose content was meant to live on there (and, the remove rejected, there
    is no room for the other add either)."""
    current = {n: MemoryEntry(name=n, description="d", type="user", body="b") for n in "ab"}
    verdict = judge_memory_changes(
        [add("c"), add("d"), rm("a", merge_target="d")], current, Limits(max_entries=2)
    )
    assert [x.code for x in verdict.verdicts] == [
        Code.MEMORY_FULL,
        Code.MEMORY_FULL,
        Code.MERGE_TARGET_MISSING,
    ]
    assert not verdict.targets


def test_a_description_is_held_to_its_limit() -> None:
    verdict = judge_memory_changes(
        [add("long", description="x" * (c.MAX_DESCRIPTION_BYTES + 1)), add("fine")], {}, Limits()
    )
    assert [x.code for x in verdict.verdicts] == [Code.DESCRIPTION_TOO_LARGE, Code.OK]


def test_a_lone_surrogate_is_made_writable() -> None:
    """Legal JSON, not writable as UTF-8: it would fail every write of the run."""
    reply = (
        '{"reasoning": "r\\ud800", "memory_changes": [{"op": "add", "name": "n",'
        ' "description": "d\\udc00", "type": "user", "body": "x\\ud800y"}], "piece_edit": null}'
    )
    decision = parse_decision(reply)
    [change] = decision.memory_changes
    assert change.body == "x?y" and change.description == "d?" and decision.reasoning == "r?"
    verdict = judge_memory_changes(decision.memory_changes, {}, Limits())
    assert [x.code for x in verdict.verdicts] == [Code.OK]


def test_an_object_after_a_stray_quote_is_found() -> None:
    decision = parse_decision('The user wants 2" margins.\n{"reasoning": "r"}')
    assert decision.reasoning == "r"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (
            "description: Plan and implement",
            "description: 2001-02-30",
        ),  # a date that does not exist
        ("max_movements: 6", "max_movements: " + "9" * 5000),  # past int's digit limit
        ("required_permission_mode: readonly", "required_permission_mode: [full]"),
        ("required_permission_mode: readonly", "required_permission_mode: {a: 1}"),
    ],
)
def test_a_piece_edit_that_cannot_be_read_is_invalid(old: str, new: str) -> None:
    assert old in PIECE
    code, detail = check_piece_edit(PIECE, PIECE.replace(old, new, 1), piece_name="default")
    assert code is Code.PIECE_INVALID, detail


def test_a_memory_folder_that_cannot_be_read_is_an_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planned on an empty memory, an add would overwrite an entry it could not see."""
    paths = UserPaths(tmp_path, "alice")
    paths.memory_dir.mkdir(parents=True)

    def too_many_files(*_: object, **__: object) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(memory, "open_folder", too_many_files)
    with pytest.raises(OSError, match="Too many open files"):
        memory.load_memory(paths)


def test_the_loaders_own_refusals_keep_their_words() -> None:
    from reflection.safeyaml import UnsafeYamlError, load_strict

    with pytest.raises(UnsafeYamlError, match=r"^YAML anchors are not allowed"):
        load_strict("a: &x [1]\nb: *x\n", max_depth=8)
