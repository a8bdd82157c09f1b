"""Coalescing bursts (SPEC §12, §14): the pure rules. No I/O.

Jobs of one user and piece that finish close together are reflected in one LLM call.
A run registers its job (`reflection.burst`) and waits, deferred, until no new job of its
user and piece arrived for the window (at most the max wait since its own job arrived).
Then the oldest waiting run leads: it takes up to `max_jobs` waiting jobs (itself and
the oldest others) into one prompt, one decision and one snapshot; each job still gets
its own metrics row, the others' with outcome `coalesced` and `coalesced_into` naming the
leader. A job whose user is quiet waits the window and leads a batch of one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Final

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from reflection.burst import Arrival
from reflection.models import LlmDecision, Outcome
from reflection.records import BatchFollower, MetricsRow, StoredDecision

# A waiting run that is not the oldest lets the oldest lead for this long past the
# quiet time (it is due back then too) before it leads itself.
LEADER_GRACE_SECONDS: Final = 3.0
# While its job is in another run's batch, a run asks again this often (it ends only
# after the batch committed, or takes its job back when the batch's lease ran out).
BATCH_POLL_SECONDS: Final = 2.0
# A deferral costs a round trip through the broker (about 0.1 s): a run comes back that
# much early, and less than MIN_WAIT_SECONDS left is not worth another one.
DEFER_ROUND_TRIP_SECONDS: Final = 0.1
MIN_WAIT_SECONDS: Final = 0.15


class Member(BaseModel):
    """A job of a batch: its reflect task and the fence its claim is held under. A
    leader's claim keeps the list (`reflection_claims.batch`) until the batch commits."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    original_job_id: str
    reflection_job_id: str
    outcome: str  # the job's outcome, as its task said
    fence: int = 0


_MEMBERS: Final = TypeAdapter(list[Member])


def dump_members(members: Sequence[Member]) -> str:
    return _MEMBERS.dump_json(list(members)).decode()


def load_members(text: str | None) -> list[Member]:
    """The batch stored on a claim; none when there is none or it cannot be read."""
    if not text:
        return []
    try:
        return _MEMBERS.validate_json(text)
    except ValidationError:
        return []


def wait_seconds(
    now: float, job_id: str, arrivals: Sequence[Arrival], *, window: float, max_wait: float
) -> float:
    """How much longer the run of `job_id` waits before it leads (0: lead now).

    `arrivals`: the jobs of its user and piece waiting, oldest first. It waits until the
    last arrival is `window` old, but no longer than `max_wait` since its own job
    arrived; then the oldest waiting job leads, the others give it `LEADER_GRACE_SECONDS`
    to take them (a run past its max wait leads at once)."""
    mine = next((a for a in arrivals if a.job_id == job_id), None)
    if mine is None or window <= 0:
        return 0.0
    left = mine.at + max_wait - now
    if left <= 0:
        return 0.0
    quiet = max(a.at for a in arrivals) + window
    if quiet - now >= MIN_WAIT_SECONDS:  # less left is quiet enough: the oldest leads
        return _worth_waiting(min(quiet - now, left))
    if arrivals[0].job_id == job_id:
        return 0.0
    return _worth_waiting(min(quiet + LEADER_GRACE_SECONDS - now, left, BATCH_POLL_SECONDS))


def _worth_waiting(seconds: float) -> float:
    return seconds if seconds >= MIN_WAIT_SECONDS else 0.0


MAX_POLL_SECONDS: Final = 30.0


def poll_seconds(held_for: float) -> float:
    """How long a run whose job is in another run's batch waits before asking again: a
    quarter of how long the batch has held it, from `BATCH_POLL_SECONDS` to
    `MAX_POLL_SECONDS` (a leader retrying through an outage is not polled every 2 s)."""
    return min(MAX_POLL_SECONDS, max(BATCH_POLL_SECONDS, held_for / 4))


def countdown(wait: float) -> float:
    """The deferral's countdown for a `wait`: less the deferral's own round trip, so that
    a job of a quiet user is reflected a window after it arrived, not later."""
    return max(wait - DEFER_ROUND_TRIP_SECONDS, MIN_WAIT_SECONDS - DEFER_ROUND_TRIP_SECONDS)


def followers_to_take(
    arrivals: Sequence[Arrival], leader_job_id: str, max_jobs: int
) -> list[Arrival]:
    """The waiting jobs a leader takes besides its own: the oldest, up to `max_jobs` in
    the batch."""
    return [a for a in arrivals if a.job_id != leader_job_id][: max(0, max_jobs - 1)]


def without_jobs(stored: StoredDecision, job_ids: Collection[str]) -> StoredDecision:
    """`stored` with the memory changes of `job_ids` left out (their secret verdicts
    too, which go by the changes' order): jobs that left the batch after the LLM
    answered (each is reflected on its own, once), or that were never in it."""
    changes = stored.result.decision.memory_changes
    keep = [i for i, c in enumerate(changes) if c.job_id not in job_ids]
    if len(keep) == len(changes):
        return stored
    result = stored.result
    decision = LlmDecision.model_validate(
        result.decision.model_dump() | {"memory_changes": [changes[i].model_dump() for i in keep]}
    )
    secrets = stored.secrets
    return stored.model_copy(
        update={
            "result": result.model_copy(update={"decision": decision}),
            "secrets": [secrets[i] for i in keep if i < len(secrets)],
        }
    )


def outside(stored: StoredDecision, batch: Collection[str]) -> set[str]:
    """The job ids the decision's changes name that are not jobs of the batch (a change
    may only come from a job the model was shown)."""
    changes = stored.result.decision.memory_changes
    return {c.job_id for c in changes if c.job_id is not None} - set(batch)


def follower(leader: MetricsRow, member: Member) -> BatchFollower:
    """A follower's commit: its claim under its fence, its row `coalesced` into the
    leader's run, with no tokens of its own (the leader's row carries the call)."""
    row = MetricsRow(
        reflection_job_id=member.reflection_job_id,
        original_job_id=member.original_job_id,
        user_id=leader.user_id,
        piece_name=leader.piece_name,
        outcome=Outcome.COALESCED,
        model=leader.model,
        snapshot_id=leader.snapshot_id,
        coalesced_into=leader.reflection_job_id,
    )
    return BatchFollower(original_job_id=member.original_job_id, fence=member.fence, metrics=row)
