"""The records after the LLM call load what older releases wrote, ignore what newer ones
add, and are written back exactly as the files on disk have them (SPEC §14)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from reflection.models import Code, Outcome, Usage, Verdict
from reflection.records import (
    ApprovalMeta,
    Change,
    ConsolidationMeta,
    EntryChanges,
    EntryEvidence,
    EntryRecord,
    EntryWrite,
    IndexLine,
    Journal,
    MetricsRow,
    PieceEditRow,
    ReflectionMeta,
    RevertMeta,
    describe_invalid,
    parse_meta,
    sha256,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "records_07ec03c"
METAS = sorted((FIXTURES / "snapshots").glob("*.json"))
JOURNALS = sorted((FIXTURES / "journals").glob("*.json"))
KINDS = {
    "reflection": ReflectionMeta,
    "revert": RevertMeta,
    "approval": ApprovalMeta,
    "consolidation": ConsolidationMeta,
}


def _load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def test_fixtures_cover_every_kind_written_today() -> None:
    """The fixture files hold a reflection, a revert and an approval (each outcome)."""
    kinds = {(m["kind"], m["outcome"]) for m in map(_load, METAS)}
    assert kinds == {
        ("reflection", "applied"),
        ("reflection", "abstained"),
        ("reflection", "rejected"),
        ("revert", "reverted"),
        ("approval", "applied"),
    }
    assert len(JOURNALS) == 8


@pytest.mark.parametrize("path", METAS, ids=[p.stem for p in METAS])
def test_old_meta_loads_as_its_kind_and_is_written_back_the_same(path: Path) -> None:
    """A meta.json of 07ec03c loads as its kind's record and dumps to the same object."""
    data = _load(path)
    meta = parse_meta(data, data["snapshot_id"])
    assert isinstance(meta, KINDS[data["kind"]])
    assert meta.to_json() == data


def test_old_index_lines_load_and_are_written_back_the_same() -> None:
    """Each index.jsonl line of 07ec03c loads and dumps to the same line."""
    lines = (FIXTURES / "index.jsonl").read_text().splitlines()
    metas = {m["snapshot_id"]: m for m in map(_load, METAS)}
    for line in lines:
        item = IndexLine.model_validate_json(line)
        assert json.dumps(item.to_json(), ensure_ascii=False) == line
        assert item.snapshot_id is not None
        assert parse_meta(metas[item.snapshot_id]).index_line() == item


@pytest.mark.parametrize("path", JOURNALS, ids=[p.stem for p in JOURNALS])
def test_old_journals_load_with_their_rows(path: Path) -> None:
    """A journal of 07ec03c loads: its meta and rows are the ones written, `{}` is no row."""
    data = _load(path)
    journal = Journal.model_validate_json(path.read_text())
    assert journal.meta.to_json() == data["meta"]
    assert [f.model_dump() for f in journal.files] == data["files"]
    assert journal.snapshot == data["snapshot"]
    if data["metrics"]:
        assert journal.metrics is not None
        assert journal.metrics.model_dump(mode="json", exclude_unset=True) == data["metrics"]
    else:
        assert journal.metrics is None
    if data["record"]:
        assert journal.record == MetricsRow.of_snapshot(journal.meta)
    if data["piece_edit"]:
        assert journal.piece_edit is not None
        assert journal.piece_edit.created_at == datetime.fromisoformat(
            data["piece_edit"]["created_at"]
        )
    if data["proposal"]:
        assert journal.proposal is not None and journal.proposal.yaml == data["proposal"]["yaml"]
    assert journal.entries is None  # written before entry records: none to commit


def test_a_journal_round_trips() -> None:
    """What a journal writes, it reads back equal."""
    journal = Journal.model_validate_json(JOURNALS[0].read_text())
    assert Journal.model_validate_json(journal.model_dump_json()) == journal


META = {"kind": "reflection", "snapshot_id": "s1", "outcome": "applied"}


@pytest.mark.parametrize(
    ("data", "kind", "outcome"),
    [
        ({}, ReflectionMeta, Outcome.ABSTAINED),
        ({"snapshot_id": "s1", "outcome": "rejected"}, ReflectionMeta, Outcome.REJECTED),
        ({**META, "tokens_cached": 7, "future": {"x": 1}}, ReflectionMeta, Outcome.APPLIED),
        ({"kind": "revert", "reverts": "s0"}, RevertMeta, Outcome.REVERTED),
        ({"kind": "approval", "proposal_id": 3}, ApprovalMeta, Outcome.APPLIED),
        ({"kind": "consolidation", "reason": "scheduled"}, ConsolidationMeta, Outcome.ABSTAINED),
        ({"kind": "reflection", "outcome": "coalesced"}, ReflectionMeta, Outcome.COALESCED),
    ],
    ids=["empty", "no-kind", "unknown-fields", "revert", "approval", "consolidation", "coalesced"],
)
def test_meta_defaults_what_is_missing_and_ignores_what_is_unknown(
    data: dict[str, Any], kind: type, outcome: Outcome
) -> None:
    """A meta without a kind is a reflection's; missing fields take defaults."""
    meta = parse_meta(data)
    assert isinstance(meta, kind) and meta.outcome is outcome
    assert "future" not in meta.to_json() and "tokens_cached" not in meta.to_json()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({**META, "decisions": [{"accepted": False}]}, "decisions.0.kind: Field required"),
        ({**META, "decisions": "ok"}, "decisions: Input should be a valid list"),
        ({**META, "memory_files": "x"}, "memory_files: Input should be a valid dictionary"),
        ({**META, "memory_files": {"../x": {}}}, "memory_files.../x.[key]: String should match"),
        ({**META, "piece_edited": True}, "piece_edited without a piece_name"),
        ({**META, "snapshot_id": "s2"}, "its snapshot_id is 's2'"),
        ({**META, "kind": "mystery"}, "Input tag 'mystery'"),
        ([META], "Input should be a valid dictionary"),
    ],
    ids=["verdict-keys", "decisions", "files", "unsafe-name", "unnamed-piece", "other-folder",
         "unknown-kind", "not-an-object"],
)  # fmt: skip
def test_malformed_meta_is_refused_with_one_line(data: object, problem: str) -> None:
    """A meta missing what its readers need fails validation, described on one line."""
    with pytest.raises(ValidationError) as info:
        parse_meta(data, "s1")
    described = describe_invalid(info.value)
    assert problem in described and "\n" not in described


NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CHANGE = Change(
    snapshot_id="s1",
    at=NOW,
    user_id="alice",
    piece_name="default",
    original_job_id="job-1",
    reflection_job_id="refl-1",
    memory_before={"a": None, "b": "old"},
    memory_after={"a": "new", "b": None},
    piece_edited=True,
    piece_from_user=True,
)


def test_every_kind_of_meta_is_built_from_one_change() -> None:
    """The shared fields of every kind come from the change: counts, files, the piece."""
    for meta in (
        ReflectionMeta.of(CHANGE, outcome=Outcome.APPLIED),
        RevertMeta.of(CHANGE, reverts="s0"),
        ApprovalMeta.of(CHANGE, proposal_id=1),
    ):
        data = meta.to_json()
        assert data["created_at"] == "2026-03-01T12:00:00+00:00"
        assert data["memory_changes"] == 2 and data["piece_edited"] is True
        assert data["piece_before_source"] == "user"
        assert data["memory_files"] == {
            "a": {"before": False, "after": True},
            "b": {"before": True, "after": False},
        }


def test_optional_meta_fields_are_written_only_when_set() -> None:
    """llm_raw and piece_staged appear in meta.json only when they have a value."""
    bare = ReflectionMeta.of(CHANGE).to_json()
    assert "llm_raw" not in bare and "piece_staged" not in bare
    full = ReflectionMeta.of(CHANGE, llm_raw="{}", piece_staged=True).to_json()
    assert full["llm_raw"] == "{}" and full["piece_staged"] is True


REFLECTED = ReflectionMeta.of(
    CHANGE,
    outcome=Outcome.APPLIED,
    rejected=1,
    tokens_in=10,
    tokens_out=2,
    llm_attempts=3,
    model="m",
)
REVERTED = RevertMeta.of(replace(CHANGE, original_job_id="j" * 200), reverts="s0")


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        (REFLECTED, {"outcome": "applied", "rejections": 1, "tokens_in": 10, "tokens_out": 2,
                     "llm_attempts": 3, "model": "m", "original_job_id": "job-1",
                     "kind": "reflection"}),
        (REVERTED, {"outcome": "reverted", "rejections": 0, "tokens_in": 0, "tokens_out": 0,
                    "llm_attempts": 0, "model": None, "original_job_id": "j" * 128,
                    "kind": "revert"}),
    ],
    ids=["reflection", "revert"],
)  # fmt: skip
def test_metrics_row_of_a_snapshot(
    meta: ReflectionMeta | RevertMeta, expected: dict[str, Any]
) -> None:
    """A reflection's row carries what the LLM cost; a revert's none, its job id cut."""
    row = MetricsRow.of_snapshot(meta).model_dump(mode="json")
    assert {k: row[k] for k in expected} == expected
    assert row["snapshot_id"] == "s1" and row["memory_changes"] == 2 and row["piece_edited"]


class _Run:
    reflection_job_id = "r1"
    original_job_id = "j1"
    user_id = "alice"
    piece_name = "default"


def test_metrics_row_of_a_run_without_snapshot() -> None:
    """A failed run's row names it, its code, and what its LLM calls cost (the cached
    part of the prompt tokens too)."""
    usage = Usage(tokens_in=3, tokens_out=1, tokens_cached=2)
    row = MetricsRow.of_run(
        _Run(),
        Outcome.FAILED,
        error_code="llm_unavailable",
        duration_ms=5,
        usage=usage,
        llm_attempts=4,
    )
    assert row.model_dump(mode="json") == {
        "reflection_job_id": "r1",
        "original_job_id": "j1",
        "user_id": "alice",
        "piece_name": "default",
        "outcome": "failed",
        "error_code": "llm_unavailable",
        "memory_changes": 0,
        "piece_edited": False,
        "rejections": 0,
        "tokens_in": 3,
        "tokens_out": 1,
        "tokens_cached": 2,
        "llm_attempts": 4,
        "duration_ms": 5,
        "model": None,
        "snapshot_id": None,
        "kind": "reflection",
        "coalesced_into": None,
    }


def test_piece_edit_row_names_its_owner_and_the_pieces() -> None:
    """A piece edit's row hashes the piece written; its owner gives the ids."""
    meta = ReflectionMeta.of(CHANGE)
    row = PieceEditRow.of(meta, before_sha256="b", after="new piece", at=NOW)
    assert (row.user_id, row.piece_name, row.reflection_job_id) == ("alice", "default", "refl-1")
    assert row.after_sha256 == sha256("new piece") and row.created_at == NOW


def test_verdicts_are_read_and_written_as_decisions() -> None:
    """On disk the verdicts keep their key, `decisions`."""
    verdict = Verdict(kind="memory", name="a", op="add", accepted=True, code=Code.OK)
    meta = ReflectionMeta.of(CHANGE, verdicts=[verdict])
    assert meta.to_json()["decisions"] == [verdict.model_dump(mode="json")]
    assert parse_meta(meta.to_json()) == meta


@pytest.mark.parametrize(
    ("meta", "kind"),
    [(ConsolidationMeta.of(CHANGE, reason="scheduled"), "consolidation"),
     (ApprovalMeta.of(CHANGE, proposal_id=1), "approval")],
    ids=["consolidation", "approval"],
)  # fmt: skip
def test_every_kind_of_change_has_a_row_of_its_kind(
    meta: ConsolidationMeta | ApprovalMeta, kind: str
) -> None:
    """A consolidation's and an approval's rows say their kind; an approval's row takes
    a job id of its own (its meta names the run that proposed the edit)."""
    row = MetricsRow.of_snapshot(meta, reflection_job_id="approve-1")
    assert (row.kind, row.reflection_job_id, row.snapshot_id) == (kind, "approve-1", "s1")
    assert MetricsRow.of_snapshot(meta).reflection_job_id == "refl-1"


@pytest.mark.parametrize(
    ("outcome", "kind"),
    [("reverted", "revert"), ("applied", "reflection"), ("failed", "reflection")],
)
def test_a_row_written_before_kinds_reads_as_its_kind(outcome: str, kind: str) -> None:
    """A journaled row without `kind` is a reflection's, unless it is a revert's."""
    row = MetricsRow.model_validate(
        {"reflection_job_id": "r", "original_job_id": "j", "user_id": "u", "piece_name": "p",
         "outcome": outcome}
    )  # fmt: skip
    assert row.kind == kind


ENTRY_CHANGE = replace(
    CHANGE,
    memory_before={"new": None, "edited": "old text", "gone": "old text"},
    memory_after={"new": "text", "edited": "new text", "gone": None},
)


@pytest.mark.parametrize(
    ("restores", "actions"),
    [(False, {"new": "created", "edited": "updated", "gone": "removed"}),
     (True, {"new": "updated", "edited": "updated", "gone": "removed"})],
    ids=["reflection", "revert"],
)  # fmt: skip
def test_entry_changes_of_a_change(restores: bool, actions: dict[str, str]) -> None:
    """An entry absent before is created (a revert brings it back: updated), one absent
    after is removed with its reason, any other updated with its quotes; the entries found
    on disk are those the change left alone."""
    changes = EntryChanges.of(
        ENTRY_CHANGE,
        types={"new": "user", "edited": "project", "gone": "feedback"},
        evidence={"new": ["q1"], "edited": ["q2"], "gone": ["never kept"]},
        reasons={"new": "ignored", "edited": "ignored", "gone": "merged into edited"},
        restores=restores,
        confirmed=["kept"],
        found={"kept": "reference", "edited": "project"},
    )
    assert (changes.user_id, changes.job, changes.at) == ("alice", "refl-1", NOW)
    assert {w.name: w.action for w in changes.writes} == actions
    by = {w.name: w for w in changes.writes}
    assert by["gone"] == EntryWrite(
        name="gone", action="removed", type="feedback", reason="merged into edited"
    )
    assert (by["edited"].evidence, by["edited"].reason, by["new"].type) == (["q2"], None, "user")
    assert changes.confirmed == ["kept"] and changes.found == {"kept": "reference"}


def test_entry_changes_load_with_unknown_fields_and_defaults() -> None:
    """A journal's entry changes of another release load: unknown keys ignored."""
    loaded = EntryChanges.model_validate(
        {"user_id": "u", "job": "r", "at": "2026-03-01T12:00:00Z", "future": 1,
         "writes": [{"name": "a", "action": "created", "later": True}]}
    )  # fmt: skip
    assert loaded.writes == [EntryWrite(name="a", action="created")]
    assert loaded.confirmed == [] and loaded.found == {}


def test_entry_record_says_how_old_and_how_stale() -> None:
    """Age counts from creation; staleness from the last write or confirmation."""
    day = timedelta(days=1)
    record = EntryRecord(
        user_id="u",
        name="a",
        created_at=NOW - 30 * day,
        updated_at=NOW - 10 * day,
        confirmed_at=NOW - 2 * day,
        evidence=EntryEvidence(job_id="r", quotes=["q"]),
    )
    assert record.live and record.last_changed == NOW - 10 * day
    assert record.age(NOW) == 30 * day and record.unconfirmed_for(NOW) == 2 * day
    never = record.model_copy(update={"confirmed_at": None, "removed_at": NOW})
    assert not never.live and never.unconfirmed_for(NOW) == 10 * day
