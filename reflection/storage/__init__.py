"""Postgres (or, for the embedded demo, SQLite) access: every table and every statement.

    tables     the platform's `jobs` (read only) and the worker's own tables
    runs       the job, its claim (lease and fencing token), the rows a run commits
    entries    entry records (`memory_entries`), written in those commits, and what the
               consolidation pass reads (live entries, users reflected, the last pass)
    proposals  piece edits staged for review
    reports    `stats`, `backfill`'s pending jobs, `doctor`'s checks
    db         what they share: driver errors as outages, one-statement connections

Every function takes the engine keyword-only and runs one short transaction, so a
connection is never held across the LLM call. The engine is built by `reflection.clients`.
"""

from reflection.storage.entries import (
    RunRef,
    entry_record,
    entry_records,
    last_consolidation_at,
    live_entries,
    runs_by_id,
    users_reflected_since,
    write_entries,
)
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
    record_change,
    record_metrics,
    record_piece_edit,
    release_failed,
    release_lease,
    reset_deliveries,
    store_decision,
)
from reflection.storage.tables import (
    jobs,
    memory_entries,
    metadata,
    piece_edits,
    piece_proposals,
    platform_metadata,
    reflection_claims,
    reflection_metrics,
)

__all__ = [
    "Claim",
    "RunRef",
    "claim_job",
    "claim_state",
    "claim_state_and_last_edit",
    "commit_run",
    "decide_proposal",
    "entry_record",
    "entry_records",
    "fetch_job",
    "get_proposal",
    "jobs",
    "last_consolidation_at",
    "last_piece_edit_at",
    "list_proposals",
    "live_entries",
    "memory_entries",
    "metadata",
    "note_proposal_refusal",
    "piece_edits",
    "piece_proposals",
    "platform_metadata",
    "record_change",
    "record_metrics",
    "record_piece_edit",
    "reflection_claims",
    "reflection_metrics",
    "release_failed",
    "release_lease",
    "reset_deliveries",
    "runs_by_id",
    "store_decision",
    "users_reflected_since",
    "write_entries",
]
