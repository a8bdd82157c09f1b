"""Coalescing in a run (SPEC §12, §14): the steps `reflection.pipeline` calls when
`REFLECTION_COALESCE_WINDOW_SECONDS` > 0. The rules are `reflection.coalesce` (pure); the
waiting set is `reflection.burst` (Redis); the claims `reflection.storage.batches`.

    gate      before the run takes a slot: end `coalesced` (its batch committed), wait
              (BatchWaitError: the task is deferred, no slot held, no retry counted)
              while its burst is not settled or its job is in another run's batch, or go
    take      the leader, once its own job is claimed: the followers (or, resumed, the
              batch kept on its claim), each claim held under the leader's id
    load      each follower's inputs, with its share of the activity log budget; a job
              that cannot be loaded leaves the batch and is reflected on its own
    held      under the user's lock: the followers still held (the others took their
              jobs back) — their changes alone stay in the decision
    attach    the journal's followers: claims marked done and `coalesced` rows, in the
              leader's one commit
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import redis
from sqlalchemy import Engine

from reflection import burst
from reflection.burst import Arrival
from reflection.coalesce import (
    Member,
    countdown,
    follower,
    followers_to_take,
    poll_seconds,
    wait_seconds,
)
from reflection.errors import BatchWaitError, PermanentError
from reflection.inputs import load_inputs
from reflection.models import ReflectionInputs, ReflectRequest
from reflection.paths import UserPaths
from reflection.records import Journal
from reflection.settings import Settings
from reflection.storage import batches

log = logging.getLogger("reflection")

Gate = Literal["go", "coalesced"]


@dataclass(frozen=True)
class Taken:
    """A leader's followers, and the jobs of its kept batch it no longer holds (taken
    back by their own runs: their changes leave the stored decision)."""

    members: list[Member]
    left: frozenset[str] = frozenset()


def on(s: Settings) -> bool:
    """Whether runs coalesce."""
    return s.coalesce_window_seconds > 0


def gate(
    *,
    engine: Engine,
    client: redis.Redis,
    s: Settings,
    run_id: str,
    request: ReflectRequest,
    now: float,
) -> Gate:
    """Where a run stands before it takes a slot; raises BatchWaitError to wait."""
    view = batches.claim_view(
        engine=engine, original_job_id=request.original_job_id, reflection_job_id=run_id
    )
    if view.state == "done":
        return "coalesced" if view.my_outcome == "coalesced" else "go"  # go: `duplicate`
    if view.state == "running" and view.holder == run_id:
        return "go"  # this run's own retry: it led, or got as far as its claim
    if view.state == "running" and not view.expired:
        raise BatchWaitError(
            f"job {request.original_job_id} is in the batch of {view.holder}",
            delay=poll_seconds(s.claim_lease_seconds - view.lease_left),
        )
    arrivals = burst.register(
        client,
        user_id=request.user_id,
        piece_name=request.piece_name,
        arrival=Arrival(request.original_job_id, now, run_id, request.outcome),
        max_wait=s.coalesce_max_wait_seconds,
    )
    wait = wait_seconds(
        now,
        request.original_job_id,
        arrivals,
        window=s.coalesce_window_seconds,
        max_wait=s.coalesce_max_wait_seconds,
    )
    if wait > 0:
        raise BatchWaitError(
            f"waiting {wait:.1f}s for more jobs of user {request.user_id} and piece "
            f"{request.piece_name} ({len(arrivals)} waiting)",
            delay=countdown(wait),
        )
    return "go"


def take(
    *,
    engine: Engine,
    client: redis.Redis,
    s: Settings,
    run_id: str,
    request: ReflectRequest,
    resumed: bool,
    now: float,
) -> Taken:
    """The leader's followers, their claims now held under its id: the batch kept on its
    claim (a retry or redelivery resumes it), plus, unless the LLM already answered, the
    oldest jobs waiting for its user and piece."""
    kept = batches.stored_batch(engine=engine, original_job_id=request.original_job_id)
    picked: list[Member] = []
    if not resumed:
        waiting = burst.register(
            client,
            user_id=request.user_id,
            piece_name=request.piece_name,
            arrival=Arrival(request.original_job_id, now, run_id, request.outcome),
            max_wait=s.coalesce_max_wait_seconds,
        )
        known = {m.original_job_id for m in kept}
        room = s.coalesce_max_jobs - 1 - len(kept)
        picked = [
            Member(
                original_job_id=a.job_id, reflection_job_id=a.reflection_job_id, outcome=a.outcome
            )
            for a in followers_to_take(waiting, request.original_job_id, s.coalesce_max_jobs)
            if a.job_id not in known
        ][: max(0, room)]
    taken = batches.take(
        engine=engine,
        leader=run_id,
        user_id=request.user_id,
        candidates=[*kept, *picked],
        lease_seconds=s.claim_lease_seconds,
    )
    # Taken, or held elsewhere (their own runs wait for that batch): no longer waiting.
    gone = [request.original_job_id, *(m.original_job_id for m in picked)]
    burst.remove(client, user_id=request.user_id, piece_name=request.piece_name, job_ids=gone)
    held = {m.original_job_id for m in taken}
    return Taken(taken, frozenset(m.original_job_id for m in kept) - held)


def load(
    *,
    engine: Engine,
    s: Settings,
    run_id: str,
    leader: ReflectRequest,
    members: Sequence[Member],
    log_max_bytes: int,
) -> tuple[list[Member], list[ReflectionInputs]]:
    """Each follower's inputs; a job that cannot be loaded (unknown, mismatched) leaves
    the batch, its claim released so that its own run reflects it (and fails it with its
    own code)."""
    kept: list[Member] = []
    loaded: list[ReflectionInputs] = []
    dropped: list[str] = []
    for m in members:
        request = ReflectRequest(
            original_job_id=m.original_job_id,
            user_id=leader.user_id,
            piece_name=leader.piece_name,
            outcome=m.outcome,
        )
        try:
            loaded.append(
                load_inputs(
                    request=request,
                    engine=engine,
                    paths=UserPaths(s.user_folder_root, leader.user_id),
                    pieces_dir=s.pieces_dir,
                    activity_log_max_bytes=log_max_bytes,
                )
            )
            kept.append(m)
        except (PermanentError, ValueError) as e:
            log.warning("batch %s: job %s left out: %s", run_id, m.original_job_id, e)
            dropped.append(m.original_job_id)
    release(engine=engine, run_id=run_id, leader=leader, job_ids=dropped)
    return kept, loaded


def release(
    *, engine: Engine, run_id: str, leader: ReflectRequest, job_ids: Sequence[str] | None = None
) -> None:
    """Hand the followers' jobs (all, or `job_ids`) back to their own runs."""
    batches.release(
        engine=engine, leader=run_id, leader_job_id=leader.original_job_id, job_ids=job_ids
    )


def held(*, engine: Engine, run_id: str, taken: Taken) -> Taken:
    """The followers whose claims the leader still holds (call under the user's lock);
    the others join the jobs left."""
    members = batches.still_held(engine=engine, leader=run_id, members=taken.members)
    lost = {m.original_job_id for m in taken.members} - {m.original_job_id for m in members}
    return Taken(members, taken.left | lost)


def attach(journal: Journal, members: Sequence[Member]) -> Journal:
    """The journal with its batch's followers, committed with the leader's row."""
    if not members or journal.metrics is None:
        return journal
    followers = [follower(journal.metrics, m) for m in members]
    return journal.model_copy(update={"followers": followers})


def store(
    *, engine: Engine, request: ReflectRequest, fence: int, members: Sequence[Member]
) -> None:
    """Keep the batch on the leader's claim before the LLM is asked."""
    batches.store_batch(
        engine=engine, original_job_id=request.original_job_id, fence=fence, members=members
    )


def coalesced_row(*, engine: Engine, request: ReflectRequest, run_id: str) -> bool:
    """Whether this run's job was reflected in a batch (its `coalesced` row exists)."""
    view = batches.claim_view(
        engine=engine, original_job_id=request.original_job_id, reflection_job_id=run_id
    )
    return view.my_outcome == "coalesced"
