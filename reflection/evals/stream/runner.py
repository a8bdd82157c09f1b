"""Drive a simulated stream of jobs through the worker's real stages, and measure.

Each job is written as the platform would (a `jobs` row, an activity log in the user's
folder), then reflected by `pipeline.run_reflection` with the simulated model and a
simulated clock: real claims, locks, journals, files, snapshots and entry records, on
the engine and Redis given. With consolidation on, a pass runs when a user's live entries
reach the threshold after a reflection (and the last pass is old enough), and a daily
sweep passes over every user reflected since their last pass, on the simulated clock.

After every `sample_every` jobs (and at the checkpoint and the end) each user's memory is
measured against the ground truth (`truth`): live entries (the files on disk), duplicate
pairs, stale entries (from their `memory_entries` rows), untrusted instructions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import redis
from sqlalchemy import Engine, insert, select

from reflection import storage
from reflection.consolidate import run_consolidation
from reflection.evals.stream import truth
from reflection.evals.stream.model import EntryView, SimModel, unconfirmed_days
from reflection.evals.stream.rules import Rules, setting
from reflection.evals.stream.world import START, SimJob, World
from reflection.fsio import atomic_write, ensure_dir
from reflection.memory import load_memory
from reflection.paths import UserPaths
from reflection.pipeline import Deps, run_reflection
from reflection.settings import Settings

Mode = Literal["off", "on"]
PIECE = "default"


class StreamError(Exception):
    """The stream cannot run here (a database that already holds it, say)."""


@dataclass(frozen=True)
class Sample:
    """One user's memory after job `job` (day `day` of the stream)."""

    job: int
    day: float
    user: int
    live: int
    duplicate_pairs: int
    stale: int
    untrusted_instructions: int


@dataclass
class ModeResult:
    """One run of the stream: rules off or on."""

    mode: Mode
    rules: str
    samples: list[Sample] = field(default_factory=list)
    tokens: list[tuple[int, int, int]] = field(default_factory=list)  # job, user, tokens
    outcomes: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)  # code -> changes refused
    consolidations: Counter[str] = field(default_factory=Counter)  # reason -> passes
    # Adds refused as near_duplicate that restated no live entry (ground truth): facts
    # the near-duplicate detector kept out of memory by mistake.
    distinct_refused: int = 0

    def at(self, job: int) -> list[Sample]:
        """The samples taken after job `job`, one per user."""
        return [s for s in self.samples if s.job == job]


@dataclass(frozen=True)
class Ids:
    """The worker's ids of one stream's users and jobs (distinct per seed and mode)."""

    prefix: str

    def user(self, u: int) -> str:
        return f"{self.prefix}-u{u}"

    def job(self, n: int) -> str:
        return f"{self.prefix}-j{n:04d}"

    def reflection(self, job_id: str) -> str:
        return f"{job_id}-r"


class _Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@dataclass
class _Env:
    world: World
    ids: Ids
    deps: Deps
    model: SimModel
    clock: _Clock
    rules: Rules
    result: ModeResult
    passes: int = 0
    last_pass: dict[int, datetime] = field(default_factory=dict)
    reflected_since: set[int] = field(default_factory=set)
    next_sweep: datetime | None = None

    @property
    def settings(self) -> Settings:
        return self.deps.settings

    def paths(self, u: int) -> UserPaths:
        return UserPaths(self.settings.user_folder_root, self.ids.user(u))


def _insert_job(
    engine: Engine, *, job_id: str, user_id: str, task: str, result: str, at: datetime
) -> None:
    row = {
        "id": job_id,
        "user_id": user_id,
        "piece_name": PIECE,
        "status": "succeeded",
        "task": task,
        "result": result,
        "created_at": at - timedelta(minutes=12),
        "finished_at": at,
    }
    with engine.begin() as conn:
        conn.execute(insert(storage.jobs).values(**row))


def _reflect(env: _Env, job_id: str, user_id: str) -> None:
    report = run_reflection(
        env.deps,
        reflection_job_id=env.ids.reflection(job_id),
        kwargs={
            "original_job_id": job_id,
            "user_id": user_id,
            "piece_name": PIECE,
            "outcome": "succeeded",
        },
    )
    env.result.outcomes[report.outcome.value] += 1
    env.result.refused.update(v.code.value for v in report.verdicts if not v.accepted)
    near = [v.name for v in report.verdicts if v.code.value == "near_duplicate"]
    if near:
        env.result.distinct_refused += _distinct(env, user_id, near)


def _distinct(env: _Env, user_id: str, names: list[str]) -> int:
    """How many of these adds refused as near-duplicates stood for a fact no live entry
    holds (by the ground truth): the detector's false positives."""
    paths = UserPaths(env.settings.user_folder_root, user_id)
    registry = env.model.registry
    held = {registry.fact_of(user_id, e.name) for e in load_memory(paths)[0]}
    return sum(registry.fact_of(user_id, n) not in held for n in names)


def _entry_views(env: _Env) -> Callable[[str, datetime], list[EntryView]]:
    def views(user_id: str, now: datetime) -> list[EntryView]:
        paths = UserPaths(env.settings.user_folder_root, user_id)
        memory, _ = load_memory(paths)
        records = {r.name: r for r in storage.live_entries(engine=env.deps.engine, user_id=user_id)}
        out = []
        for e in memory:
            r = records.get(e.name)
            if r is None:
                out.append(EntryView(e.name, now, 0.0, e.protected))
                continue
            last = max(r.last_changed, r.confirmed_at or r.last_changed)
            out.append(EntryView(e.name, r.created_at, unconfirmed_days(last, now), e.protected))
        return out

    return views


def _consolidate(env: _Env, u: int, reason: str, now: datetime) -> None:
    """One consolidation pass of user `u` at `now`: the worker's, in process."""
    env.clock.now = now
    env.passes += 1
    env.result.consolidations[reason] += 1
    pass_id = f"{env.ids.prefix}-c{env.passes:04d}"
    report = run_consolidation(
        env.deps, user_id=env.ids.user(u), reason=reason, now=now, pass_id=pass_id
    )
    env.result.outcomes[f"consolidation:{report.outcome.value}"] += 1
    env.result.refused.update(v.code.value for v in report.verdicts if not v.accepted)
    env.last_pass[u] = now
    env.reflected_since.discard(u)


def _sweeps_until(env: _Env, t: datetime) -> None:
    """The daily sweeps due before `t`: every user reflected since their last pass."""
    every = float(setting(env.settings, "consolidate_every_hours", 24.0))
    if every <= 0:
        return
    step = timedelta(hours=every)
    due = env.next_sweep or START + step
    while due <= t:
        for u in sorted(env.reflected_since):
            _consolidate(env, u, "scheduled", due)
        due += step
    env.next_sweep = due


def _threshold(env: _Env, u: int, now: datetime) -> None:
    at_entries = int(setting(env.settings, "consolidate_at_entries", 40))
    interval = timedelta(hours=float(setting(env.settings, "consolidate_min_interval_hours", 24)))
    live = len(load_memory(env.paths(u))[0])
    last = env.last_pass.get(u)
    if live >= at_entries and (last is None or now - last >= interval):
        _consolidate(env, u, "threshold", now)


def _sample(env: _Env, job: SimJob) -> None:
    now = env.clock.now
    stale_days = float(setting(env.settings, "stale_days", 90))
    for u in range(env.world.users):
        user_id = env.ids.user(u)
        names = [e.name for e in load_memory(env.paths(u))[0]]
        records = {r.name: r for r in storage.live_entries(engine=env.deps.engine, user_id=user_id)}
        fresh = [
            truth.Freshness(n, max(r.last_changed, r.confirmed_at or r.last_changed))
            for n in names
            if (r := records.get(n)) is not None
        ]

        def fact_of(name: str, uid: str = user_id) -> str | None:
            return env.model.registry.fact_of(uid, name)

        env.result.samples.append(
            Sample(
                job=job.n,
                day=round(job.day, 2),
                user=u,
                live=len(names),
                duplicate_pairs=truth.duplicate_pairs(names, fact_of),
                stale=truth.stale(fresh, now, stale_days),
                untrusted_instructions=truth.untrusted_instructions(
                    names, fact_of, env.world.facts
                ),
            )
        )


def sample_points(jobs: int, every: int) -> set[int]:
    """The jobs after which memory is measured: every `every`, the checkpoint (a third of
    the stream: job 100 of 300) and the last."""
    return {n for n in range(1, jobs + 1) if n % every == 0} | {checkpoint(jobs), jobs}


def checkpoint(jobs: int) -> int:
    """The job the plateau is measured from (100 of 300)."""
    return max(1, round(jobs / 3))


def _refuse_reuse(engine: Engine, ids: Ids) -> None:
    with engine.connect() as conn:
        found = conn.execute(
            select(storage.jobs.c.id).where(storage.jobs.c.id == ids.job(1))
        ).first()
    if found is not None:
        raise StreamError(
            f"this database already holds the stream {ids.prefix!r}; run it on a fresh one"
        )


def run_mode(
    world: World,
    *,
    mode: Mode,
    rules: Rules,
    settings: Settings,
    engine: Engine,
    redis_client: redis.Redis,
    root: Path,
    sample_every: int = 5,
) -> ModeResult:
    """Run the world's jobs once with `rules`, files under `root`; its measurements."""
    ids = Ids(f"st{world.seed}-{mode}")
    _refuse_reuse(engine, ids)
    s = settings.model_copy(update={"user_folder_root": root / mode})
    clock = _Clock()
    jobs = {ids.job(j.n): j for j in world.jobs}
    model = SimModel(
        world,
        jobs=jobs,
        stale_days=float(setting(s, "stale_days", 90)),
        max_removals=int(setting(s, "consolidate_max_removals", 10)),
    )
    model.now = clock
    deps = Deps(
        settings=s,
        engine=engine,
        redis=redis_client,
        llm=model,
        clock=clock,
        evidence_rules=rules.evidence,
    )
    env = _Env(world, ids, deps, model, clock, rules, ModeResult(mode, rules.label))
    model.entries = _entry_views(env)
    points = sample_points(len(world.jobs), sample_every)
    consolidating = rules.consolidation
    for job in world.jobs:
        if consolidating:
            _sweeps_until(env, job.at)
        clock.now = job.at
        job_id, user_id = ids.job(job.n), ids.user(job.user)
        _insert_job(
            engine, job_id=job_id, user_id=user_id, task=job.task, result=job.result, at=job.at
        )
        log = env.paths(job.user).activity_log(job_id)
        ensure_dir(log.parent)
        atomic_write(log, job.log)
        _reflect(env, job_id, user_id)
        env.reflected_since.add(job.user)
        env.result.tokens.append((job.n, job.user, model.prompt_tokens.get(job_id, 0)))
        if consolidating:
            _threshold(env, job.user, job.at)
        clock.now = job.at
        if job.n in points:
            _sample(env, job)
    return env.result
