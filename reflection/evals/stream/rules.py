"""What the stream measures, pluggable: the judging rules of issue 21 and the consolidation
pass, each either the worker's own (`worker`) or, while that code is not on this branch,
a stand-in built from the pure parts that exist (`stand-in`), or off.

- Evidence rules. `worker`: the worker's judge with `Limits.evidence_rules` on (off for the
  rules-off run). `stand-in`: the model's answer is filtered before the worker judges it,
  dropping each change the rules would refuse (`reflection.evidence.evidence_code`, and
  `reflection.similarity.nearest` against the entries on disk at the threshold).
- Consolidation. `worker`: the consolidation pass's in-process entry point. `stand-in`: a
  pass run as a reflection of a synthetic job, whose answer is the model's consolidation
  (merges and stale removals) judged and written by the real stages.

The report names which one ran, so a stand-in is never mistaken for the worker's code.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, Protocol

from reflection.evals.stream.model import SimModel
from reflection.evidence import ShownJob, evidence_code
from reflection.memory import load_memory
from reflection.models import LlmResult, MemoryChange
from reflection.paths import UserPaths
from reflection.pipeline import Llm
from reflection.settings import Settings
from reflection.similarity import DEFAULT_THRESHOLD, entry_text, nearest

Impl = Literal["worker", "stand-in", "off"]
_JOB_ID: Final = re.compile(r"^job id: (\S+)$", re.MULTILINE)


def setting(s: Settings, name: str, default: Any) -> Any:
    """A setting of issue 21 (stale days, consolidation bounds), or its SPEC default on
    a branch whose settings do not have it yet."""
    return getattr(s, name, default)


def worker_evidence_rules() -> bool:
    """Whether the worker's judge has the evidence rules (`Limits.evidence_rules`)."""
    from reflection.changes import Limits

    return "evidence_rules" in getattr(Limits, "__dataclass_fields__", {})


def worker_consolidation() -> Callable[..., Any] | None:
    """The consolidation pass's in-process entry point, when this branch has it."""
    try:
        from reflection import consolidate as mod  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return None
    fn = getattr(mod, "run_consolidation", None)
    return fn if callable(fn) else None


class Consolidator(Protocol):
    def __call__(self, user_id: str, reason: str, now: datetime) -> None: ...


@dataclass
class StandInJudge:
    """The model, with what the evidence rules would refuse taken out of its answers."""

    model: SimModel
    settings: Settings
    refused: Counter[str] = field(default_factory=Counter)

    def decide(
        self, *, system: str, user: str, user_id: str, deadline: float | None = None
    ) -> LlmResult:
        result = self.model.decide(system=system, user=user, user_id=user_id, deadline=deadline)
        m = _JOB_ID.search(user)
        job = self.model.jobs.get(m.group(1)) if m else None
        if job is None or m is None:
            return result
        shown = ShownJob.from_prompt(request=job.task, result=job.result, log_text=job.log)
        paths = UserPaths(self.settings.user_folder_root, user_id)
        memory = {e.name: entry_text(e.description, e.body) for e in load_memory(paths)[0]}
        threshold = setting(self.settings, "near_duplicate_threshold", DEFAULT_THRESHOLD)
        kept = []
        for ch in result.decision.memory_changes:
            quotes = self.model.evidence.get((m.group(1), ch.name), [])
            code = _refusal(ch, quotes, shown, memory, threshold)
            if code is None:
                kept.append(ch)
            else:
                self.refused[code] += 1
        decision = result.decision.model_copy(update={"memory_changes": kept})
        return result.model_copy(update={"decision": decision})


def _refusal(
    ch: MemoryChange,
    quotes: list[str],
    shown: ShownJob,
    memory: Mapping[str, str],
    threshold: float,
) -> str | None:
    """The code the rules would refuse `ch` with: evidence and trust, then near-duplicates."""
    code, _ = evidence_code(ch.op, ch.type, quotes, shown)
    if code is not None:
        return code
    if ch.op == "add":
        near = nearest(entry_text(ch.description or "", ch.body or ""), memory)
        if near is not None and near[1] >= threshold:
            return "near_duplicate"
    return None


@dataclass(frozen=True)
class Rules:
    """One run's rules: how changes are judged and whether (and how) memory is
    consolidated."""

    evidence: Impl
    consolidation: Impl

    @property
    def label(self) -> str:
        if self.evidence == "off" and self.consolidation == "off":
            return "off"
        return f"evidence rules: {self.evidence}; consolidation: {self.consolidation}"


def rules_for(on: bool) -> Rules:
    """The rules of the `on` (or off) run: the worker's wherever this branch has them."""
    if not on:
        return Rules("off", "off")
    return Rules(
        "worker" if worker_evidence_rules() else "stand-in",
        "worker" if worker_consolidation() is not None else "stand-in",
    )


def judge_settings(s: Settings, rules: Rules) -> Settings:
    """The settings a run judges with: the worker's evidence rules on or off."""
    if "evidence_rules" in Settings.model_fields:
        return s.model_copy(update={"evidence_rules": rules.evidence == "worker"})
    return s


def llm_for(rules: Rules, model: SimModel, settings: Settings) -> Llm:
    return StandInJudge(model, settings) if rules.evidence == "stand-in" else model
