"""Run scenarios through the worker's real stages: load (from a scratch user folder),
prompt builder, LLM client, and the applier's planner in dry run (nothing is written
outside the scratch folder; no database, no lock)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from reflection.errors import LlmAuthError, ReflectionError
from reflection.evals.checks import Check, Judged, failed_answer, score
from reflection.evals.fixture import FINISHED_AT, last_piece_edit_at, materialize, request_of
from reflection.evals.scenario import Scenario
from reflection.models import LlmDecision, LlmResult, ReflectionInputs, Usage
from reflection.paths import UserPaths
from reflection.pipeline import Llm, apply_limits, prompt_stage, stored_decision
from reflection.plan import State, plan
from reflection.prompt import Prompt
from reflection.records import ReflectionMeta
from reflection.settings import Settings


@dataclass(frozen=True)
class RunResult:
    """One scenario run: its checks and what it cost."""

    scenario_id: str
    category: str
    repeat: int
    checks: tuple[Check, ...]
    outcome: str
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms: int = 0
    llm_attempts: int = 0
    prompt_chars: int = 0
    decision: LlmDecision | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


@dataclass
class Prepared:
    scenario: Scenario
    settings: Settings
    inputs: ReflectionInputs
    paths: UserPaths
    prompt: Prompt = field(repr=False)


def prepare(scenario: Scenario, settings: Settings, workdir: Path) -> Prepared:
    """The scenario's settings, inputs and prompt, built in `workdir`."""
    s = settings.model_copy(update={**scenario.limits.overrides(), "user_folder_root": workdir})
    inputs, paths = materialize(scenario, s)
    return Prepared(scenario, s, inputs, paths, prompt_stage(s, inputs))


def judge(p: Prepared, result: LlmResult) -> tuple[list[Check], str]:
    """What the applier would do with `result` (a dry-run plan), scored, and the run's
    outcome (applied, abstained or rejected)."""
    s = p.settings
    request = request_of(p.scenario)
    stored = stored_decision(result, request, p.prompt)
    journal = plan(
        paths=p.paths,
        request=request,
        reflection_job_id=f"eval-{p.scenario.id}",
        fence=0,
        llm=stored.result,
        grounds=stored.grounds,
        state=State(
            memory={e.name: e for e in p.inputs.memory},
            unreadable=frozenset(Path(m.path).stem for m in p.inputs.malformed),
            piece=p.inputs.piece,
            last_piece_edit_at=last_piece_edit_at(p.scenario),
        ),
        limits=apply_limits(s),
        now=FINISHED_AT,
        store_llm_raw=False,
        piece_edit_mode="auto",
    )
    meta = journal.meta
    assert isinstance(meta, ReflectionMeta)
    judged = Judged(
        decision=result.decision,
        verdicts=tuple(meta.verdicts),
        piece_before=p.inputs.piece.yaml,
        memory_before=frozenset(e.name for e in p.inputs.memory),
    )
    return score(p.scenario.expect, judged), meta.outcome.value


def judge_answer(scenario: Scenario, settings: Settings, answer: LlmDecision) -> list[Check]:
    """Score a given answer without any LLM (the suite's own tests use this)."""
    with tempfile.TemporaryDirectory(prefix="reflection-eval-") as tmp:
        p = prepare(scenario, settings, Path(tmp))
        result = LlmResult(decision=answer, raw="", model="reference", usage=Usage())
        return judge(p, result)[0]


def run_one(scenario: Scenario, settings: Settings, llm: Llm, repeat: int) -> RunResult:
    """Run one scenario once. An LLM that refuses the key aborts (`LlmAuthError`); any
    other failure to get a decision fails this run's `answer` check."""

    def failed(e: ReflectionError, latency_ms: int = 0, prompt_chars: int = 0) -> RunResult:
        return RunResult(
            scenario.id,
            scenario.category,
            repeat,
            tuple(failed_answer(f"{e.code}: {e}")),
            e.code,
            latency_ms=latency_ms,
            prompt_chars=prompt_chars,
            llm_attempts=e.attempts,
        )

    with tempfile.TemporaryDirectory(prefix="reflection-eval-") as tmp:
        try:
            p = prepare(scenario, settings, Path(tmp))
        except ReflectionError as e:
            return failed(e)
        chars = len(p.prompt.system) + len(p.prompt.user)
        t0 = time.monotonic()
        try:
            result = llm.decide(
                system=p.prompt.system, user=p.prompt.user, user_id=scenario.user_id
            )
        except LlmAuthError:
            raise
        except ReflectionError as e:
            return failed(e, latency_ms=int((time.monotonic() - t0) * 1000), prompt_chars=chars)
        latency = int((time.monotonic() - t0) * 1000)
        checks, outcome = judge(p, result)
        return RunResult(
            scenario.id,
            scenario.category,
            repeat,
            tuple(checks),
            outcome,
            tokens_in=result.usage.tokens_in,
            tokens_out=result.usage.tokens_out,
            latency_ms=latency,
            llm_attempts=result.attempts,
            prompt_chars=chars,
            decision=result.decision,
        )


def run_suite(
    scenarios: Sequence[Scenario],
    settings: Settings,
    llm: Llm,
    *,
    repeat: int = 1,
    jobs: int = 1,
    progress: Callable[[RunResult], None] = lambda r: None,
) -> list[RunResult]:
    """Every scenario `repeat` times, `jobs` at once; results in suite order."""
    work = [(s, r) for s in scenarios for r in range(repeat)]

    def one(item: tuple[Scenario, int]) -> RunResult:
        result = run_one(item[0], settings, llm, item[1])
        progress(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, work))
