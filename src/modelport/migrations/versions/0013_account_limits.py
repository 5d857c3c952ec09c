"""limits and budgets on accounts, shared by all their keys

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 02:00:00
"""

import sqlite3
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: accounts made before this revision have no limits of their own. A column
    # already there was kept by a downgrade on an SQLite older than 3.35 (see below).
    present = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("accounts")}
    columns: list[sa.Column[Any]] = [
        sa.Column("rpm_limit", sa.Integer(), nullable=True),
        sa.Column("tpm_limit", sa.Integer(), nullable=True),
        sa.Column("max_parallel_requests", sa.Integer(), nullable=True),
        sa.Column("max_budget", sa.Float(), nullable=True),
        sa.Column("budget_duration", sa.String(length=20), nullable=True),
        sa.Column("budget_started_at", sa.DateTime(timezone=True), nullable=True),
    ]
    with op.batch_alter_table("accounts") as batch:
        for column in columns:
            if column.name not in present:
                batch.add_column(column)
    # An account's budget is seeded from its usage since its window began.
    op.create_index("ix_usage_account_time", "usage_records", ["account_id", "created_at"])


_COLUMNS = ("budget_started_at", "budget_duration", "max_budget", "max_parallel_requests", "tpm_limit", "rpm_limit")


def downgrade() -> None:
    op.drop_index("ix_usage_account_time", table_name="usage_records")
    if op.get_bind().dialect.name == "sqlite":
        # Alembic's batch mode drops a column by copying the table and dropping the old
        # one, which every table referring to accounts makes fail with foreign keys on
        # (they are, store/db.py). SQLite drops a column itself since 3.35; an older one
        # keeps these columns, nullable and unread by the code of revision 0012.
        if sqlite3.sqlite_version_info >= (3, 35):
            for column in _COLUMNS:
                op.execute(f"ALTER TABLE accounts DROP COLUMN {column}")
        return
    with op.batch_alter_table("accounts") as batch:
        for column in _COLUMNS:
            batch.drop_column(column)
