"""Entry records (`memory_entries`) and the kind of every `reflection_metrics` row.

`kind` is `reflection`, `consolidation`, `revert` or `approval` (SPEC §11). Rows written
before it are reflections, except reverts: outcome `reverted` (and their own
`revert-<uuid>` job id). Approvals wrote no metrics row before this revision, so none is
found to backfill.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "memory_entries",
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("type", sa.Text),
        sa.Column("origin", sa.Text, nullable=False, server_default="worker"),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by_job", sa.Text),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("updated_by_job", sa.Text),
        sa.Column("confirmed_at", _TS),
        sa.Column("confirmations", sa.Integer, nullable=False, server_default="0"),
        sa.Column("evidence", _Json),
        sa.Column("removed_at", _TS),
        sa.Column("removed_by", sa.Text),
        sa.Column("removed_reason", sa.Text),
        sa.PrimaryKeyConstraint("user_id", "name", name="pk_memory_entries"),
    )
    op.add_column(
        "reflection_metrics",
        sa.Column("kind", sa.Text, nullable=False, server_default="reflection"),
    )
    metrics = sa.table(
        "reflection_metrics",
        sa.column("kind", sa.Text),
        sa.column("outcome", sa.Text),
        sa.column("reflection_job_id", sa.Text),
    )
    op.execute(
        metrics.update()
        .where(
            sa.or_(metrics.c.outcome == "reverted", metrics.c.reflection_job_id.like("revert-%"))
        )
        .values(kind="revert")
    )
    op.create_index(
        "ix_reflection_metrics_user_kind_time",
        "reflection_metrics",
        ["user_id", "kind", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_reflection_metrics_user_kind_time", table_name="reflection_metrics")
    with op.batch_alter_table("reflection_metrics") as batch:  # SQLite rebuilds the table
        batch.drop_column("kind")
    op.drop_table("memory_entries")
