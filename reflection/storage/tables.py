"""The tables: the platform's `jobs` (read only; its DDL ships in `sql/jobs.sql` for tests,
the demo and compose) and the worker's own, created by the alembic migrations in
`migrations/`."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

platform_metadata = MetaData()
metadata = MetaData()

_Id = BigInteger().with_variant(Integer(), "sqlite")
_TS = DateTime(timezone=True)
# JSON text on SQLite (the demo); a Python None is SQL NULL, not JSON null.
_Json = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

jobs = Table(
    "jobs",
    platform_metadata,
    Column("id", Text, primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("piece_name", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("task", Text, nullable=False),
    Column("result", Text),
    Column("error", Text),
    Column("created_at", _TS, nullable=False, server_default=func.now()),
    Column("finished_at", _TS),
)

reflection_metrics = Table(
    "reflection_metrics",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("reflection_job_id", Text, nullable=False, unique=True),
    Column("original_job_id", Text, nullable=False, index=True),
    Column("user_id", Text, nullable=False, index=True),
    Column("piece_name", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("error_code", Text),
    Column("memory_changes", Integer, nullable=False, server_default="0"),
    Column("piece_edited", Boolean, nullable=False, server_default="false"),
    Column("rejections", Integer, nullable=False, server_default="0"),
    Column("tokens_in", Integer, nullable=False, server_default="0"),
    Column("tokens_out", Integer, nullable=False, server_default="0"),
    Column("llm_attempts", Integer, nullable=False, server_default="0"),
    Column("duration_ms", Integer, nullable=False, server_default="0"),
    Column("model", Text),
    Column("snapshot_id", Text),
    Column("created_at", _TS, nullable=False, server_default=func.now(), index=True),
    # reflection | consolidation | revert | approval (SPEC §11)
    Column("kind", Text, nullable=False, server_default="reflection"),
    Column("tokens_cached", Integer, nullable=False, server_default="0"),
    Column("coalesced_into", Text),  # a coalesced follower's leader (SPEC §12)
    Index("ix_reflection_metrics_user_kind_time", "user_id", "kind", "created_at"),
)

piece_edits = Table(
    "piece_edits",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("user_id", Text, nullable=False),
    Column("piece_name", Text, nullable=False),
    Column("reflection_job_id", Text, nullable=False, unique=True),
    Column("original_job_id", Text, nullable=False),
    Column("before_sha256", Text, nullable=False),
    Column("after_sha256", Text, nullable=False),
    Column("created_at", _TS, nullable=False, server_default=func.now()),
    Index("ix_piece_edits_user_piece_time", "user_id", "piece_name", "created_at"),
)

reflection_claims = Table(
    "reflection_claims",
    metadata,
    Column("original_job_id", Text, primary_key=True),
    Column("reflection_job_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("state", Text, nullable=False),  # running | done | failed
    Column("fence", Integer, nullable=False, server_default="1"),
    Column("deliveries", Integer, nullable=False, server_default="1"),
    Column("lease_expires_at", _TS, nullable=False),
    Column("decision", Text),  # the LLM's validated decision, kept until the run commits
    Column("outcome", Text),
    Column("batch", Text),  # a coalescing leader's job ids, kept until the run commits
    Column("updated_at", _TS, nullable=False, server_default=func.now()),
)

piece_proposals = Table(
    "piece_proposals",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("user_id", Text, nullable=False),
    Column("piece_name", Text, nullable=False),
    Column("reflection_job_id", Text, nullable=False, unique=True),
    Column("original_job_id", Text, nullable=False),
    Column("snapshot_id", Text),
    Column("summary", Text, nullable=False, server_default=""),
    Column("yaml", Text, nullable=False),  # the whole proposed piece
    Column("before_sha256", Text, nullable=False),  # the piece it was judged against
    Column("after_sha256", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),  # pending|approved|rejected
    Column("detail", Text),  # why it was approved/rejected, or the last refusal
    Column("created_at", _TS, nullable=False, server_default=func.now()),
    Column("decided_at", _TS),
    Index("ix_piece_proposals_status_user", "status", "user_id"),
)

# One row per memory entry a user has (or had): who wrote it, on what evidence, when it
# was last confirmed, and who removed it (SPEC §11). Written in the commit of the change
# that touched it (`storage.entries`).
memory_entries = Table(
    "memory_entries",
    metadata,
    Column("user_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("type", Text),  # None only for an entry whose file could not be read
    Column("origin", Text, nullable=False, server_default="worker"),  # worker | external
    Column("created_at", _TS, nullable=False),
    Column("created_by_job", Text),  # a reflection job id; None: written outside the worker
    Column("updated_at", _TS, nullable=False),
    Column("updated_by_job", Text),
    Column("confirmed_at", _TS),
    Column("confirmations", Integer, nullable=False, server_default="0"),
    Column("evidence", _Json),  # {"job_id": ..., "quotes": [...]} of the latest write
    Column("removed_at", _TS),
    Column("removed_by", Text),
    Column("removed_reason", Text),
    PrimaryKeyConstraint("user_id", "name", name="pk_memory_entries"),
)
