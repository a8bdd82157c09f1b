"""The tables: the platform's `jobs` (read only; its DDL ships in `sql/jobs.sql` for tests,
the demo and compose) and the worker's own, created by the alembic migrations in
`migrations/`."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    func,
)

platform_metadata = MetaData()
metadata = MetaData()

_Id = BigInteger().with_variant(Integer(), "sqlite")
_TS = DateTime(timezone=True)

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
