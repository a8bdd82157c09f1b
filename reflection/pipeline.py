"""Run one reflection: request → claim → inputs → prompt → LLM → (lock: plan → journal →
files → snapshot → rows) → outcome. The one module that orders the stages and owns the
lock scope; it knows nothing of Celery.

Permanent errors end the run `failed` with their code and a metrics row. Retryable ones
(`RetryableError`) propagate, so the task adapter can retry them; the claim stays ours
and the LLM's decision is kept on it, so a retry never calls the LLM twice.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import redis
from pydantic import ValidationError
from sqlalchemy import Engine

from reflection import batch, metrics, storage
from reflection.apply import (
    finish_pending_journals,
    has_pending_journal,
    roll_forward,
    write_journal,
)
from reflection.batch_prompt import BatchPrompt, batch_prompt, log_share
from reflection.breaker import llm_guard
from reflection.changes import Limits
from reflection.coalesce import BATCH_POLL_SECONDS, Member, outside, without_jobs
from reflection.constants import LLM_BREAKER_KEY
from reflection.deadline import Deadline
from reflection.errors import (
    BatchWaitError,
    ClaimBusyError,
    InfrastructureError,
    JournalPendingError,
    LlmInvalidOutputError,
    LockExpiredError,
    LockLostError,
    PermanentError,
    PoisonError,
    ReflectionError,
    RetryableError,
    TimeLimitError,
)
from reflection.evidence import ShownJob
from reflection.fairness import MAX_DELAY_SECONDS, Slot, user_slot
from reflection.faults import fault_point
from reflection.inputs import load_inputs, load_piece
from reflection.lock import UserLock, user_lock
from reflection.memory import load_memory
from reflection.models import (
    LlmResult,
    Outcome,
    ReflectionInputs,
    ReflectRequest,
    Usage,
    Verdict,
)
from reflection.paths import UserPaths
from reflection.plan import State, plan
from reflection.prompt import Prompt, fit_prompt
from reflection.records import Journal, MetricsRow, ReflectionMeta, StoredDecision
from reflection.request import parse_request, safe_id
from reflection.settings import Settings
from reflection.turns import Turns

log = logging.getLogger("reflection")


class Llm(Protocol):
    """What the pipeline needs of an LLM client (`reflection.llm.LlmClient`)."""

    def decide(
        self, *, system: str, user: str, user_id: str, deadline: float | None = None
    ) -> LlmResult: ...


@dataclass
class Deps:
    """The clients a run uses, built once per worker process (after fork)."""

    settings: Settings
    engine: Engine
    redis: redis.Redis
    llm: Llm
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    turns: Turns = field(default_factory=lambda: Turns(0))
    # SPEC §11's judging rules (evidence, trust, near-duplicates): always on in the
    # worker; only the stream simulation's baseline run turns them off.
    evidence_rules: bool = True


@dataclass(frozen=True)
class RunReport:
    """What one run did; the task returns `outcome`, the CLI and demo print the rest."""

    outcome: Outcome
    reflection_job_id: str
    original_job_id: str
    user_id: str
    error_code: str | None = None
    detail: str = ""
    verdicts: tuple[Verdict, ...] = ()
    reasoning: str = ""
    snapshot_dir: Path | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    duration_ms: int = 0


class _Run:
    """One run's identity and clock, for log lines and metrics rows."""

    kind = metrics.KIND_REFLECTION  # as the run is counted (a consolidation pass's differs)

    def __init__(self, reflection_job_id: str, kwargs: Mapping[str, Any]) -> None:
        self.reflection_job_id = safe_id(reflection_job_id)
        self.original_job_id = safe_id(kwargs.get("original_job_id", "?"))
        self.user_id = safe_id(kwargs.get("user_id", "?"))
        self.piece_name = safe_id(kwargs.get("piece_name", "?"))
        self.t0 = time.monotonic()
        self.stages: dict[str, int] = {}  # milliseconds, for the run's one INFO line
        self.usage = Usage()  # what the LLM cost, for a failure's metrics row
        self.llm_attempts = 0
        self.model: str | None = None
        # Checked between the stages and before each write (reflection.deadline).
        self.deadline = Deadline(at=math.inf, seconds=math.inf)
        self.slot = Slot()

    def breaker_seen(self, fresh_for: float) -> bool | None:
        """Whether the LLM breaker was open when the run took its slot, if that was less
        than `fresh_for` (the breaker's probe interval) ago; else None (ask again)."""
        if self.slot.peeked is None or time.monotonic() - self.slot.at > fresh_for:
            return None
        return self.slot.peeked

    def spent(self, usage: Usage | None, attempts: int, model: str | None = None) -> None:
        """Note the LLM's cost so far: a run that fails after the LLM answered (or while
        asking it) still records the tokens it paid for."""
        if usage is not None:
            self.usage, self.llm_attempts, self.model = usage, attempts, model

    def ms(self) -> int:
        return int((time.monotonic() - self.t0) * 1000)

    def log(self, level: int, stage: str, msg: str, *args: object, **fields: object) -> None:
        """A line about this run; its ids and `fields` are also separate JSON fields."""
        ids = {
            "job_id": self.original_job_id,
            "reflection_job_id": self.reflection_job_id,
            "user_id": self.user_id,
            "stage": stage,
        }
        log.log(
            level,
            "%s job=%s reflection=%s user=%s " + msg,
            stage,
            self.original_job_id,
            self.reflection_job_id,
            self.user_id,
            *args,
            extra=ids | fields,
        )

    def report(self, outcome: Outcome, **kw: Any) -> RunReport:
        """The report of the run, which ended: every way a run ends builds it here, so
        this is also where the run is counted (`reflection.metrics`)."""
        report = RunReport(
            outcome=outcome,
            reflection_job_id=self.reflection_job_id,
            original_job_id=self.original_job_id,
            user_id=self.user_id,
            duration_ms=self.ms(),
            **kw,
        )
        llm_ms = self.stages.get("llm")
        metrics.record_run(
            kind=self.kind,
            outcome=outcome.value,
            error_code=report.error_code,
            seconds=time.monotonic() - self.t0,
            usage=Usage(
                tokens_in=report.tokens_in,
                tokens_out=report.tokens_out,
                tokens_cached=self.usage.tokens_cached,
            ),
            llm_seconds=None if llm_ms is None else llm_ms / 1000,
            verdicts=report.verdicts,
        )
        return report

    def metrics_row(self, outcome: Outcome, error_code: str | None = None) -> MetricsRow:
        """The row of a run that ended without a journal (failed, duplicate)."""
        return MetricsRow.of_run(
            self,
            outcome,
            error_code=error_code,
            duration_ms=self.ms(),
            usage=self.usage,
            llm_attempts=self.llm_attempts,
            model=self.model,
        )


@contextmanager
def _stage(run: _Run, name: str) -> Iterator[None]:
    """Time a stage: a DEBUG line now, and its duration in the run's closing INFO line
    (one line per run at INFO: log writes contend in a pool of 50 threads)."""
    t = time.monotonic()
    try:
        yield
    finally:  # a stage that failed took its time too (an LLM outage's, say)
        run.stages[name] = ms = int((time.monotonic() - t) * 1000)
    run.log(logging.DEBUG, name, "done in %d ms", ms)


def run_reflection(deps: Deps, *, reflection_job_id: str, kwargs: Mapping[str, Any]) -> RunReport:
    """Run one reflection to a terminal outcome, or raise `RetryableError` to be retried."""
    run = _Run(reflection_job_id, kwargs)
    try:
        request = parse_request(kwargs)
    except PermanentError as e:
        return _fail(deps, run, e)
    s = deps.settings
    run.deadline = Deadline.after(s.soft_time_limit)
    if batch.on(s) and _gate(deps, run, request) == "coalesced":
        return _coalesced(run)
    with (
        metrics.in_progress(),
        deps.turns.hold(),
        user_slot(
            deps.redis,
            request.user_id,
            run.reflection_job_id,
            cap=s.user_max_in_flight,
            lease_seconds=s.claim_lease_seconds,
            max_delay=_max_delay(s),
            peek=LLM_BREAKER_KEY,  # the breaker's state in the same round trip
        ) as slot,
    ):
        run.slot = slot
        return _claimed_run(deps, run, request)


def _max_delay(s: Settings) -> float:
    """The longest a deferred run may wait: a Redis broker hands a countdown's message
    back after its visibility timeout."""
    return min(MAX_DELAY_SECONDS, s.broker_visibility_timeout / 4)


def _claimed_run(deps: Deps, run: _Run, request: ReflectRequest) -> RunReport:
    """Claim the job, then consult the LLM (or reuse its stored decision) and apply."""
    s = deps.settings
    paths = UserPaths(s.user_folder_root, request.user_id)
    claim = storage.claim_job(
        engine=deps.engine,
        original_job_id=request.original_job_id,
        reflection_job_id=run.reflection_job_id,
        user_id=request.user_id,
        lease_seconds=s.claim_lease_seconds,
    )
    if claim.status == "done":
        if has_pending_journal(paths, request.original_job_id):
            return _apply(deps, run, request, paths, claim.fence, None)
        return _duplicate(deps, run, request)
    if claim.status == "busy":
        if batch.on(s):  # in another run's batch, maybe: wait for it like a follower
            raise BatchWaitError("the job is held by another run", delay=BATCH_POLL_SECONDS)
        raise ClaimBusyError(
            f"job {request.original_job_id} is being reflected by another delivery"
        )
    try:
        if claim.deliveries > s.max_deliveries and not has_pending_journal(
            paths, request.original_job_id
        ):
            raise PoisonError(f"delivered {claim.deliveries} times; giving up")
        return _decide_and_apply(deps, run, request, paths, claim)
    except (RetryableError, OSError, redis.RedisError) as e:
        _leaving_for_retry(deps, request, claim.fence, e)
        raise
    except PermanentError as e:
        storage.release_failed(
            engine=deps.engine, original_job_id=request.original_job_id, fence=claim.fence
        )
        _release_batch(deps, run, request)
        return _fail(deps, run, e)
    except Exception:
        # A bug or the soft time limit: the task records `failed`. End the claim's lease
        # now, keeping its decision (and any journal), so that a republish need not wait
        # for the lease and finishes a half-applied run without asking the LLM again.
        with contextlib.suppress(InfrastructureError):
            storage.release_lease(
                engine=deps.engine,
                original_job_id=request.original_job_id,
                reflection_job_id=run.reflection_job_id,
            )
        _release_batch(deps, run, request)
        raise


def _decide_and_apply(
    deps: Deps, run: _Run, request: ReflectRequest, paths: UserPaths, claim: storage.Claim
) -> RunReport:
    """Consult the LLM (or reuse its stored decision), for the run's batch if it leads
    one, and apply."""
    taken = batch.Taken([])
    if batch.on(deps.settings):
        if claim.decision is None and has_pending_journal(paths, request.original_job_id):
            return _apply(deps, run, request, paths, claim.fence, None)  # a batch's journal
        taken = _take(deps, run, request, resumed=claim.decision is not None)
    if claim.decision is not None:
        run.log(logging.INFO, "llm", "reusing the decision stored on the claim")
        stored = _stored_decision(claim.decision)
    else:
        stored, members = _consult(deps, run, request, paths, claim.fence, taken.members)
        taken = batch.Taken(members)
    result = stored.result
    run.spent(result.usage, result.attempts, result.model)
    run.deadline.check("applying")
    return _apply(deps, run, request, paths, claim.fence, stored, taken)


def _gate(deps: Deps, run: _Run, request: ReflectRequest) -> batch.Gate:
    return batch.gate(
        engine=deps.engine,
        client=deps.redis,
        s=deps.settings,
        run_id=run.reflection_job_id,
        request=request,
        now=deps.clock().timestamp(),
    )


def _take(deps: Deps, run: _Run, request: ReflectRequest, *, resumed: bool) -> batch.Taken:
    taken = batch.take(
        engine=deps.engine,
        client=deps.redis,
        s=deps.settings,
        run_id=run.reflection_job_id,
        request=request,
        resumed=resumed,
        now=deps.clock().timestamp(),
    )
    if taken.members:
        run.log(logging.INFO, "batch", "leads a batch of %d jobs", len(taken.members) + 1)
    return taken


def _release_batch(deps: Deps, run: _Run, request: ReflectRequest) -> None:
    """A leader that failed hands its followers back: each is reflected on its own."""
    if batch.on(deps.settings):
        with contextlib.suppress(InfrastructureError):
            batch.release(engine=deps.engine, run_id=run.reflection_job_id, leader=request)


def _coalesced(run: _Run) -> RunReport:
    run.log(logging.INFO, "claim", "reflected in a batch", outcome="coalesced")
    return run.report(Outcome.COALESCED)


def _leaving_for_retry(deps: Deps, request: ReflectRequest, fence: int, error: Exception) -> None:
    """Leaving cleanly to be retried (an outage too) is not a crash: the poison count
    starts anew. Only crashes count toward poison, and a lock that expired while the run
    held it: a decision too slow to apply is not replayed forever."""
    if isinstance(error, LockExpiredError):
        return
    with contextlib.suppress(InfrastructureError):
        storage.reset_deliveries(
            engine=deps.engine, original_job_id=request.original_job_id, fence=fence
        )


def _stored_decision(stored: dict[str, Any]) -> StoredDecision:
    """The decision kept on the claim; one that no longer validates (stored before the
    schema's caps, say) fails the run `llm_invalid_output` instead of crashing it."""
    try:
        return StoredDecision.load(stored)
    except ValidationError as e:
        raise LlmInvalidOutputError(
            f"the decision stored on the claim does not validate: {e.error_count()} errors"
        ) from e


def load_stage(
    s: Settings, engine: Engine, request: ReflectRequest, paths: UserPaths
) -> ReflectionInputs:
    """The load stage with the settings' limits (shared with the CLI's dry run)."""
    return load_inputs(
        request=request,
        engine=engine,
        paths=paths,
        pieces_dir=s.pieces_dir,
        activity_log_max_bytes=s.activity_log_max_bytes,
    )


def prompt_stage(s: Settings, inputs: ReflectionInputs) -> Prompt:
    """The prompt stage with the settings' limits (shared with the CLI's dry run)."""
    return fit_prompt(
        inputs,
        context_limit_tokens=s.llm_context_limit_tokens,
        max_output_tokens=s.llm_max_output_tokens,
        max_changes=s.max_changes_per_run,
        max_body_bytes=s.max_entry_body_bytes,
        memory_max_bytes=s.prompt_memory_max_bytes,
        log_max_bytes=s.activity_log_max_bytes,
    )


def batch_prompt_stage(
    s: Settings, inputs: ReflectionInputs, others: list[ReflectionInputs]
) -> Prompt:
    """The prompt of a coalesced batch: the leader's, then each other job's blocks."""
    return batch_prompt(
        inputs,
        others,
        context_limit_tokens=s.llm_context_limit_tokens,
        max_output_tokens=s.llm_max_output_tokens,
        max_changes=s.max_changes_per_run,
        max_body_bytes=s.max_entry_body_bytes,
        memory_max_bytes=s.prompt_memory_max_bytes,
        log_max_bytes=log_share(s.activity_log_max_bytes, len(others) + 1),
    )


def apply_limits(s: Settings) -> Limits:
    """The settings' limits on what one decision may change (shared with the CLI's dry
    run and the evaluation suite)."""
    return Limits(
        max_changes=s.max_changes_per_run,
        max_body_bytes=s.max_entry_body_bytes,
        max_entries=s.max_memory_entries,
        cooldown_hours=s.piece_edit_cooldown_hours,
        trusted_line_pattern=s.trusted_line_pattern,
        near_duplicate_threshold=s.near_duplicate_threshold,
    )


def _consult(
    deps: Deps,
    run: _Run,
    request: ReflectRequest,
    paths: UserPaths,
    fence: int,
    members: list[Member],
) -> tuple[StoredDecision, list[Member]]:
    """Ask the LLM, and keep its decision on the claim (masked, with its secret verdicts
    and the job text it was shown, every job's of a batch) before anything is judged or
    written; with the members of the batch that were loaded."""
    s = deps.settings
    with _stage(run, "load"):
        inputs, members, others = _load(deps, run, request, paths, fence, members)
    run.deadline.check("the prompt")
    with _stage(run, "prompt"):
        prompt = batch_prompt_stage(s, inputs, others) if others else prompt_stage(s, inputs)
    fault_point("before_llm")
    run.deadline.check("the LLM")
    with (
        # An outage defers the run instead of failing it (reflection.breaker).
        llm_guard(
            deps.redis,
            s,
            run.reflection_job_id,
            max_delay=_max_delay(s),
            seen_open=run.breaker_seen(s.llm_outage_probe_seconds),
        ),
        deps.turns.released(),
        _stage(run, "llm"),
    ):
        # The run's own deadline bounds the LLM stage in every pool; prefork's hard limit
        # is not the only guard (the threads pool has none).
        result = deps.llm.decide(
            system=prompt.system,
            user=prompt.user,
            user_id=request.user_id,
            deadline=run.t0 + deps.settings.soft_time_limit,
        )
    fault_point("after_llm")
    run.deadline.check("storing the decision")
    run.log(
        logging.DEBUG,
        "llm",
        "tokens_in=%d tokens_out=%d attempts=%d changes=%d piece_edit=%s",
        result.usage.tokens_in,
        result.usage.tokens_out,
        result.attempts,
        len(result.decision.memory_changes),
        result.decision.piece_edit is not None,
    )
    stored = stored_decision(result, request, prompt)
    if not storage.store_decision(
        engine=deps.engine,
        original_job_id=request.original_job_id,
        fence=fence,
        decision=stored.to_json(),
    ):
        raise ClaimBusyError("the claim was taken over while the LLM answered")
    return stored, members


def _load(
    deps: Deps,
    run: _Run,
    request: ReflectRequest,
    paths: UserPaths,
    fence: int,
    members: list[Member],
) -> tuple[ReflectionInputs, list[Member], list[ReflectionInputs]]:
    """The run's inputs, and its batch's (each job's log its share of the budget)."""
    s = deps.settings
    if not members:
        return load_stage(s, deps.engine, request, paths), [], []
    share = log_share(s.activity_log_max_bytes, len(members) + 1)
    inputs = load_inputs(
        request=request,
        engine=deps.engine,
        paths=paths,
        pieces_dir=s.pieces_dir,
        activity_log_max_bytes=share,
    )
    members, others = batch.load(
        engine=deps.engine,
        s=s,
        run_id=run.reflection_job_id,
        leader=request,
        members=members,
        log_max_bytes=share,
    )
    batch.store(engine=deps.engine, request=request, fence=fence, members=members)
    return inputs, members, others


def stored_decision(result: LlmResult, request: ReflectRequest, prompt: Prompt) -> StoredDecision:
    """The LLM's answer as a run judges it, and as the claim keeps it: masked, with the
    raw text's secret verdicts and the job text the prompt showed (shared with the CLI's
    dry run and the evaluation suite). A batch's keeps every job's text, by job id."""
    shown: ShownJob | None = prompt.shown
    assert shown is not None  # fit_prompt always sets it
    others = prompt.others_shown if isinstance(prompt, BatchPrompt) else {}
    return StoredDecision.of(result, {request.original_job_id: shown, **others})


def _state(
    deps: Deps, paths: UserPaths, request: ReflectRequest, last_edit: datetime | None
) -> State:
    memory, malformed = load_memory(paths)
    unreadable = frozenset(Path(m.path).stem for m in malformed)
    return State(
        memory={e.name: e for e in memory},
        unreadable=unreadable,
        piece=load_piece(paths, deps.settings.pieces_dir, request.piece_name),
        last_piece_edit_at=last_edit,
    )


def _recover(deps: Deps, run: _Run, paths: UserPaths, lock: UserLock) -> dict[str, Journal]:
    """Complete the journals killed runs left for this user, before anything else is
    written for them; returns them by original job id."""
    done = finish_pending_journals(paths=paths, lock=lock, engine=deps.engine, duration_ms=run.ms())
    for journal in done:
        run.log(logging.WARNING, "recover", "rolled forward journal %s", journal.snapshot_id)
    return {j.original_job_id: j for j in done}


def _apply(
    deps: Deps,
    run: _Run,
    request: ReflectRequest,
    paths: UserPaths,
    fence: int,
    llm: StoredDecision | None,
    taken: batch.Taken | None = None,
) -> RunReport:
    """Under the user's lock: recover, re-check the claim, plan, journal, roll forward.
    `llm=None` only recovers (the job is already marked done). `taken`: the other
    jobs of its batch (only those it still holds are committed with it)."""
    s = deps.settings
    with (
        _stage(run, "apply"),
        user_lock(
            deps.redis,
            request.user_id,
            expire=s.lock_expire_seconds,
            wait=s.lock_wait_seconds,
            turns=deps.turns,
            deadline=run.deadline,
        ) as lock,
    ):
        own = _recover(deps, run, paths, lock).get(request.original_job_id)
        if own is not None:
            return _finished(deps, run, own, paths)
        state, last_edit = storage.claim_state_and_last_edit(
            engine=deps.engine,
            original_job_id=request.original_job_id,
            user_id=request.user_id,
            piece_name=request.piece_name,
        )
        if llm is None or state == "done":
            return _duplicate(deps, run, request)
        taken, llm = _batch_held(deps, run, request, taken, llm)
        journal = plan(
            paths=paths,
            request=request,
            reflection_job_id=run.reflection_job_id,
            fence=fence,
            llm=llm.result,
            grounds=llm.grounds,
            state=_state(deps, paths, request, last_edit),
            limits=replace(apply_limits(s), evidence_rules=deps.evidence_rules),
            now=deps.clock(),
            store_llm_raw=s.store_llm_raw,
            piece_edit_mode=s.piece_edit_mode,
        )
        journal = batch.attach(journal, taken.members if taken is not None else [])
        lock.before_write()  # the deadline; Redis only if planning took a third of the expiry
        write_journal(paths, journal)
        try:
            committed = roll_forward(
                paths=paths,
                journal=journal,
                lock=lock,
                engine=deps.engine,
                duration_ms=run.ms(),
                recovering=False,
            )
        except TimeLimitError as e:  # its retry only finishes the journal
            raise JournalPendingError(f"{e}; the journal is written, so it is retried") from e
    if not committed:
        raise LockLostError("the claim was taken over before commit; nothing recorded")
    return _finished(deps, run, journal, paths)


def _batch_held(
    deps: Deps,
    run: _Run,
    request: ReflectRequest,
    taken: batch.Taken | None,
    llm: StoredDecision,
) -> tuple[batch.Taken | None, StoredDecision]:
    """Under the lock: the followers the leader still holds, and the decision without
    the changes of jobs that are not (or never were) in its batch."""
    if taken is None or not (taken.members or taken.left):
        return taken, llm
    taken = batch.held(engine=deps.engine, run_id=run.reflection_job_id, taken=taken)
    jobs = [request.original_job_id, *(m.original_job_id for m in taken.members)]
    return taken, without_jobs(llm, taken.left | outside(llm, jobs))


def _finished(deps: Deps, run: _Run, journal: Journal, paths: UserPaths) -> RunReport:
    if queued := deps.turns.waited_ms():
        run.stages["queued"] = queued  # for CPU turns, between the stages
    meta = journal.meta
    assert isinstance(meta, ReflectionMeta)  # a job's own journal is its reflection's
    run.log(
        logging.INFO,
        "done",
        "outcome=%s accepted=%d rejected=%d snapshot=%s tokens_in=%d tokens_out=%d ms=%d stages=%s",
        meta.outcome.value,
        sum(v.accepted for v in meta.verdicts),
        meta.rejected,
        journal.snapshot_id,
        meta.tokens_in,
        meta.tokens_out,
        run.ms(),
        ",".join(f"{k}:{v}" for k, v in run.stages.items()) or "-",
        outcome=meta.outcome.value,
        duration_ms=run.ms(),
    )
    return run.report(
        meta.outcome,
        verdicts=tuple(meta.verdicts),
        reasoning=meta.reasoning,
        snapshot_dir=paths.snapshot_dir(journal.snapshot_id),
        tokens_in=meta.tokens_in,
        tokens_out=meta.tokens_out,
    )


def _duplicate(deps: Deps, run: _Run, request: ReflectRequest | None = None) -> RunReport:
    if (
        request is not None
        and batch.on(deps.settings)
        and batch.coalesced_row(engine=deps.engine, request=request, run_id=run.reflection_job_id)
    ):
        return _coalesced(run)  # a batch's journal, rolled forward, reflected its job
    run.log(logging.INFO, "claim", "already reflected; nothing to do", outcome="duplicate")
    storage.record_metrics(engine=deps.engine, row=run.metrics_row(Outcome.DUPLICATE))
    return run.report(Outcome.DUPLICATE)


def journal_pending(deps: Deps, kwargs: Mapping[str, Any]) -> bool:
    """Whether the job's run wrote its journal and was stopped before finishing it: then
    it is to be completed (by a retry, which only rolls the journal forward), not failed."""
    try:
        request = parse_request(kwargs)
    except PermanentError:
        return False
    paths = UserPaths(deps.settings.user_folder_root, request.user_id)
    return has_pending_journal(paths, request.original_job_id)


def record_failure(
    deps: Deps, *, reflection_job_id: str, kwargs: Mapping[str, Any], error: ReflectionError
) -> RunReport:
    """End a run `failed` with the error's code: a log line and a metrics row.

    For the task adapter, when a retryable error outlived its retries (or the run hit a
    bug or its time limit). A claim the run still holds has its lease ended, keeping its
    decision: a republish takes it over at once instead of waiting out the lease."""
    with contextlib.suppress(PermanentError):
        request = parse_request(kwargs)
        storage.release_lease(
            engine=deps.engine,
            original_job_id=request.original_job_id,
            reflection_job_id=safe_id(reflection_job_id),
        )
    return _fail(deps, _Run(reflection_job_id, kwargs), error)


def _fail(deps: Deps, run: _Run, error: ReflectionError) -> RunReport:
    run.log(
        logging.ERROR,
        "failed",
        "code=%s %s",
        error.code,
        error,
        outcome="failed",
        error_code=error.code,
        duration_ms=run.ms(),
    )
    run.spent(error.usage, error.attempts)  # none unless it failed asking the LLM
    storage.record_metrics(engine=deps.engine, row=run.metrics_row(Outcome.FAILED, error.code))
    return run.report(
        Outcome.FAILED,
        error_code=error.code,
        detail=str(error)[:500],
        tokens_in=run.usage.tokens_in,
        tokens_out=run.usage.tokens_out,
    )
