"""Consolidation scenarios (`kind: consolidation`): the pass's prompt over the scenario's
memory and records, and the pass's judge (`reflection.consolidation.judge_pass`) on the
answer, at the scenario's instant. Nothing is written."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from reflection.consolidate import pass_limits
from reflection.consolidation import judge_pass
from reflection.consolidation_prompt import build_system, consolidation_prompt
from reflection.evals.fixture import FINISHED_AT
from reflection.evals.scenario import Scenario
from reflection.models import LlmResult, MemoryEntry, Outcome, Verdict
from reflection.prompt import Prompt
from reflection.records import EntryRecord
from reflection.settings import Settings


def records_of(scenario: Scenario) -> dict[str, EntryRecord]:
    """Each entry's record, dated back from the scenario's instant."""
    out = {}
    for e in scenario.memory:
        created = FINISHED_AT - timedelta(days=e.age_days)
        unconfirmed = e.age_days if e.unconfirmed_days is None else e.unconfirmed_days
        seen = FINISHED_AT - timedelta(days=unconfirmed)
        out[e.name] = EntryRecord(
            user_id=scenario.user_id,
            name=e.name,
            type=e.type,
            created_at=created,
            created_by_job="eval",
            updated_at=created if e.confirmations else seen,
            updated_by_job="eval",
            confirmed_at=seen if e.confirmations else None,
            confirmations=e.confirmations,
        )
    return out


def prompt(scenario: Scenario, s: Settings, memory: Sequence[MemoryEntry]) -> Prompt:
    limits = pass_limits(s)
    return consolidation_prompt(
        memory,
        records_of(scenario),
        FINISHED_AT,
        system=build_system(
            max_changes=limits.max_changes,
            max_removals=limits.max_removals,
            stale_days=limits.stale_days,
            max_body_bytes=limits.max_body_bytes,
        ),
        context_limit_tokens=s.llm_context_limit_tokens,
        max_output_tokens=s.llm_max_output_tokens,
    )


def judge(
    scenario: Scenario, s: Settings, memory: Sequence[MemoryEntry], result: LlmResult
) -> tuple[tuple[Verdict, ...], str]:
    """The pass's verdicts on `result` and its outcome (applied, abstained, rejected)."""
    judgement = judge_pass(
        result.decision.memory_changes,
        memory={e.name: e for e in memory},
        records=records_of(scenario),
        limits=pass_limits(s),
        now=FINISHED_AT,
        piece_edit=result.decision.piece_edit,
    )
    verdicts = judgement.verdicts
    if not verdicts:
        return verdicts, Outcome.ABSTAINED.value
    accepted = any(v.accepted for v in verdicts)
    return verdicts, (Outcome.APPLIED if accepted else Outcome.REJECTED).value
