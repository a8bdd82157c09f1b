"""Piece edits staged for review (REFLECTION_PIECE_EDIT_MODE=review).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "piece_proposals",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("piece_name", sa.Text, nullable=False),
        sa.Column("reflection_job_id", sa.Text, nullable=False, unique=True),
        sa.Column("original_job_id", sa.Text, nullable=False),
        sa.Column("snapshot_id", sa.Text),
        sa.Column("summary", sa.Text, nullable=False, server_default=""),
        sa.Column("yaml", sa.Text, nullable=False),
        sa.Column("before_sha256", sa.Text, nullable=False),
        sa.Column("after_sha256", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("detail", sa.Text),
        sa.Column("created_at", _TS, nullable=False, server_default=sa.func.now()),
        sa.Column("decided_at", _TS),
    )
    op.create_index("ix_piece_proposals_status_user", "piece_proposals", ["status", "user_id"])


def downgrade() -> None:
    op.drop_index("ix_piece_proposals_status_user", table_name="piece_proposals")
    op.drop_table("piece_proposals")
