"""Postgres (or, for the embedded demo, SQLite) access: every table and every statement.

    tables     the platform's `jobs` (read only) and the worker's own tables
    runs       the job, its claim (lease and fencing token), the rows a run commits
    proposals  piece edits staged for review
    reports    `stats`, `backfill`'s pending jobs, `doctor`'s checks
    db         what they share: driver errors as outages, one-statement connections

Every function takes the engine keyword-only and runs one short transaction, so a
connection is never held across the LLM call. The engine is built by `reflection.clients`.
"""

from reflection.storage.proposals import (
    decide_proposal,
    get_proposal,
    list_proposals,
    note_proposal_refusal,
)
from reflection.storage.runs import (
    Claim,
    claim_job,
    claim_state,
    claim_state_and_last_edit,
    commit_run,
    fetch_job,
    last_piece_edit_at,
    record_metrics,
    record_piece_edit,
    release_failed,
    release_lease,
    reset_deliveries,
    store_decision,
)
from reflection.storage.tables import (
    jobs,
    metadata,
    piece_edits,
    piece_proposals,
    platform_metadata,
    reflection_claims,
    reflection_metrics,
)

__all__ = [
    "Claim",
    "claim_job",
    "claim_state",
    "claim_state_and_last_edit",
    "commit_run",
    "decide_proposal",
    "fetch_job",
    "get_proposal",
    "jobs",
    "last_piece_edit_at",
    "list_proposals",
    "metadata",
    "note_proposal_refusal",
    "piece_edits",
    "piece_proposals",
    "platform_metadata",
    "record_metrics",
    "record_piece_edit",
    "reflection_claims",
    "reflection_metrics",
    "release_failed",
    "release_lease",
    "reset_deliveries",
    "store_decision",
]
