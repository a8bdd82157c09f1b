"""The records a change leaves behind, after the LLM has answered: what a snapshot's
`meta.json` says, its `index.jsonl` line, the `reflection_metrics`, `piece_edits` and
`piece_proposals` rows, and the journal that carries them all to disk (`reflection.apply`).

Each record is built in one place, by the builders here (`SnapshotMeta.of(Change)`,
`MetricsRow.of_snapshot` and `of_run`, `PieceEditRow.of`) that a reflection
(`reflection.plan`), a revert and an approval share, and read as attributes everywhere.
Records are read back from files and rows that an older or a newer release may have
written (SPEC §14): unknown fields are ignored and missing ones defaulted; only a field
without which the record means nothing (a verdict's code, a journal's user) is required.
New fields get defaults, so the files already on disk keep loading
(`tests/fixtures/records_07ec03c`).

    SnapshotMeta = ReflectionMeta | ConsolidationMeta | RevertMeta | ApprovalMeta   (on `kind`)
    IndexLine      one line of index.jsonl, the summary of a SnapshotMeta
    MetricsRow     reflection_metrics: one per run, failed and duplicate ones too, and one
                   per revert and approval (`kind` says which)
    PieceEditRow   piece_edits: one per piece written (the cooldown reads it)
    ProposalRow    piece_proposals, as a review-mode run inserts it; Proposal as read back
    EntryChanges   what a change does to memory_entries (EntryWrite per entry written,
                   confirmations, entries found on disk); EntryRecord as read back
    Journal        everything one change writes, decided before the first write
    StoredDecision what `reflection_claims.decision` holds while a run is unfinished: the
                   masked decision, its secret verdicts and the job text shown (SPEC §14)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, Protocol, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from reflection.changes import Grounds, secret_kinds
from reflection.constants import MAX_ID_IN_METRICS, SLUG_RE
from reflection.evidence import ShownJob
from reflection.models import MAX_REASONING_CHARS, LlmResult, Outcome, Usage, Verdict
from reflection.secrets import find_secrets, mask_secrets

PieceSource = Literal["user", "builtin"]
MemoryName = Annotated[str, StringConstraints(pattern=SLUG_RE.pattern)]


def _written_when_set() -> Any:
    """A field that meta.json holds only when it has a value (`store_llm_raw`, review
    mode), as the files on disk have it."""
    return Field(default=None, exclude_if=lambda v: v is None)


class Record(BaseModel):
    """A record read back from disk or the database: unknown fields ignored, missing ones
    defaulted, fields read and written by their on-disk names."""

    model_config = ConfigDict(
        frozen=True, extra="ignore", validate_by_name=True, serialize_by_alias=True
    )


class MemoryFileState(Record):
    """Whether a memory entry's file existed before and after the change."""

    before: bool = False
    after: bool = False


class _Meta(Record):
    """What every snapshot's meta.json says: whose change, of what, and which files."""

    snapshot_id: str = ""
    created_at: str = ""  # ISO 8601, as written
    original_job_id: str = ""
    reflection_job_id: str = ""
    user_id: str = ""
    piece_name: str | None = None
    memory_changes: int = 0
    piece_edited: bool = False
    piece_before_source: PieceSource = "builtin"
    memory_files: dict[MemoryName, MemoryFileState] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> _Meta:
        if self.piece_edited and self.piece_name is None:
            raise ValueError("piece_edited without a piece_name")
        folder = (info.context or {}).get("snapshot_id")
        if folder is not None and self.snapshot_id != folder:
            # its diffs would be read from that other snapshot's folder
            raise ValueError(f"its snapshot_id is {self.snapshot_id!r}")
        return self

    @classmethod
    def of(cls, change: Change, **fields: Any) -> Self:
        """The meta of `change`, with the fields of its kind."""
        return cls(
            snapshot_id=change.snapshot_id,
            created_at=change.at.isoformat(),
            original_job_id=change.original_job_id,
            reflection_job_id=change.reflection_job_id,
            user_id=change.user_id,
            piece_name=change.piece_name,
            memory_changes=len(change.memory_before),
            piece_edited=change.piece_edited,
            piece_before_source="user" if change.piece_from_user else "builtin",
            memory_files=memory_files(change.memory_before, change.memory_after),
            **fields,
        )

    def to_json(self) -> dict[str, Any]:
        """meta.json's object."""
        return self.model_dump(mode="json")

    def index_line(self) -> IndexLine:
        """Its line in index.jsonl."""
        return IndexLine.model_validate(self.to_json())


class _JudgedMeta(_Meta):
    """A snapshot of proposed changes, each with its verdict."""

    rejected: int = 0
    verdicts: list[Verdict] = Field(default_factory=list, alias="decisions")


class AskedMeta(_JudgedMeta):
    """A snapshot of changes the LLM proposed: what it said and what that cost."""

    reasoning: str = ""
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    llm_attempts: int = 0
    llm_raw: str | None = _written_when_set()
    # Existing entries the job relied on or showed to be still true (SPEC §11), as counted;
    # written only when there are any, as meta.json files before it have it.
    confirmed: list[MemoryName] = Field(default_factory=list, exclude_if=lambda v: not v)


class ReflectionMeta(AskedMeta):
    """A reflection on a finished job (every run that reached the LLM has one)."""

    kind: Literal["reflection"] = "reflection"
    # Nothing proposed is abstained: the outcome of an empty list of verdicts.
    outcome: Outcome = Outcome.ABSTAINED
    job_outcome: str = ""
    piece_staged: bool | None = _written_when_set()  # True: the piece edit waits for review


class ConsolidationMeta(AskedMeta):
    """A consolidation pass over a user's memory (SPEC §11; nothing writes it yet)."""

    kind: Literal["consolidation"] = "consolidation"
    outcome: Outcome = Outcome.ABSTAINED
    reason: str = ""  # scheduled | threshold | operator


class RevertMeta(_Meta):
    """An operator's revert of another snapshot."""

    kind: Literal["revert"] = "revert"
    outcome: Outcome = Outcome.REVERTED
    reverts: str = ""  # the snapshot reverted


class ApprovalMeta(_JudgedMeta):
    """An operator's approval of a piece edit staged for review."""

    kind: Literal["approval"] = "approval"
    outcome: Outcome = Outcome.APPLIED
    proposal_id: int | None = None
    summary: str = ""


def _kind(value: Any) -> str:
    """A meta's kind; one written before kinds existed is a reflection's."""
    if isinstance(value, Mapping):
        return str(value.get("kind", "reflection"))
    return str(getattr(value, "kind", "reflection"))


SnapshotMeta = Annotated[
    Annotated[ReflectionMeta, Tag("reflection")]
    | Annotated[ConsolidationMeta, Tag("consolidation")]
    | Annotated[RevertMeta, Tag("revert")]
    | Annotated[ApprovalMeta, Tag("approval")],
    Discriminator(_kind),
]
_SNAPSHOT_META: TypeAdapter[SnapshotMeta] = TypeAdapter(SnapshotMeta)


def parse_meta(data: object, snapshot_id: str | None = None) -> SnapshotMeta:
    """A meta.json object as its kind's record; pydantic's ValidationError (a ValueError)
    when it is malformed, or is not the meta of `snapshot_id`'s folder (when given)."""
    return _SNAPSHOT_META.validate_python(data, context={"snapshot_id": snapshot_id})


def describe_invalid(error: ValidationError, most: int = 3) -> str:
    """A record's validation errors on one line, for an operator."""
    problems = [
        f"{'.'.join(str(p) for p in e['loc'][1:]) or 'meta'}: {e['msg']}"
        for e in error.errors(include_url=False)[:most]
    ]
    return "; ".join(problems).replace("\n", " ")


class IndexLine(Record):
    """One line of `index.jsonl`: a snapshot's summary (None where the line has no value)."""

    snapshot_id: str | None = None
    created_at: str | None = None
    original_job_id: str | None = None
    reflection_job_id: str | None = None
    piece_name: str | None = None
    outcome: str | None = None
    memory_changes: int | None = None
    piece_edited: bool | None = None
    rejected: int | None = None
    model: str | None = None
    kind: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The line's object: the fields it was given, in this order."""
        return self.model_dump(mode="json", exclude_unset=True)


MetricsKind = Literal["reflection", "consolidation", "revert", "approval"]


class MetricsRow(Record):
    """One `reflection_metrics` row: every run (failed and duplicate ones too), every
    revert and every approval, its `kind` saying which. Defaults are the columns' server
    defaults. Built by `of_snapshot` for a change that has a snapshot, by `of_run` for a
    run that ended without one."""

    reflection_job_id: str
    original_job_id: str
    user_id: str
    piece_name: str
    outcome: Outcome
    error_code: str | None = None
    memory_changes: int = 0
    piece_edited: bool = False
    rejections: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    # Of tokens_in, those the provider served from its prompt cache (SPEC §12).
    tokens_cached: int = 0
    llm_attempts: int = 0
    duration_ms: int = 0
    model: str | None = None
    snapshot_id: str | None = None
    kind: MetricsKind = "reflection"
    # A coalesced job's row (outcome `coalesced`): its batch leader's reflection job id.
    coalesced_into: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _kind_of_old_rows(cls, data: Any) -> Any:
        # A revert's row journaled before kinds existed says so only by its outcome.
        if isinstance(data, Mapping) and "kind" not in data and data.get("outcome") == "reverted":
            return {**data, "kind": "revert"}
        return data

    @classmethod
    def of_snapshot(
        cls,
        meta: ReflectionMeta | ConsolidationMeta | RevertMeta | ApprovalMeta,
        *,
        reflection_job_id: str | None = None,
    ) -> MetricsRow:
        """The row of a reflection, consolidation, revert or approval, from its snapshot's
        meta; `reflection_job_id` when the row has an id of its own (an approval's meta
        names the run that proposed the edit, whose row exists already)."""
        asked: dict[str, Any] = {}  # what the LLM cost (an operator's change asked none)
        if isinstance(meta, AskedMeta):
            asked = {
                "rejections": meta.rejected,
                "tokens_in": meta.tokens_in,
                "tokens_out": meta.tokens_out,
                "llm_attempts": meta.llm_attempts,
                "model": meta.model,
            }
        return cls(
            reflection_job_id=reflection_job_id or meta.reflection_job_id,
            original_job_id=meta.original_job_id[:MAX_ID_IN_METRICS],
            user_id=meta.user_id,
            piece_name=meta.piece_name or "",
            outcome=meta.outcome,
            memory_changes=meta.memory_changes,
            piece_edited=meta.piece_edited,
            snapshot_id=meta.snapshot_id,
            kind=meta.kind,
            **asked,
        )

    @classmethod
    def of_run(
        cls,
        run: RunIdentity,
        outcome: Outcome,
        *,
        error_code: str | None = None,
        duration_ms: int = 0,
        usage: Usage | None = None,
        llm_attempts: int = 0,
        model: str | None = None,
    ) -> MetricsRow:
        """The row of a run that ended without a snapshot (failed, duplicate), with what
        its LLM calls cost, if any."""
        usage = usage or Usage()
        return cls(
            reflection_job_id=run.reflection_job_id,
            original_job_id=run.original_job_id,
            user_id=run.user_id,
            piece_name=run.piece_name,
            outcome=outcome,
            error_code=error_code,
            duration_ms=duration_ms,
            tokens_in=usage.tokens_in,
            tokens_out=usage.tokens_out,
            tokens_cached=usage.tokens_cached,
            llm_attempts=llm_attempts,
            model=model,
        )


class PieceEditRow(Record):
    """One `piece_edits` row: a piece written by a reflection or an approval."""

    user_id: str
    piece_name: str
    reflection_job_id: str
    original_job_id: str
    before_sha256: str
    after_sha256: str
    created_at: datetime | None = None  # None: the database's now()

    @classmethod
    def of(cls, owner: PieceOwner, *, before_sha256: str, after: str, at: datetime) -> Self:
        """The row of `owner`'s piece (a reflection's or a proposal's) written as `after`."""
        return cls(
            user_id=owner.user_id,
            piece_name=owner.piece_name or "",
            reflection_job_id=owner.reflection_job_id,
            original_job_id=owner.original_job_id,
            before_sha256=before_sha256,
            after_sha256=sha256(after),
            created_at=at,
        )


class _ProposalFields(Record):
    """A piece edit staged for review: whose, against which piece, and its state."""

    user_id: str
    piece_name: str
    reflection_job_id: str
    original_job_id: str
    snapshot_id: str | None = None
    summary: str = ""
    before_sha256: str  # the piece it was judged against
    after_sha256: str
    status: str = "pending"  # pending | approved | rejected


class ProposalRow(_ProposalFields):
    """A `piece_proposals` row as a review-mode run inserts it."""

    yaml: str  # the whole proposed piece


class ProposalSummary(_ProposalFields):
    """A `piece_proposals` row as listed (without its YAML)."""

    id: int
    detail: str | None = None  # why it was approved or rejected, or the last refusal
    created_at: datetime | None = None
    decided_at: datetime | None = None


class Proposal(ProposalSummary):
    """A `piece_proposals` row with the whole proposed piece."""

    yaml: str


EntryOrigin = Literal["worker", "external"]


class EntryWrite(Record):
    """One entry a change wrote, as its `memory_entries` row records it: `created` (an
    add: the record starts anew), `updated` (an update, or a revert bringing the entry
    back: its history is kept) or `removed`."""

    name: MemoryName
    action: Literal["created", "updated", "removed"]
    type: str | None = None  # the entry's type after the change (before it, for a removal)
    evidence: list[str] = Field(default_factory=list)  # the quotes behind the write
    reason: str | None = None  # a removal's: "merged into <target>", "reverted <snapshot>"


class EntryChanges(Record):
    """What one change does to the user's `memory_entries` rows, committed with its
    metrics row: the entries it wrote, the existing entries it confirmed, and the entries
    it found on disk and left alone (recorded `external` when they have no record)."""

    user_id: str
    job: str  # the reflection (or revert) job id the rows name
    at: datetime
    writes: list[EntryWrite] = Field(default_factory=list)
    confirmed: list[MemoryName] = Field(default_factory=list)
    found: dict[MemoryName, str | None] = Field(default_factory=dict)  # name -> type

    @classmethod
    def of(
        cls,
        change: Change,
        *,
        types: Mapping[str, str | None],
        evidence: Mapping[str, list[str]] | None = None,
        reasons: Mapping[str, str | None] | None = None,
        restores: bool = False,
        confirmed: Sequence[str] = (),
        found: Mapping[str, str | None] | None = None,
    ) -> Self:
        """The records of `change`'s memory entries: an entry absent before is `created`
        (`updated` when the change `restores` it, as a revert does), one absent after is
        `removed`, any other `updated`. `types`: each entry's type; `found`: the entries
        on disk the change leaves alone."""
        evidence, reasons = evidence or {}, reasons or {}
        writes = []
        for name, before in change.memory_before.items():
            action = _entry_action(before, change.memory_after.get(name), restores)
            removed = action == "removed"
            writes.append(
                EntryWrite(
                    name=name,
                    action=action,
                    type=types.get(name),
                    evidence=[] if removed else evidence.get(name, []),
                    reason=reasons.get(name) if removed else None,
                )
            )
        return cls(
            user_id=change.user_id,
            job=change.reflection_job_id,
            at=change.at,
            writes=writes,
            confirmed=list(confirmed),
            found={n: t for n, t in (found or {}).items() if n not in change.memory_before},
        )


def _entry_action(
    before: str | None, after: str | None, restores: bool
) -> Literal["created", "updated", "removed"]:
    if after is None:
        return "removed"
    return "created" if before is None and not restores else "updated"


class EntryEvidence(Record):
    """What an entry's latest write stood on: the job and the quotes it gave."""

    job_id: str = ""
    quotes: list[str] = Field(default_factory=list)


class EntryRecord(Record):
    """A `memory_entries` row as read back: one entry's history."""

    user_id: str
    name: str
    type: str | None = None
    origin: str = "worker"  # EntryOrigin; a value of a later release is shown as it is
    created_at: datetime
    created_by_job: str | None = None  # None: written outside the worker
    updated_at: datetime
    updated_by_job: str | None = None
    confirmed_at: datetime | None = None
    confirmations: int = 0
    evidence: EntryEvidence | None = None
    removed_at: datetime | None = None
    removed_by: str | None = None
    removed_reason: str | None = None

    @property
    def live(self) -> bool:
        """Whether the entry exists (it was not removed)."""
        return self.removed_at is None

    @property
    def last_changed(self) -> datetime:
        """When the entry was last written (created or updated)."""
        return max(self.created_at, self.updated_at)

    def age(self, now: datetime) -> timedelta:
        """How long ago the entry was created (or first recorded, when found on disk)."""
        return now - self.created_at

    def unconfirmed_for(self, now: datetime) -> timedelta:
        """How long the entry has gone without a write or a confirmation (how stale)."""
        return now - max(self.last_changed, self.confirmed_at or self.last_changed)


class FileChange(Record):
    """One file of the user's folder: its text before and after (None = absent)."""

    path: str  # relative to the user's home
    before: str | None = None
    after: str | None = None


class BatchFollower(Record):
    """A job reflected in another job's batch: its claim, held by the leader under
    `fence`, and its metrics row (outcome `coalesced`), committed with the leader's."""

    original_job_id: str
    fence: int = 0
    metrics: MetricsRow


class Journal(Record):
    """Everything one change writes, decided before the first write (`reflection.apply`)."""

    snapshot_id: str
    original_job_id: str = ""
    reflection_job_id: str = ""
    user_id: str
    fence: int = 0
    files: list[FileChange] = Field(default_factory=list)
    snapshot: dict[str, str] = Field(default_factory=dict)  # the snapshot's content files
    meta: SnapshotMeta
    # A run's row, committed with its claim; None for an operator's change.
    metrics: MetricsRow | None = None
    piece_edit: PieceEditRow | None = None
    proposal: ProposalRow | None = None  # a piece edit staged for review, not written
    # An operator's change (a revert) has no run to commit: its metrics row, recorded
    # before the journal is removed so that a crash cannot lose it.
    record: MetricsRow | None = None
    # Its memory_entries rows, committed with `metrics` (or `record`); None: none (also a
    # journal written before entry records existed).
    entries: EntryChanges | None = None
    # The other jobs of a coalesced batch (SPEC §12): each one's claim is marked done and
    # its row written in the same transaction as `metrics` (empty: a run of one job).
    followers: list[BatchFollower] = Field(default_factory=list)

    @field_validator("metrics", "record", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == {} else value  # how journals until 07ec03c said "no row"


# The decision kept on the claim.

# 1: the plain `LlmResult` JSON, raw (before SPEC §11: judged without its rules).
# 2: `StoredDecision`: masked, with the raw text's secret verdicts and the shown job.
STORED_DECISION_VERSION = 2
# The decision's fields that are not the model's free text: kept as they are.
_NOT_MASKED = frozenset({"op", "type", "job_id"})


def _masked_json(value: Any) -> Any:
    """`value` (JSON data) with credentials masked in every string the model wrote."""
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, list):
        return [_masked_json(v) for v in value]
    if isinstance(value, dict):
        return {k: v if k in _NOT_MASKED else _masked_json(v) for k, v in value.items()}
    return value


class StoredDecision(Record):
    """What `reflection_claims.decision` holds between the LLM's answer and the run's end,
    so that a retry judges exactly as the first delivery would have (SPEC §14).

    No credential is stored: the decision is masked (reasoning, names, descriptions,
    bodies, quotes, the piece edit, the raw reply), and the secret verdicts that judging
    needs are computed on the raw text first (`secrets`: per memory change, in the
    decision's order; `piece_secrets`: the piece edit's). `shown` is the masked job text
    the model was shown, per job id, that quotes are matched against. The claim drops it
    all when the run ends done or failed for good."""

    schema_version: int = 1
    result: LlmResult
    secrets: list[list[str]] = Field(default_factory=list)
    piece_secrets: list[str] = Field(default_factory=list)
    shown: dict[str, ShownJob] | None = None  # None: version 1, no §11 rules

    @classmethod
    def of(
        cls,
        result: LlmResult,
        shown: Mapping[str, ShownJob] | None,
        *,
        version: int = STORED_DECISION_VERSION,
    ) -> StoredDecision:
        """The stored form of the LLM's raw `result`."""
        decision = result.decision
        masked = _masked_json(result.model_dump(mode="json", include={"decision", "raw"}))
        # A mask may be longer than what it hides: the reasoning stays within its cap.
        masked["decision"]["reasoning"] = masked["decision"]["reasoning"][:MAX_REASONING_CHARS]
        return cls(
            schema_version=version,
            result=result.model_copy(
                update={
                    "decision": type(decision).model_validate(masked["decision"]),
                    "raw": masked["raw"],
                }
            ),
            secrets=[secret_kinds(ch) for ch in decision.memory_changes],
            piece_secrets=sorted(set(find_secrets(decision.piece_edit.yaml)))
            if decision.piece_edit is not None
            else [],
            shown=dict(shown) if shown is not None else None,
        )

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> StoredDecision:
        """A claim's decision as stored by this release or an earlier one: a version 1
        decision (the raw `LlmResult`) is masked and judged under its own rules."""
        if "schema_version" not in data:
            return cls.of(LlmResult.model_validate(data), None, version=1)
        return cls.model_validate(data)

    @property
    def grounds(self) -> Grounds:
        """What judging needs besides memory (`reflection.changes.judge_memory_changes`)."""
        return Grounds(secrets=self.secrets, shown=self.shown, piece_secrets=self.piece_secrets)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# What the builders are given.


def sha256(text: str) -> str:
    """The hex SHA-256 of `text` (UTF-8): how piece edits and proposals name a piece."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class PieceOwner(Protocol):
    """Whose piece edit it is: a reflection's meta or a proposal."""

    @property
    def user_id(self) -> str: ...
    @property
    def piece_name(self) -> str | None: ...
    @property
    def reflection_job_id(self) -> str: ...
    @property
    def original_job_id(self) -> str: ...


class RunIdentity(Protocol):
    """Who a run is: its ids, as its log lines and metrics rows name them."""

    @property
    def reflection_job_id(self) -> str: ...
    @property
    def original_job_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def piece_name(self) -> str: ...


@dataclass(frozen=True)
class Change:
    """What one change (a reflection, a revert, an approval) writes, as its snapshot's meta
    summarises it: whose it is, and each memory entry's text before and after (None =
    absent; the accepted memory changes)."""

    snapshot_id: str
    at: datetime
    user_id: str
    piece_name: str | None
    original_job_id: str = ""
    reflection_job_id: str = ""
    memory_before: Mapping[str, str | None] = field(default_factory=dict)
    memory_after: Mapping[str, str | None] = field(default_factory=dict)
    piece_edited: bool = False
    piece_from_user: bool = False  # the piece before the change was the user's copy


def memory_files(
    before: Mapping[str, str | None], after: Mapping[str, str | None]
) -> dict[str, MemoryFileState]:
    """Which entries' files existed before and after, for meta.json."""
    return {
        n: MemoryFileState(before=before[n] is not None, after=after[n] is not None) for n in before
    }
