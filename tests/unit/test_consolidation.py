"""The consolidation pass's judging (SPEC §11, §14), pure: `reflection.consolidation`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reflection.consolidation import PassLimits, is_stale, judge_pass
from reflection.models import Code, MemoryChange, MemoryEntry, PieceEdit
from reflection.records import EntryRecord

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=120)  # unconfirmed and unchanged past the 90 stale days
FRESH = NOW - timedelta(days=10)


def _entry(name: str, protected: bool = False) -> MemoryEntry:
    return MemoryEntry(
        name=name, description=f"about {name}", type="project", body="b", protected=protected
    )


def _record(name: str, changed: datetime, confirmed: datetime | None = None) -> EntryRecord:
    return EntryRecord(
        user_id="alice",
        name=name,
        type="project",
        created_at=changed,
        updated_at=changed,
        confirmed_at=confirmed,
        confirmations=0 if confirmed is None else 1,
    )


# Ten entries: old-0..old-5 stale, fresh-0..fresh-2 recent, guard protected and stale.
MEMORY = {
    **{f"old-{i}": _entry(f"old-{i}") for i in range(6)},
    **{f"fresh-{i}": _entry(f"fresh-{i}") for i in range(3)},
    "guard": _entry("guard", protected=True),
}
RECORDS = {
    **{f"old-{i}": _record(f"old-{i}", OLD) for i in range(6)},
    **{f"fresh-{i}": _record(f"fresh-{i}", FRESH) for i in range(3)},
    "guard": _record("guard", OLD),
}


def upd(name: str, **kw: Any) -> MemoryChange:
    fields = {"description": "sharper", "type": "project", "body": "The fact, merged."} | kw
    return MemoryChange(op="update", name=name, **fields)


def rm(name: str, target: str | None = None, reason: str | None = None) -> MemoryChange:
    return MemoryChange(op="remove", name=name, merge_target=target, reason=reason)


def add(name: str) -> MemoryChange:
    return MemoryChange(op="add", name=name, description="d", type="project", body="b")


def codes(
    changes: list[MemoryChange],
    limits: PassLimits | None = None,
    memory: dict[str, MemoryEntry] | None = None,
    records: dict[str, EntryRecord] | None = None,
) -> list[str]:
    judged = judge_pass(
        changes,
        memory=MEMORY if memory is None else memory,
        records=RECORDS if records is None else records,
        limits=limits or PassLimits(),
        now=NOW,
    )
    return [v.code.value for v in judged.verdicts]


CASES: list[tuple[str, list[MemoryChange], list[str]]] = [
    ("sharpen a description", [upd("fresh-0")], ["ok"]),
    ("merge a paraphrase", [upd("fresh-0"), rm("fresh-1", "fresh-0")], ["ok", "ok"]),
    ("merge needs no staleness", [rm("fresh-2", "fresh-0")], ["ok"]),
    ("retire a stale entry", [rm("old-0", reason="superseded by the v2 API")], ["ok"]),
    ("an add is refused", [add("brand-new")], ["op_not_allowed"]),
    ("an add refused even when invalid", [add("Bad Name")], ["op_not_allowed"]),
    (
        "an add is no merge target",
        [add("new"), rm("fresh-1", "new")],
        ["op_not_allowed", "merge_target_missing"],
    ),
    ("a fresh entry is not stale", [rm("fresh-0", reason="old")], ["not_stale"]),
    ("a stale removal needs a reason", [rm("old-0")], ["not_stale"]),
    ("a blank reason is none", [rm("old-0", reason="  ")], ["not_stale"]),
    ("protected: no update", [upd("guard")], ["protected"]),
    ("protected: no removal, even stale", [rm("guard", reason="stale")], ["protected"]),
    ("protected beats not_stale", [rm("guard")], ["protected"]),
    ("merge into a missing target", [rm("fresh-0", "ghost")], ["merge_target_missing"]),
    (
        "merge into an entry removed too",
        [rm("old-0", reason="x"), rm("old-1", "old-0")],
        ["ok", "merge_target_missing"],
    ),
    ("merge into itself", [rm("fresh-0", "fresh-0")], ["merge_target_missing"]),
    ("unknown entry", [upd("ghost"), rm("ghost2", reason="x")], ["not_found", "not_found"]),
    ("same name twice", [upd("fresh-0"), rm("fresh-0", "fresh-1")], ["ok", "duplicate_in_batch"]),
    ("invalid name", [upd("Fresh 0")], ["invalid_name"]),
    (
        "secret in an update",
        [upd("fresh-0", body="key sk-live-0123456789abcdefghijklmnop")],
        ["secret_detected"],
    ),
    ("unknown type", [upd("fresh-0", type="opinion")], ["unknown_type"]),
]


@pytest.mark.parametrize(("changes", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_rule(changes: list[MemoryChange], expected: list[str]) -> None:
    assert codes(changes) == expected


def test_removals_past_the_cap_are_refused_in_order() -> None:
    """At most max_removals removals are accepted; the later ones get too_many_removals."""
    changes = [rm(f"old-{i}", reason="stale") for i in range(3)]
    got = codes(changes, PassLimits(max_removals=2))
    assert got == ["ok", "ok", "too_many_removals"]


def test_a_pass_leaving_fewer_than_half_is_refused_whole() -> None:
    """Six of ten entries removed would leave four: every change gets too_many_removals,
    the update and the already rejected ones too."""
    changes = [upd("fresh-0")] + [rm(f"old-{i}", reason="stale") for i in range(6)] + [add("x")]
    judged = judge_pass(changes, memory=MEMORY, records=RECORDS, limits=PassLimits(), now=NOW)
    assert {v.code for v in judged.verdicts} == {Code.TOO_MANY_REMOVALS}
    assert judged.targets == {}


def test_exactly_half_left_is_allowed() -> None:
    """Five of ten removed leaves five, half: allowed (under the removal cap)."""
    changes = [rm(f"old-{i}", reason="stale") for i in range(5)]
    assert codes(changes) == ["ok"] * 5


def test_rejected_removals_do_not_count_toward_half() -> None:
    """Removals refused on their own (fresh, protected) leave their entries: no refusal
    of the whole pass."""
    changes = [rm(f"fresh-{i}", reason="x") for i in range(3)] + [rm("guard", reason="x")]
    changes += [rm("old-0", reason="stale"), rm("old-1", reason="stale")]
    assert codes(changes) == ["not_stale"] * 3 + ["protected", "ok", "ok"]


def test_the_pass_has_its_own_change_cap() -> None:
    """Past max_changes, an otherwise accepted change is too_many_changes; a change
    rejected for its own reason keeps that code."""
    changes = [upd("fresh-0"), upd("fresh-1"), upd("ghost"), upd("fresh-2")]
    assert codes(changes, PassLimits(max_changes=2)) == [
        "ok",
        "ok",
        "not_found",
        "too_many_changes",
    ]


def test_removal_cap_comes_before_the_change_cap() -> None:
    """A removal past both caps gets too_many_removals (SPEC §14 order)."""
    changes = [rm("old-0", reason="s"), rm("old-1", reason="s")]
    assert codes(changes, PassLimits(max_changes=1, max_removals=1)) == [
        "ok",
        "too_many_removals",
    ]


def test_targets_are_the_accepted_writes() -> None:
    judged = judge_pass(
        [upd("fresh-0", description="sharp"), rm("fresh-1", "fresh-0"), add("x")],
        memory=MEMORY,
        records=RECORDS,
        limits=PassLimits(),
        now=NOW,
    )
    assert set(judged.targets) == {"fresh-0", "fresh-1"}
    kept = judged.targets["fresh-0"]
    assert kept is not None and kept.description == "sharp"
    assert judged.targets["fresh-1"] is None


def test_a_piece_edit_is_refused() -> None:
    judged = judge_pass(
        [],
        memory=MEMORY,
        records=RECORDS,
        limits=PassLimits(),
        now=NOW,
        piece_edit=PieceEdit(yaml="name: x", summary="s"),
    )
    [v] = judged.verdicts
    assert (v.kind, v.accepted, v.code) == ("piece", False, Code.OP_NOT_ALLOWED)


@pytest.mark.parametrize(
    ("changed", "confirmed", "stale"),
    [
        (OLD, None, True),
        (FRESH, None, False),
        (OLD, FRESH, False),  # confirmed lately
        (NOW - timedelta(days=90), None, True),  # exactly the stale days
        (NOW - timedelta(days=89), None, False),
    ],
)
def test_staleness(changed: datetime, confirmed: datetime | None, stale: bool) -> None:
    assert is_stale(_record("x", changed, confirmed), NOW, 90) is stale


def test_an_entry_without_a_record_is_not_stale() -> None:
    """An entry found on disk that no run has recorded yet has no known age."""
    assert is_stale(None, NOW, 90) is False
    assert codes([rm("old-0", reason="s")], records={}) == ["not_stale"]
