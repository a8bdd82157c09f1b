"""A plan's three steps, each on its own: judge (pure), file changes (reads the folder),
records (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import Field

from reflection.changes import Limits
from reflection.frontmatter import render_entry
from reflection.models import (
    Code,
    LlmDecision,
    LlmResult,
    MemoryChange,
    MemoryEntry,
    Outcome,
    Piece,
    PieceEdit,
    ReflectRequest,
    Usage,
    Verdict,
)
from reflection.paths import UserPaths
from reflection.pieces import canonical_text
from reflection.plan import Judgement, State, file_changes, judge, records
from reflection.records import Change, Journal, ReflectionMeta, sha256
from tests.unit.test_changes import CURRENT, add, rm, upd
from tests.unit.test_pieces import PIECE

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TUNED = PIECE.replace("persona: planner", "persona: careful planner")
ESCALATED = PIECE.replace("edit: false", "edit: true", 1)
KEY = "sk-proj-" + "Ab3dE5gH7jK9mN1pQ3sT5vX7zB9dF1hJ"


def _state(user_copy: bool = False, last_edit: datetime | None = None) -> State:
    piece = Piece(name="default", yaml=PIECE, user_copy=user_copy, path=Path("pieces/default.yaml"))
    return State(memory=CURRENT, unreadable=frozenset(), piece=piece, last_piece_edit_at=last_edit)


def _decision(changes: list[MemoryChange], piece: str | None = None) -> LlmDecision:
    edit = None if piece is None else PieceEdit(yaml=piece, summary="tune")
    return LlmDecision(reasoning="r", memory_changes=changes, piece_edit=edit)


# (decision, mode, last piece edit, verdict codes, targets, piece written, piece staged)
JUDGED = [
    (_decision([]), "auto", None, [], [], False, False),
    (_decision([add("uses-uv"), rm("billing-db")]), "auto", None, [Code.OK, Code.OK],
     ["uses-uv", "billing-db"], False, False),
    (_decision([add("Bad Name"), upd("prefers-pytest")]), "auto", None,
     [Code.INVALID_NAME, Code.OK], ["prefers-pytest"], False, False),
    (_decision([add("uses-uv")], TUNED), "auto", None, [Code.OK, Code.OK], ["uses-uv"], True,
     False),
    (_decision([], TUNED), "review", None, [Code.OK], [], False, True),
    (_decision([], TUNED), "auto", NOW - timedelta(hours=1), [Code.PIECE_COOLDOWN], [], False,
     False),
    (_decision([], ESCALATED), "review", None, [Code.PIECE_ESCALATION], [], False, False),
    (_decision([], PIECE), "auto", None, [Code.PIECE_UNCHANGED], [], False, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("decision", "mode", "last_edit", "codes", "targets", "written", "staged"),
    JUDGED,
    ids=["abstained", "add-remove", "one-rejected", "piece-edit", "staged", "cooldown",
         "escalation-not-staged", "unchanged"],
)  # fmt: skip
def test_judge(
    decision: LlmDecision,
    mode: str,
    last_edit: datetime | None,
    codes: list[Code],
    targets: list[str],
    written: bool,
    staged: bool,
) -> None:
    """Memory verdicts come first, then the piece's; an accepted edit is written in auto
    mode and staged in review mode, a rejected one neither."""
    judged = judge(decision, "default", _state(last_edit=last_edit), Limits(), NOW, mode)
    assert [v.code for v in judged.verdicts] == codes
    assert list(judged.targets) == targets
    assert (judged.piece_after is not None, judged.staged is not None) == (written, staged)
    if staged:
        assert judged.verdicts[-1].detail == "staged for review"


ENTRY = MemoryEntry(name="uses-uv", description="Uses uv", type="project", body="uv sync")


@pytest.mark.parametrize(
    ("judged", "paths_written", "before", "after"),
    [
        (Judgement((), {}), [], {}, {}),
        (Judgement((), {"uses-uv": ENTRY}), ["memory/uses-uv.md", "memory/MEMORY.md"],
         {"uses-uv": None}, {"uses-uv": render_entry(ENTRY)}),
        (Judgement((), {"billing-db": None}), ["memory/billing-db.md", "memory/MEMORY.md"],
         {"billing-db": "old body"}, {"billing-db": None}),
        (Judgement((), {}, piece_after=TUNED), ["pieces/default.yaml"], {}, {}),
        (Judgement((), {}, staged=TUNED), [], {}, {}),
    ],
    ids=["nothing", "add", "remove", "piece", "staged-writes-nothing"],
)  # fmt: skip
def test_file_changes(
    tmp_path: Path,
    judged: Judgement,
    paths_written: list[str],
    before: dict[str, str | None],
    after: dict[str, str | None],
) -> None:
    """Each file a judgement changes, with its text as read now and as it will be."""
    paths = UserPaths(tmp_path, "alice")
    paths.memory_dir.mkdir(parents=True)
    paths.memory_file("billing-db").write_text("old body")
    writes = file_changes(paths, judged, _state(), "default")
    assert [f.path for f in writes.files] == paths_written
    assert dict(writes.memory_before) == before and dict(writes.memory_after) == after
    if "memory/MEMORY.md" in paths_written:
        index = writes.files[-1].after or ""
        assert ("uses-uv" in index) == ("uses-uv" in after)
        assert ("billing-db" in index) == ("billing-db" not in after)
    if judged.piece_after is not None:
        assert writes.files[-1].before is None and writes.files[-1].after == TUNED


REQUEST = ReflectRequest(
    original_job_id="j1", user_id="alice", piece_name="default", outcome="failed"
)


def _llm(decision: LlmDecision) -> LlmResult:
    return LlmResult(
        decision=decision, raw=f"raw {KEY}", model="m", usage=Usage(tokens_in=9, tokens_out=2)
    )


def _journal(
    judged: Judgement, decision: LlmDecision, store_raw: bool = False, change: Change | None = None
) -> Journal:
    change = change or Change(
        snapshot_id="s1",
        at=NOW,
        user_id="alice",
        piece_name="default",
        original_job_id="j1",
        reflection_job_id="r1",
        memory_before={n: None for n in judged.targets},
        memory_after={n: "text" for n in judged.targets},
        piece_edited=judged.piece_after is not None,
    )
    journal = records(
        change,
        request=REQUEST,
        fence=3,
        llm=_llm(decision),
        judged=judged,
        files=(),
        piece_before=PIECE,
        store_llm_raw=store_raw,
        memory=CURRENT,
    )
    assert journal.fence == 3 and journal.metrics is not None
    assert journal.metrics == journal.metrics.of_snapshot(journal.meta)
    return journal


def _meta(judged: Judgement, decision: LlmDecision, store_raw: bool = False) -> ReflectionMeta:
    meta = _journal(judged, decision, store_raw).meta
    assert isinstance(meta, ReflectionMeta)
    return meta


def test_records_of_an_abstention() -> None:
    """Nothing proposed: outcome abstained, no rows but the metrics row, no snapshot files."""
    decision = _decision([])
    meta = _meta(Judgement((), {}), decision)
    assert meta.outcome is Outcome.ABSTAINED and meta.rejected == 0 and meta.verdicts == []
    assert (meta.job_outcome, meta.tokens_in, meta.model) == ("failed", 9, "m")


@pytest.mark.parametrize(
    ("codes", "outcome", "rejected"),
    [([Code.OK], Outcome.APPLIED, 0), ([Code.OK, Code.EXISTS], Outcome.APPLIED, 1),
     ([Code.EXISTS, Code.INVALID_NAME], Outcome.REJECTED, 2)],
    ids=["applied", "partly", "rejected"],
)  # fmt: skip
def test_records_outcome(codes: list[Code], outcome: Outcome, rejected: int) -> None:
    """applied with one accepted change, rejected with none; rejections are counted."""
    verdicts = tuple(
        Verdict(kind="memory", name=f"n{i}", op="add", accepted=c is Code.OK, code=c)
        for i, c in enumerate(codes)
    )
    meta = _meta(Judgement(verdicts, {}), _decision([]))
    assert (meta.outcome, meta.rejected) == (outcome, rejected)


def test_records_mask_what_the_model_wrote() -> None:
    """A credential in the reasoning, a rejected name, or the raw answer stays masked."""
    decision = LlmDecision(reasoning=f"the key is {KEY}", memory_changes=[add(KEY)])
    judged = judge(decision, "default", _state(), Limits(), NOW)
    meta = _meta(judged, decision, store_raw=True)
    assert KEY not in meta.reasoning and KEY not in meta.verdicts[0].name
    assert meta.llm_raw is not None and KEY not in meta.llm_raw


def test_records_of_a_piece_edit_and_of_a_staged_one() -> None:
    """A written piece gets its piece_edits row and both texts in the snapshot; a staged
    one a proposal row and the proposed text instead."""
    decision = _decision([], TUNED)
    written = judge(decision, "default", _state(), Limits(), NOW)
    journal_meta = _meta(written, decision)
    assert journal_meta.piece_edited and journal_meta.piece_staged is None
    staged = judge(decision, "default", _state(), Limits(), NOW, "review")
    staged_meta = _meta(staged, decision)
    assert not staged_meta.piece_edited and staged_meta.piece_staged is True
    change = Change(
        snapshot_id="s1", at=NOW, user_id="alice", piece_name="default", piece_edited=True
    )
    for judged, files, edit, proposal in (
        (written, {"piece.before.yaml", "piece.after.yaml"}, True, False),
        (staged, {"piece.before.yaml", "piece.proposed.yaml"}, False, True),
    ):
        journal = _journal(judged, decision, change=change)
        assert set(journal.snapshot) == files
        assert (journal.piece_edit is not None, journal.proposal is not None) == (edit, proposal)
    assert journal.proposal is not None
    # Hashed (and staged) as the canonical text this worker writes (SPEC §14).
    assert journal.proposal.before_sha256 == sha256(canonical_text(PIECE))
    assert journal.proposal.after_sha256 == sha256(canonical_text(TUNED))
    assert journal.proposal.yaml == canonical_text(TUNED)
    assert journal.proposal.summary == "tune" and journal.proposal.status == "pending"


class _Quoted(MemoryChange):
    """A change as the evidence work will shape it: with its quotes."""

    evidence: list[str] = Field(default_factory=list)


def test_records_carry_the_entry_records_of_the_change() -> None:
    """An add is created, an update updated, a merge removed into its target; confirmed
    names count when they exist and stay (unknown and removed ones are ignored); the other
    entries on disk are found, to be recorded if nothing recorded them yet."""
    decision = LlmDecision(
        reasoning="r",
        memory_changes=[
            add("uses-uv", type="project"),
            upd("prefers-pytest"),
            rm("billing-db", merge_target="prefers-pytest"),
        ],
        confirmed=["billing-db", "nope", "never-force-push", "never-force-push"],
    )
    judged = judge(decision, "default", _state(), Limits(), NOW)
    change = Change(
        snapshot_id="s1",
        at=NOW,
        user_id="alice",
        piece_name="default",
        reflection_job_id="r1",
        memory_before={"uses-uv": None, "prefers-pytest": "old", "billing-db": "old"},
        memory_after={"uses-uv": "new", "prefers-pytest": "new", "billing-db": None},
    )
    journal = _journal(judged, decision, change=change)
    entries = journal.entries
    assert entries is not None and (entries.job, entries.at) == ("r1", NOW)
    assert {w.name: (w.action, w.type, w.reason) for w in entries.writes} == {
        "uses-uv": ("created", "project", None),
        "prefers-pytest": ("updated", "feedback", None),
        "billing-db": ("removed", "project", "merged into prefers-pytest"),
    }
    assert all(w.evidence == [] for w in entries.writes)  # the decision has no quotes yet
    assert entries.confirmed == ["never-force-push"] == journal.meta.confirmed  # type: ignore[union-attr]
    assert entries.found == {"never-force-push": "feedback"}


def test_entry_records_keep_the_quotes_masked_and_bounded() -> None:
    """A change's quotes (once the decision carries them) reach its record masked, at
    most three of at most 300 characters, without NUL (Postgres refuses it)."""
    quotes = [f"the key {KEY} was rotated", "x" * 400, "th\x00ird", "fourth"]
    change = _Quoted.model_validate(add("uses-uv").model_dump() | {"evidence": quotes})
    decision = LlmDecision(reasoning="r", memory_changes=[change])
    judged = judge(decision, "default", _state(), Limits(), NOW)
    journal = _journal(judged, decision)
    assert journal.entries is not None
    [write] = journal.entries.writes
    assert len(write.evidence) == 3 and KEY not in write.evidence[0]
    assert write.evidence[1] == "x" * 300 and write.evidence[2] == "third"
