"""The prompt of a coalesced batch (SPEC §12): one system prompt, the user's piece and
memory once, then each job's own blocks.

The batch's prompt is the leader's as for a run of one job (`reflection.prompt.fit_prompt`),
in the same order, from what changes least to what changes most: the stable prefix
(piece, memory index, bodies by name, shared by every prompt of the user while memory and
piece are unchanged), then the leader's job, then each other job with its facts and its
data blocks (request, result, error, activity log; credentials masked, every block
delimited like the leader's), then a note asking for one answer for all the jobs (every
memory change naming in `job_id` the job its evidence quotes), then the bodies picked for
the job. The guard trims the leader's log and memory to leave room for the others; the
activity log budget is shared: each job's log was read with its share of
`activity_log_max_bytes` (`log_share`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Final

from reflection.errors import ContextOverflowError
from reflection.evidence import ShownJob
from reflection.models import ReflectionInputs
from reflection.prompt import (
    JOB_FIELD_MAX_BYTES,
    Prompt,
    _activity_note,
    _block,
    _clip_middle,
    _masked,
    estimate_tokens,
    fit_prompt,
    shown_job,
)

_MIN_LOG_SHARE: Final = 256  # bytes of a job's activity log, however large the batch


def log_share(log_max_bytes: int, jobs: int) -> int:
    """Each job's part of the activity log budget in a batch of `jobs`."""
    return max(_MIN_LOG_SHARE, log_max_bytes // max(1, jobs))


@dataclass(frozen=True)
class BatchPrompt(Prompt):
    """A batch's prompt; `shown` is the leader's job text, `others_shown` each other
    job's as its blocks show it (by job id), that its changes' quotes are judged against."""

    others_shown: Mapping[str, ShownJob] = field(default_factory=dict)


def follower_section(inputs: ReflectionInputs, log_max_bytes: int) -> tuple[str, ShownJob]:
    """One other job of the batch: its facts, then its data blocks (masked, delimited);
    and its text as those blocks show it."""
    safe = _masked(inputs, log_max_bytes)
    job, activity = safe.job, safe.activity
    attrs = f"job={job.id}"
    blocks = [_block("REQUEST", job.task, attrs)]
    if job.result:
        blocks.append(_block("RESULT", _clip_middle(job.result, JOB_FIELD_MAX_BYTES), attrs))
    if job.error:
        blocks.append(_block("ERROR", _clip_middle(job.error, JOB_FIELD_MAX_BYTES), attrs))
    if activity.text:
        log_attrs = f"{attrs} total_bytes={activity.total_bytes}"
        blocks.append(_block("ACTIVITY_LOG", activity.text, log_attrs))
    status = "".join(ch if ch.isalnum() or ch in "_-" else "?" for ch in job.status[:40])
    facts = (
        f"## Job {job.id}\n\noutcome: {inputs.request.outcome} (job status: {status})\n"
        f"activity log: {_activity_note(activity, activity.text)}"
    )
    return facts + "\n\n" + "\n\n".join(blocks), shown_job(job, activity.text)


def _closing(job_ids: Sequence[str]) -> str:
    listing = ", ".join(job_ids)
    return (
        f"# One answer for {len(job_ids)} jobs\n\n"
        f"This prompt covers {len(job_ids)} jobs of the same user and piece that finished "
        f"close together: {listing}. Each is shown above with its own blocks, the first "
        "under The job. Answer with ONE JSON object for all of them, as the system "
        'message says, with one more field on every memory change: `"job_id"`, the id of '
        "the job its evidence comes from (one of the ids above); its evidence must quote "
        "that job. Do not repeat a lesson that several jobs teach: write it once, naming "
        "one of them."
    )


def batch_prompt(
    leader: ReflectionInputs,
    others: Sequence[ReflectionInputs],
    *,
    context_limit_tokens: int,
    max_output_tokens: int,
    max_changes: int,
    max_body_bytes: int,
    memory_max_bytes: int,
    log_max_bytes: int,
) -> BatchPrompt:
    """The batch's prompt; ContextOverflowError when even the leader's part, trimmed as
    `fit_prompt` trims, leaves no room for the others."""
    sections = {o.job.id: follower_section(o, log_max_bytes) for o in others}
    ids = [leader.job.id, *sections]
    parts = [
        "# The other jobs of this batch",
        *(text for text, _ in sections.values()),
        _closing(ids),
    ]
    tail_tokens = estimate_tokens("\n\n".join(parts))
    if tail_tokens >= context_limit_tokens:
        raise ContextOverflowError(f"the batch's other jobs need about {tail_tokens} tokens")
    prompt = fit_prompt(
        leader,
        context_limit_tokens=context_limit_tokens,
        max_output_tokens=max_output_tokens,
        max_changes=max_changes,
        max_body_bytes=max_body_bytes,
        memory_max_bytes=memory_max_bytes,
        log_max_bytes=log_max_bytes,
        others=parts,
    )
    return BatchPrompt(
        **{f.name: getattr(prompt, f.name) for f in fields(prompt)},
        others_shown={job_id: shown for job_id, (_, shown) in sections.items()},
    )
