"""The pipeline's data, as pydantic models: what flows from one stage to the next."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reflection.clamp import clamp_count

JobOutcome = Literal["succeeded", "failed", "aborted"]
MemoryType = Literal["user", "feedback", "project", "reference"]
OutputMode = Literal["json_schema", "json_object", "text"]  # how the LLM was asked to answer


class Outcome(StrEnum):
    """How a run ended (the task's return value), as `reflection_metrics.outcome`, the
    claim and `meta.json` record it."""

    APPLIED = "applied"  # ≥1 change accepted; also an operator's approval
    ABSTAINED = "abstained"  # nothing proposed
    REJECTED = "rejected"  # proposed, none accepted
    FAILED = "failed"  # an error stopped it
    DUPLICATE = "duplicate"  # already reflected
    REVERTED = "reverted"  # an operator's revert of a snapshot
    COALESCED = "coalesced"  # reflected in another job's batch (SPEC §12)


class Code(StrEnum):
    """Why a proposed change was accepted or rejected (SPEC section 5)."""

    OK = "ok"
    INVALID_NAME = "invalid_name"
    # A description (or a piece's text) holding a control, bidi or tag character (issue 22).
    INVALID_TEXT = "invalid_text"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    BODY_TOO_LARGE = "body_too_large"
    DESCRIPTION_TOO_LARGE = "description_too_large"
    EXISTS = "exists"
    NOT_FOUND = "not_found"
    DUPLICATE_IN_BATCH = "duplicate_in_batch"
    MERGE_TARGET_MISSING = "merge_target_missing"
    MEMORY_FULL = "memory_full"
    TOO_MANY_CHANGES = "too_many_changes"
    SECRET_DETECTED = "secret_detected"  # noqa: S105 - a code, not a secret
    # The text gains a download-and-execute, reverse-shell or exfiltration directive.
    DANGEROUS_DIRECTIVE = "dangerous_directive"
    PROTECTED = "protected"
    PIECE_COOLDOWN = "piece_cooldown"
    PIECE_INVALID = "piece_invalid"
    PIECE_ESCALATION = "piece_escalation"
    PIECE_UNCHANGED = "piece_unchanged"
    PIECE_STALE = "piece_stale"  # approval only: the piece changed since the proposal
    # SPEC §11: where a change comes from, and whether memory holds it already.
    UNSUPPORTED = "unsupported"  # no evidence, or a quote not in the job data shown
    UNTRUSTED_SOURCE = "untrusted_source"  # a user/feedback entry quoting no trusted line
    NEAR_DUPLICATE = "near_duplicate"  # an add that restates an existing entry
    # Consolidation only (SPEC §11, §14): an add or a piece edit in a consolidation
    # answer, which may only update and remove; a remove that is neither a merge nor of
    # a stale entry with a reason; past the pass's removal cap, or a pass that would drop
    # memory below half its entries (then every change of the pass).
    OP_NOT_ALLOWED = "op_not_allowed"
    NOT_STALE = "not_stale"
    TOO_MANY_REMOVALS = "too_many_removals"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReflectRequest(Frozen):
    """The `reflect` task's kwargs, validated (see `reflection.request.parse_request`)."""

    original_job_id: str
    user_id: str
    piece_name: str
    outcome: JobOutcome


class Job(Frozen):
    """A finished job as the platform stored it in its `jobs` table."""

    id: str
    user_id: str
    piece_name: str
    status: str
    task: str
    result: str | None = None
    error: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None


class MemoryEntry(Frozen):
    """One `<uid>/memory/<name>.md` file, parsed."""

    name: str
    description: str
    type: MemoryType
    body: str
    protected: bool = False


class Malformed(Frozen):
    """A file that was skipped because it could not be parsed; reported, never deleted."""

    path: str
    reason: str


class Piece(Frozen):
    """The piece YAML a job ran: the user's copy if present, else the built-in."""

    name: str
    yaml: str
    user_copy: bool
    path: Path


class ActivityLog(Frozen):
    """The activity log as it goes into the prompt: head and tail, cut in the middle."""

    text: str
    total_bytes: int
    omitted_bytes: int
    found: bool = True


class ReflectionInputs(Frozen):
    """Everything the prompt and the applier need, loaded once."""

    request: ReflectRequest
    job: Job
    activity: ActivityLog
    memory: tuple[MemoryEntry, ...]
    malformed: tuple[Malformed, ...] = ()
    piece: Piece


class MemoryChange(BaseModel):
    """One proposed memory change. Loose on purpose: the applier, not the schema,
    rejects a bad name or type with a precise code."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["add", "update", "remove"]
    name: str
    description: str | None = None
    type: str | None = Field(default=None, json_schema_extra={"enum": list(get_args(MemoryType))})
    body: str | None = None
    merge_target: str | None = None
    # In a batch of coalesced jobs (SPEC §12), the job this change comes from (its
    # evidence quotes that job); None for a run of one job.
    job_id: str | None = None
    # add/update: 1-3 verbatim quotes (each at most 300 characters) of the job data shown
    # (SPEC §11). The schema tells the model the bounds but does not enforce them: a
    # change without evidence, or with too many or too long quotes, is judged
    # `unsupported` (`reflection.evidence.evidence_code`), never a failed decision.
    evidence: list[str] = Field(
        default_factory=list,
        json_schema_extra={"maxItems": 3, "items": {"type": "string", "maxLength": 300}},
    )
    # A remove's reason when it is not a merge (a consolidation retiring a stale entry).
    reason: str | None = None


class PieceEdit(BaseModel):
    """A proposed new version of the whole piece."""

    model_config = ConfigDict(extra="forbid")

    yaml: str
    summary: str


# Denial-of-service bounds of a decision, in its schema (SPEC §14): a longer answer does
# not validate (`llm_invalid_output`), so judging, the journal and the claim stay small.
# Up to the cap, changes past REFLECTION_MAX_CHANGES_PER_RUN are judged `too_many_changes`.
MAX_MEMORY_CHANGES = 64
MAX_REASONING_CHARS = 16 * 1024


class LlmDecision(BaseModel):
    """The JSON object the LLM must answer (SPEC section 4)."""

    model_config = ConfigDict(extra="forbid")

    reasoning: str = Field(max_length=MAX_REASONING_CHARS)
    memory_changes: list[MemoryChange] = Field(default_factory=list, max_length=MAX_MEMORY_CHANGES)
    piece_edit: PieceEdit | None = None
    # Existing entries this job relied on or showed to be still true (SPEC §11): at most
    # five are counted, unknown names ignored (`reflection.evidence.confirmed_names`).
    confirmed: list[str] = Field(default_factory=list)

    @property
    def abstained(self) -> bool:
        return not self.memory_changes and self.piece_edit is None


class Usage(Frozen):
    """Token counts the endpoint reported (0 when it reported none)."""

    tokens_in: int = 0
    tokens_out: int = 0
    # Of tokens_in, those the provider served from its prompt cache
    # (`usage.prompt_tokens_details.cached_tokens`; SPEC §12).
    tokens_cached: int = 0

    # The endpoint's counts go into int32 columns: clamped, never refused (issue 22).
    _clamped = field_validator("tokens_in", "tokens_out", "tokens_cached", mode="before")(
        clamp_count
    )


class LlmResult(Frozen):
    """A validated decision and how it was obtained."""

    decision: LlmDecision
    raw: str
    model: str
    usage: Usage
    attempts: int = 1
    mode: OutputMode = "json_schema"
    repaired: bool = False


class Verdict(BaseModel):
    """One proposed change judged: accepted (code `ok`) or rejected with a code. The LLM's
    whole answer is its decision (`LlmDecision`); each of its changes gets a verdict.
    Stored in meta.json, so read back with unknown fields ignored (SPEC §14)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["memory", "piece"]
    name: str
    op: str
    accepted: bool
    code: Code
    detail: str = ""
