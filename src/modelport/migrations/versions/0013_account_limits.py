"""limits and budgets on accounts, shared by all their keys

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 02:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: accounts made before this revision have no limits of their own.
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("rpm_limit", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("tpm_limit", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_parallel_requests", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_budget", sa.Float(), nullable=True))
        batch.add_column(sa.Column("budget_duration", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("budget_started_at", sa.DateTime(timezone=True), nullable=True))
    # An account's budget is seeded from its usage since its window began.
    op.create_index("ix_usage_account_time", "usage_records", ["account_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_account_time", table_name="usage_records")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("budget_started_at")
        batch.drop_column("budget_duration")
        batch.drop_column("max_budget")
        batch.drop_column("max_parallel_requests")
        batch.drop_column("tpm_limit")
        batch.drop_column("rpm_limit")
