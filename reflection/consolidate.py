"""Run one consolidation pass over a user's memory (SPEC §11, §14), as a reflection runs:

    claim `consolidate:<user>:<pass id>` → Redis marker (one pass per user at a time)
    → memory and records → prompt → LLM (decision kept on the claim)
    → under the user lock: judge (`reflection.consolidation`) → journal → files →
      snapshot (`kind: consolidation`) → one fenced commit (metrics row `kind:
      consolidation`, piece_name '', entry records, claim done)

It knows nothing of Celery (`tasks.consolidate` adapts it). `run_consolidation` is the
in-process entry point (the task, `reflection consolidate --now`, the stream
simulation); `dry_run_consolidation` asks and judges, writing nothing; `sweep` publishes
one pass per user reflected since their last; `maybe_trigger` publishes a threshold pass
after a reflection. Failures end `failed` with a code and a metrics row; retryable ones
propagate, as in `reflection.pipeline`.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from reflection import metrics, storage
from reflection.apply import (
    has_pending_journal,
    journal_path,
    read_or_none,
    replaceable,
    roll_forward,
    write_journal,
)
from reflection.breaker import llm_guard
from reflection.consolidation import REASONS, SWEEP_USER, PassLimits, judge_pass
from reflection.consolidation_prompt import build_system, consolidation_prompt
from reflection.constants import USER_ID_RE
from reflection.errors import (
    BadRequestError,
    ClaimBusyError,
    InfrastructureError,
    LockLostError,
    PermanentError,
    PoisonError,
    ReflectionError,
    RetryableError,
)
from reflection.frontmatter import render_entry
from reflection.lock import user_lock
from reflection.memory import load_memory, render_index
from reflection.models import LlmResult, MemoryEntry, Outcome, Verdict
from reflection.paths import UserPaths
from reflection.pipeline import Deps, RunReport, _fail, _max_delay, _recover, _Run
from reflection.plan import outcome_of, snapshot_id_for
from reflection.records import (
    Change,
    ConsolidationMeta,
    EntryChanges,
    EntryRecord,
    FileChange,
    Journal,
    MetricsRow,
    StoredDecision,
)
from reflection.secrets import mask_secrets
from reflection.settings import Settings
from reflection.snapshot import snapshot_files
from reflection.storage.consolidations import threshold_facts, users_due_for_sweep

log = logging.getLogger("reflection")

TASK_NAME = "consolidate"
# One pass per user at a time (with the user lock): the pass holding it, by task id.
MARKER_PREFIX = "reflection:consolidating:"
# A threshold pass published and not yet run: no second one is published meanwhile.
QUEUED_PREFIX = "reflection:consolidate-queued:"
_MAX_REASON_CHARS = 300

Publish = Callable[[str, str], object]  # (user_id, reason): publish one `consolidate`


@dataclass(frozen=True)
class PassRequest:
    """The `consolidate` task's kwargs, validated."""

    user_id: str
    reason: str


def parse_pass(kwargs: Mapping[str, Any]) -> PassRequest:
    """`BadRequestError` unless kwargs are exactly `user_id` (a user id, or `*` for the
    sweep) and `reason` (scheduled | threshold | operator)."""
    extra = sorted(set(kwargs) - {"user_id", "reason"})
    if extra or "user_id" not in kwargs:
        raise BadRequestError(
            f"consolidate takes user_id and reason; got {sorted(map(str, kwargs))[:5]}"
        )
    user_id, reason = kwargs["user_id"], kwargs.get("reason", "operator")
    if not isinstance(user_id, str) or not (user_id == SWEEP_USER or USER_ID_RE.fullmatch(user_id)):
        raise BadRequestError("user_id is not a valid user id")
    if reason not in REASONS:
        raise BadRequestError(f"reason must be one of {list(REASONS)}")
    return PassRequest(user_id, reason)


def claim_key(user_id: str, pass_id: str) -> str:
    """The pass's key in `reflection_claims` (and its metrics row's original_job_id)."""
    return f"consolidate:{user_id}:{pass_id}"


def pass_limits(s: Settings) -> PassLimits:
    return PassLimits(
        max_changes=s.consolidate_max_changes,
        max_removals=s.consolidate_max_removals,
        stale_days=s.stale_days,
        max_body_bytes=s.max_entry_body_bytes,
    )


class _Pass(_Run):
    """A pass's identity for log lines and rows: piece_name '', kind consolidation."""

    kind = metrics.KIND_CONSOLIDATION

    def __init__(self, pass_id: str, user_id: str) -> None:
        super().__init__(
            pass_id, {"original_job_id": claim_key(user_id, pass_id), "user_id": user_id}
        )
        self.piece_name = ""

    def metrics_row(self, outcome: Outcome, error_code: str | None = None) -> MetricsRow:
        row = super().metrics_row(outcome, error_code)
        return row.model_copy(update={"kind": "consolidation", "piece_name": ""})


# The entry point.


def run_consolidation(
    deps: Deps,
    *,
    user_id: str,
    reason: str = "operator",
    now: datetime | None = None,
    pass_id: str | None = None,
) -> RunReport:
    """Run one pass over `user_id`'s memory to a terminal outcome (`applied`,
    `abstained`, `rejected`, `duplicate`: another pass of the user holds the marker, or
    this one is done; `failed`), or raise `RetryableError`. `now` stamps and judges the
    pass (default: `deps.clock()`); `pass_id` is the task id (default: a new uuid)."""
    pass_id = pass_id or str(uuid.uuid4())
    run = _Pass(pass_id, user_id)
    if now is not None:
        deps = replace(deps, clock=lambda: now)
    try:
        request = parse_pass({"user_id": user_id, "reason": reason})
        if request.user_id == SWEEP_USER:
            raise BadRequestError("the sweep (user_id '*') publishes passes; it is no pass")
    except PermanentError as e:
        return _fail(deps, run, e)
    return _claimed(deps, run, request)


def _claimed(deps: Deps, run: _Pass, request: PassRequest) -> RunReport:
    s = deps.settings
    key = run.original_job_id
    paths = UserPaths(s.user_folder_root, request.user_id)
    claim = storage.claim_job(
        engine=deps.engine,
        original_job_id=key,
        reflection_job_id=run.reflection_job_id,
        user_id=request.user_id,
        lease_seconds=s.claim_lease_seconds,
    )
    if claim.status == "done":
        if has_pending_journal(paths, key):
            return _apply(deps, run, request, paths, claim.fence, None)
        return _duplicate(deps, run, "this pass is done")
    if claim.status == "busy":
        raise ClaimBusyError(f"pass {key} is being run by another delivery")
    try:
        if not _take_marker(deps.redis, request.user_id, run.reflection_job_id, s):
            return _skip(deps, run, claim.fence)
        try:
            return _marked(deps, run, request, paths, claim)
        finally:
            _drop_marker(deps.redis, request.user_id, run.reflection_job_id)
    except (RetryableError, OSError, redis.RedisError):
        with contextlib.suppress(InfrastructureError):
            storage.reset_deliveries(engine=deps.engine, original_job_id=key, fence=claim.fence)
        raise
    except PermanentError as e:
        storage.release_failed(engine=deps.engine, original_job_id=key, fence=claim.fence)
        return _fail(deps, run, e)
    except Exception:
        with contextlib.suppress(InfrastructureError):
            storage.release_lease(
                engine=deps.engine, original_job_id=key, reflection_job_id=run.reflection_job_id
            )
        raise


def _marked(
    deps: Deps, run: _Pass, request: PassRequest, paths: UserPaths, claim: storage.Claim
) -> RunReport:
    """With the claim and the user's marker: ask (or reuse the stored answer), apply."""
    s = deps.settings
    if claim.deliveries > s.max_deliveries and not has_pending_journal(paths, run.original_job_id):
        raise PoisonError(f"delivered {claim.deliveries} times; giving up")
    if claim.decision is not None:
        stored = StoredDecision.load(claim.decision)
    else:
        stored = _consult(deps, run, request, paths, claim.fence)
    result = stored.result
    run.spent(result.usage, result.attempts, result.model)
    return _apply(deps, run, request, paths, claim.fence, stored)


# One pass per user at a time.

_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"


def _take_marker(client: redis.Redis, user_id: str, pass_id: str, s: Settings) -> bool:
    """Hold the user's pass marker (ours already: a redelivery); False: another pass has it."""
    key = MARKER_PREFIX + user_id
    try:
        if client.set(key, pass_id, nx=True, ex=s.claim_lease_seconds):
            return True
        held = client.get(key)
    except redis.RedisError as e:
        raise InfrastructureError(f"Redis unavailable: {e}") from e
    return held in (pass_id, pass_id.encode())


def _drop_marker(client: redis.Redis, user_id: str, pass_id: str) -> None:
    """Release the marker if ours, and allow the next threshold pass to be published."""
    with contextlib.suppress(redis.RedisError):
        client.eval(_RELEASE, 1, MARKER_PREFIX + user_id, pass_id)
        client.delete(QUEUED_PREFIX + user_id)


def _skip(deps: Deps, run: _Pass, fence: int) -> RunReport:
    """Another pass of this user is running: this one is redundant (`duplicate`)."""
    run.log(logging.INFO, "claim", "another pass of this user is running", outcome="duplicate")
    storage.commit_run(
        engine=deps.engine,
        original_job_id=run.original_job_id,
        fence=fence,
        metrics=run.metrics_row(Outcome.DUPLICATE).model_copy(update={"duration_ms": run.ms()}),
        piece_edit=None,
    )
    return _report(run, Outcome.DUPLICATE, detail="another pass of this user is running")


def _duplicate(deps: Deps, run: _Pass, detail: str) -> RunReport:
    run.log(logging.INFO, "claim", "%s; nothing to do", detail, outcome="duplicate")
    storage.record_metrics(engine=deps.engine, row=run.metrics_row(Outcome.DUPLICATE))
    return _report(run, Outcome.DUPLICATE, detail=detail)


def _report(run: _Pass, outcome: Outcome, **kw: Any) -> RunReport:
    # Counted by `_Run.report` (Prometheus) as a run of its kind.
    return run.report(outcome, **kw)


# Ask.


@dataclass(frozen=True)
class Loaded:
    """The user's memory as read now, with its records."""

    memory: tuple[MemoryEntry, ...]
    unreadable: frozenset[str]
    records: Mapping[str, EntryRecord]


def load(deps: Deps, paths: UserPaths) -> Loaded:
    memory, malformed = load_memory(paths)
    records = {r.name: r for r in storage.live_entries(engine=deps.engine, user_id=paths.user_id)}
    return Loaded(memory, frozenset(Path(m.path).stem for m in malformed), records)


def ask(
    deps: Deps, paths: UserPaths, loaded: Loaded, now: datetime, deadline: float | None
) -> LlmResult:
    """The LLM's answer for a pass over `loaded` (no claim, no guard: the dry run's)."""
    s = deps.settings
    limits = pass_limits(s)
    prompt = consolidation_prompt(
        loaded.memory,
        loaded.records,
        now,
        system=build_system(
            max_changes=limits.max_changes,
            max_removals=limits.max_removals,
            stale_days=limits.stale_days,
            max_body_bytes=limits.max_body_bytes,
        ),
        context_limit_tokens=s.llm_context_limit_tokens,
        max_output_tokens=s.llm_max_output_tokens,
    )
    return deps.llm.decide(
        system=prompt.system, user=prompt.user, user_id=paths.user_id, deadline=deadline
    )


def _consult(
    deps: Deps, run: _Pass, request: PassRequest, paths: UserPaths, fence: int
) -> StoredDecision:
    """Ask the LLM and keep its answer on the claim, masked with its secret verdicts
    (SPEC §14), before anything is judged or written."""
    s = deps.settings
    loaded = load(deps, paths)
    with (
        llm_guard(deps.redis, s, run.reflection_job_id, max_delay=_max_delay(s)),
        deps.turns.released(),
    ):
        result = ask(deps, paths, loaded, deps.clock(), run.t0 + s.soft_time_limit)
    stored = StoredDecision.of(result, None)
    if not storage.store_decision(
        engine=deps.engine,
        original_job_id=run.original_job_id,
        fence=fence,
        decision=stored.to_json(),
    ):
        raise ClaimBusyError("the claim was taken over while the LLM answered")
    return stored


# Apply, under the user's lock.


def _apply(
    deps: Deps,
    run: _Pass,
    request: PassRequest,
    paths: UserPaths,
    fence: int,
    llm: StoredDecision | None,
) -> RunReport:
    s = deps.settings
    with user_lock(
        deps.redis,
        request.user_id,
        expire=s.lock_expire_seconds,
        wait=s.lock_wait_seconds,
        turns=deps.turns,
    ) as lock:
        own = _recover(deps, run, paths, lock).get(run.original_job_id)
        if own is not None:
            return _finished(run, own, paths)
        state = storage.claim_state(engine=deps.engine, original_job_id=run.original_job_id)
        if llm is None or state == "done":
            return _duplicate(deps, run, "this pass is done")
        journal = plan_pass(
            paths=paths,
            loaded=load(deps, paths),
            reason=request.reason,
            pass_id=run.reflection_job_id,
            fence=fence,
            llm=llm,
            limits=pass_limits(s),
            now=deps.clock(),
            store_llm_raw=s.store_llm_raw,
        )
        lock.ensure_owned()
        write_journal(paths, journal)
        committed = roll_forward(
            paths=paths,
            journal=journal,
            lock=lock,
            engine=deps.engine,
            duration_ms=run.ms(),
            recovering=False,
        )
    if not committed:
        raise LockLostError("the claim was taken over before commit; nothing recorded")
    return _finished(run, journal, paths)


def _finished(run: _Pass, journal: Journal, paths: UserPaths) -> RunReport:
    meta = journal.meta
    assert isinstance(meta, ConsolidationMeta)  # a pass's own journal is its pass's
    run.log(
        logging.INFO,
        "done",
        "consolidation outcome=%s accepted=%d rejected=%d snapshot=%s ms=%d",
        meta.outcome.value,
        sum(v.accepted for v in meta.verdicts),
        meta.rejected,
        journal.snapshot_id,
        run.ms(),
        outcome=meta.outcome.value,
        duration_ms=run.ms(),
    )
    return _report(
        run,
        meta.outcome,
        verdicts=tuple(meta.verdicts),
        reasoning=meta.reasoning,
        snapshot_dir=paths.snapshot_dir(journal.snapshot_id),
        tokens_in=meta.tokens_in,
        tokens_out=meta.tokens_out,
    )


def plan_pass(
    *,
    paths: UserPaths,
    loaded: Loaded,
    reason: str,
    pass_id: str,
    fence: int,
    llm: StoredDecision,
    limits: PassLimits,
    now: datetime,
    store_llm_raw: bool,
) -> Journal:
    """Judge the answer against `loaded` and lay out every write as a journal (reads the
    files it replaces; writes nothing)."""
    memory = {e.name: e for e in loaded.memory}
    judged = judge_pass(
        llm.result.decision.memory_changes,
        memory=memory,
        records=loaded.records,
        limits=limits,
        now=now,
        unreadable=loaded.unreadable,
        piece_edit=llm.result.decision.piece_edit,
        secrets=llm.secrets,
    )
    files, before, after = _file_changes(paths, judged.targets, memory)
    sid = snapshot_id_for(pass_id, now)
    for target in (journal_path(paths, sid), paths.snapshot_dir(sid) / "meta.json"):
        paths.writable_file(target)
    paths.writable_file(paths.snapshot_index)
    change = Change(
        snapshot_id=sid,
        at=now,
        user_id=paths.user_id,
        piece_name=None,
        original_job_id=claim_key(paths.user_id, pass_id),
        reflection_job_id=pass_id,
        memory_before=before,
        memory_after=after,
    )
    meta = _meta(change, llm.result, judged.verdicts, reason, store_llm_raw)
    return Journal(
        snapshot_id=sid,
        original_job_id=change.original_job_id,
        reflection_job_id=pass_id,
        user_id=paths.user_id,
        fence=fence,
        files=files,
        snapshot=snapshot_files(before, after, None, None),
        meta=meta,
        metrics=MetricsRow.of_snapshot(meta),
        entries=_entries(change, judged.targets, memory, llm.result),
    )


def _meta(
    change: Change,
    llm: LlmResult,
    judged: tuple[Verdict, ...],
    reason: str,
    store_llm_raw: bool,
) -> ConsolidationMeta:
    """The pass's snapshot meta; what the model wrote is kept masked."""
    verdicts = [
        v.model_copy(update={"name": mask_secrets(v.name), "detail": mask_secrets(v.detail)})
        for v in judged
    ]
    return ConsolidationMeta.of(
        change,
        outcome=outcome_of(tuple(verdicts)),
        reason=reason,
        reasoning=mask_secrets(llm.decision.reasoning),
        model=llm.model,
        tokens_in=llm.usage.tokens_in,
        tokens_out=llm.usage.tokens_out,
        llm_attempts=llm.attempts,
        rejected=sum(1 for v in verdicts if not v.accepted),
        verdicts=verdicts,
        llm_raw=mask_secrets(llm.raw) if store_llm_raw else None,
    )


def _entries(
    change: Change,
    targets: Mapping[str, MemoryEntry | None],
    memory: Mapping[str, MemoryEntry],
    llm: LlmResult,
) -> EntryChanges:
    """The entry records of the pass: each write (a removal with its reason), and the
    entries on disk it left alone (recorded `external` if nothing recorded them yet)."""
    return EntryChanges.of(
        change,
        types={n: (e or memory[n]).type for n, e in targets.items()},
        reasons={n: _removal_reason(llm, n) for n in targets},
        found={n: e.type for n, e in memory.items()},
    )


def _file_changes(
    paths: UserPaths, targets: Mapping[str, MemoryEntry | None], memory: Mapping[str, MemoryEntry]
) -> tuple[list[FileChange], dict[str, str | None], dict[str, str | None]]:
    files: list[FileChange] = []
    before: dict[str, str | None] = {}
    after: dict[str, str | None] = {}

    def change(path: Path, old: str | None, new: str | None) -> FileChange:
        return FileChange(path=str(path.relative_to(paths.home)), before=old, after=new)

    for name, entry in targets.items():
        path = paths.memory_file(name)
        before[name] = read_or_none(paths, paths.writable(path))
        after[name] = render_entry(entry) if entry is not None else None
        files.append(change(path, before[name], after[name]))
    if targets:
        final = {**memory, **targets}
        index_path = paths.writable(paths.memory_index)
        index = render_index(e for e in final.values() if e is not None)
        files.append(change(index_path, replaceable(paths, index_path), index))
    return files, before, after


def _removal_reason(llm: LlmResult, name: str) -> str | None:
    for ch in llm.decision.memory_changes:
        if ch.name == name and ch.op == "remove":
            if ch.merge_target is not None:
                return f"merged into {ch.merge_target}"
            text = mask_secrets(ch.reason or "").replace("\x00", "")
            return f"stale: {text}"[:_MAX_REASON_CHARS]
    return None


# The dry run.


@dataclass(frozen=True)
class DryPass:
    """What a pass would do: the LLM's answer and the journal it would roll forward."""

    result: LlmResult
    journal: Journal


def dry_run_consolidation(deps: Deps, *, user_id: str, now: datetime | None = None) -> DryPass:
    """Read, ask the LLM and judge a pass, writing nothing (no file, row, claim, marker)."""
    if not USER_ID_RE.fullmatch(user_id):
        raise BadRequestError("user_id is not a valid user id")
    now = now or deps.clock()
    paths = UserPaths(deps.settings.user_folder_root, user_id)
    loaded = load(deps, paths)
    result = ask(deps, paths, loaded, now, None)
    pass_id = f"dry-run-{uuid.uuid4()}"
    journal = plan_pass(
        paths=paths,
        loaded=loaded,
        reason="operator",
        pass_id=pass_id,
        fence=0,
        llm=StoredDecision.of(result, None),
        limits=pass_limits(deps.settings),
        now=now,
        store_llm_raw=False,
    )
    return DryPass(result, journal)


# Triggers.


def sweep(deps: Deps, publish: Publish) -> list[str]:
    """Beat's pass (`user_id="*"`): publish one scheduled pass per user reflected since
    their last pass; returns those users."""
    users = users_due_for_sweep(engine=deps.engine)
    for user_id in users:
        publish(user_id, "scheduled")
    log.info("consolidation sweep: %d user(s) due", len(users), extra={"users": len(users)})
    return users


def threshold_due(deps: Deps, user_id: str, now: datetime | None = None) -> bool:
    """Whether a reflection just left `user_id` due a threshold pass: live entries at
    `consolidate_at_entries` or more, and the last pass older than the interval."""
    s = deps.settings
    now = now or deps.clock()
    live, last = threshold_facts(engine=deps.engine, user_id=user_id)
    if live < s.consolidate_at_entries:
        return False
    return last is None or now - last >= timedelta(hours=s.consolidate_min_interval_hours)


def maybe_trigger(deps: Deps, user_id: str, publish: Publish) -> bool:
    """After a reflection of `user_id`: publish a threshold pass if one is due and none
    is queued or running (Redis); True when published. Never raises: a trigger lost is
    the sweep's to catch up."""
    try:
        if not threshold_due(deps, user_id):
            return False
        if deps.redis.exists(MARKER_PREFIX + user_id):
            return False
        ttl = max(60, int(deps.settings.consolidate_min_interval_hours * 3600))
        if not deps.redis.set(QUEUED_PREFIX + user_id, "1", nx=True, ex=ttl):
            return False
        publish(user_id, "threshold")
        return True
    except Exception:
        log.warning("consolidation trigger for user %s failed", user_id, exc_info=True)
        return False


def pass_pending(deps: Deps, *, pass_id: str, user_id: str) -> bool:
    """Whether this pass wrote its journal and was stopped before finishing it."""
    if not USER_ID_RE.fullmatch(user_id):
        return False
    paths = UserPaths(deps.settings.user_folder_root, user_id)
    return has_pending_journal(paths, claim_key(user_id, pass_id))


def record_pass_failure(
    deps: Deps, *, pass_id: str, user_id: object, error: ReflectionError
) -> RunReport:
    """End a pass `failed` with the error's code (a log line and a metrics row), for the
    task adapter; a claim the pass still holds has its lease ended, keeping its decision."""
    uid = user_id if isinstance(user_id, str) else "?"
    run = _Pass(pass_id, uid)
    with contextlib.suppress(InfrastructureError):
        storage.release_lease(
            engine=deps.engine,
            original_job_id=run.original_job_id,
            reflection_job_id=run.reflection_job_id,
        )
    return _fail(deps, run, error)
