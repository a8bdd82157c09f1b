"""An evaluation scenario, as data: a finished job, what the worker would read for it, and
deterministic expectations on the LLM's decision (see `evals/README.md`).

Strict on purpose (unknown keys are errors): a typo in a scenario must not silently turn
an expectation off.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reflection.models import JobOutcome, LlmDecision, MemoryType
from reflection.safeyaml import UnsafeYamlError, load_strict

SCENARIO_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScenarioJob(Strict):
    """The `jobs` row of the finished job."""

    piece: str
    outcome: JobOutcome
    task: str
    result: str | None = None
    error: str | None = None
    duration_minutes: int = Field(default=10, ge=0)


class Noise(Strict):
    """Deterministic filler around the scenario's activity text, to make a long log."""

    bytes: int = Field(ge=1, le=50_000_000)
    where: Literal["before", "after"] = "before"
    seed: int = 0


class Entry(Strict):
    """An existing memory entry (written as `<uid>/memory/<name>.md`)."""

    name: str
    description: str
    type: MemoryType
    body: str
    protected: bool = False
    # The entry's record (`memory_entries`), as a consolidation pass sees it: created
    # this many days before the pass, last written or confirmed `unconfirmed_days` ago
    # (default: when created), confirmed so many times.
    age_days: float = Field(default=30, ge=0)
    unconfirmed_days: float | None = Field(default=None, ge=0)
    confirmations: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _dates(self) -> Entry:
        if self.unconfirmed_days is not None and self.unconfirmed_days > self.age_days:
            raise ValueError("unconfirmed_days cannot exceed age_days")
        return self


class Limits(Strict):
    """Setting overrides for this scenario (the defaults are the worker's settings)."""

    max_memory_entries: int | None = Field(default=None, ge=1)
    max_changes_per_run: int | None = Field(default=None, ge=1)
    max_entry_body_bytes: int | None = Field(default=None, ge=64)
    activity_log_max_bytes: int | None = Field(default=None, ge=256)

    def overrides(self) -> dict[str, int]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ChangeMatcher(Strict):
    """Matches a proposed memory change. Every given field must hold; `mentions` are
    case-insensitive substrings that must all appear in the change's text (its name,
    description and body), `mentions_any` at least one of them."""

    op: Literal["add", "update", "remove"] | None = None
    name: str | None = None
    names: list[str] | None = None
    type: MemoryType | None = None
    mentions: list[str] = Field(default_factory=list)
    mentions_any: list[str] = Field(default_factory=list)
    merge_target: str | None = None

    def describe(self) -> str:
        parts: list[str] = [self.op or "change"]
        if self.name:
            parts.append(f"of {self.name!r}")
        if self.names:
            parts.append(f"of one of {self.names}")
        if self.type:
            parts.append(f"of type {self.type}")
        if self.mentions:
            parts.append(f"mentioning {' and '.join(map(repr, self.mentions))}")
        if self.mentions_any:
            parts.append(f"mentioning {' or '.join(map(repr, self.mentions_any))}")
        if self.merge_target:
            parts.append(f"merged into {self.merge_target!r}")
        return " ".join(parts)


class PieceTouch(Strict):
    """A field of one movement (or of the piece itself when `movement` is null) that the
    edit must change; `mentions` must appear in its new value."""

    movement: str | None = None
    field: str
    mentions: list[str] = Field(default_factory=list)

    def describe(self) -> str:
        where = f"movement {self.movement!r}" if self.movement else "the piece"
        return f"{where} field {self.field!r}"


class MemoryAfter(Strict):
    """Names that must (not) exist once the accepted changes are applied."""

    present: list[str] = Field(default_factory=list)
    absent: list[str] = Field(default_factory=list)


class Expect(Strict):
    """What a good decision does for this scenario. Every part is one check."""

    abstain: bool | None = None
    changes: list[ChangeMatcher] = Field(default_factory=list)
    forbid: list[ChangeMatcher] = Field(default_factory=list)
    max_changes: int | None = Field(default=None, ge=0)
    secrets: list[str] = Field(default_factory=list)
    piece_edit: Literal["expected", "forbidden", "allowed"] = "forbidden"
    piece_touches: list[PieceTouch] = Field(default_factory=list)
    memory_after: MemoryAfter | None = None
    allowed_codes: list[str] = Field(default_factory=list)
    # Existing entries the decision must list in `confirmed` (the job relied on them).
    confirmed: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Expect:
        if self.abstain and (self.changes or self.piece_edit == "expected"):
            raise ValueError("abstain: true contradicts expected changes or piece edit")
        if self.piece_touches and self.piece_edit != "expected":
            raise ValueError("piece_touches needs piece_edit: expected")
        return self


CheckKind = Literal[
    "answer",
    "abstain",
    "change",
    "forbid",
    "max_changes",
    "no_secret",
    "accepted",
    "piece_edit",
    "piece_touch",
    "memory_after",
    "confirmed",
]


class Counterexample(Strict):
    """A bad answer and the checks it must fail (exactly those): tests the scorer."""

    why: str
    answer: LlmDecision
    fails: list[CheckKind]


# A consolidation scenario is a pass over memory, not a job: it gets this stand-in job
# (its user folder holds no activity log, and no prompt shows the job).
PASS_JOB = ScenarioJob(piece="default", outcome="succeeded", task="(consolidation pass)")


class Scenario(Strict):
    id: str
    category: str
    summary: str
    # `reflection`: the LLM reflects on a job; `consolidation`: it answers a consolidation
    # pass over `memory` (with each entry's record), judged by the pass's rules.
    kind: Literal["reflection", "consolidation"] = "reflection"
    job: ScenarioJob = PASS_JOB
    activity: str = ""
    noise: Noise | None = None
    memory: list[Entry] = Field(default_factory=list)
    memory_files: dict[str, str] = Field(default_factory=dict)
    piece_yaml: str | None = None
    piece_edited_hours_ago: float | None = Field(default=None, ge=0)
    limits: Limits = Field(default_factory=Limits)
    expect: Expect
    reference: LlmDecision
    counterexamples: list[Counterexample] = Field(default_factory=list)

    @model_validator(mode="after")
    def _kind(self) -> Scenario:
        given = self.model_fields_set
        if self.kind == "reflection" and "job" not in given:
            raise ValueError("a reflection scenario needs its job")
        job_only = {"job", "activity", "noise", "piece_yaml", "piece_edited_hours_ago"}
        if self.kind == "consolidation" and (given & job_only or not self.memory):
            raise ValueError(
                "a consolidation scenario has memory and no job, activity or piece: "
                + ", ".join(sorted(given & job_only))
            )
        return self

    @property
    def script_match(self) -> str:
        """A text only this scenario's user prompt holds (what the scripted LLM matches):
        its job id line, or a consolidation's first entry as the pass shows it."""
        if self.kind == "reflection":
            return f"job id: {self.job_id}\n"
        first = min(self.memory, key=lambda e: e.name)
        return f"<<<MEMORY_ENTRY name={first.name} type={first.type} age_days="

    @property
    def job_id(self) -> str:
        return f"eval-{self.id}"

    @property
    def user_id(self) -> str:
        return f"eval-user-{self.id}"


class SuiteError(ValueError):
    """A scenario file that cannot be used; the message names the file."""


def load_scenario(path: Path) -> Scenario:
    try:
        data: Any = load_strict(path.read_text(encoding="utf-8"), max_depth=32)
    except (OSError, UnicodeDecodeError, UnsafeYamlError) as e:
        raise SuiteError(f"{path}: {e}") from e
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: a scenario is a YAML mapping")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as e:
        raise SuiteError(f"{path}: {e}") from e
    if scenario.id != path.stem or not SCENARIO_ID.match(scenario.id):
        raise SuiteError(f"{path}: id {scenario.id!r} must be a slug equal to the file stem")
    return scenario


def load_suite(folder: Path, only: str | None = None) -> list[Scenario]:
    """The scenarios of `folder` (`*.yaml`, sorted); `only` is a glob on id or category."""
    if not folder.is_dir():
        raise SuiteError(f"{folder}: no such scenario folder")
    scenarios = [load_scenario(p) for p in sorted(folder.glob("*.yaml"))]
    if only:
        scenarios = [
            s
            for s in scenarios
            if fnmatch.fnmatchcase(s.id, only) or fnmatch.fnmatchcase(s.category, only)
        ]
    if not scenarios:
        raise SuiteError(f"{folder}: no scenario matches {only!r}" if only else f"{folder}: empty")
    return scenarios
