"""Cost columns (SPEC §12): cached prompt tokens per run, and the batch a coalesced job
was reflected in.

`reflection_metrics.tokens_cached` counts `usage.prompt_tokens_details.cached_tokens`
(0 for rows written before it). `reflection_metrics.coalesced_into` is, on a follower's
row (outcome `coalesced`), the leader's `reflection_job_id`. `reflection_claims.batch`
holds a leader's batch (its jobs' ids) until the claim ends, like `decision`.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "reflection_metrics",
        sa.Column("tokens_cached", sa.Integer, nullable=False, server_default="0"),
    )
    op.add_column("reflection_metrics", sa.Column("coalesced_into", sa.Text))
    op.add_column("reflection_claims", sa.Column("batch", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("reflection_claims") as batch:  # SQLite rebuilds the table
        batch.drop_column("batch")
    with op.batch_alter_table("reflection_metrics") as batch:
        batch.drop_column("coalesced_into")
        batch.drop_column("tokens_cached")
