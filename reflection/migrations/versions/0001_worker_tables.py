"""The worker's tables: reflection_metrics, piece_edits, reflection_claims.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "reflection_metrics",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("reflection_job_id", sa.Text, nullable=False, unique=True),
        sa.Column("original_job_id", sa.Text, nullable=False, index=True),
        sa.Column("user_id", sa.Text, nullable=False, index=True),
        sa.Column("piece_name", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("error_code", sa.Text),
        sa.Column("memory_changes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("piece_edited", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("rejections", sa.Integer, nullable=False, server_default="0"),
        sa.Column("tokens_in", sa.Integer, nullable=False, server_default="0"),
        sa.Column("tokens_out", sa.Integer, nullable=False, server_default="0"),
        sa.Column("llm_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("duration_ms", sa.Integer, nullable=False, server_default="0"),
        sa.Column("model", sa.Text),
        sa.Column("snapshot_id", sa.Text),
        sa.Column("created_at", _TS, nullable=False, server_default=sa.func.now(), index=True),
    )
    op.create_table(
        "piece_edits",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("piece_name", sa.Text, nullable=False),
        sa.Column("reflection_job_id", sa.Text, nullable=False, unique=True),
        sa.Column("original_job_id", sa.Text, nullable=False),
        sa.Column("before_sha256", sa.Text, nullable=False),
        sa.Column("after_sha256", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_index(
        "ix_piece_edits_user_piece_time", "piece_edits", ["user_id", "piece_name", "created_at"]
    )
    op.create_table(
        "reflection_claims",
        sa.Column("original_job_id", sa.Text, primary_key=True),
        sa.Column("reflection_job_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("fence", sa.Integer, nullable=False, server_default="1"),
        sa.Column("deliveries", sa.Integer, nullable=False, server_default="1"),
        sa.Column("lease_expires_at", _TS, nullable=False),
        sa.Column("decision", sa.Text),
        sa.Column("outcome", sa.Text),
        sa.Column("updated_at", _TS, nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("reflection_claims")
    op.drop_index("ix_piece_edits_user_piece_time", table_name="piece_edits")
    op.drop_table("piece_edits")
    op.drop_table("reflection_metrics")
