"""limits on API keys; cost, key and request id on usage records

Revision ID: 0007
Revises: 0004
Create Date: 2026-11-25 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("rpm_limit", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("tpm_limit", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_parallel_requests", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_budget", sa.Float(), nullable=True))
        batch.add_column(sa.Column("budget_duration", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("budget_started_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("cost", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("key_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("request_id", sa.String(length=36), nullable=True))
        batch.create_unique_constraint("uq_usage_records_request_id", ["request_id"])
        batch.create_index("ix_usage_key_time", ["key_id", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_index("ix_usage_key_time")
        batch.drop_constraint("uq_usage_records_request_id", type_="unique")
        batch.drop_column("request_id")
        batch.drop_column("key_id")
        batch.drop_column("cost")
    with op.batch_alter_table("api_keys") as batch:
        for column in ("budget_started_at", "budget_duration", "max_budget", "max_parallel_requests", "tpm_limit"):
            batch.drop_column(column)
        batch.drop_column("rpm_limit")
