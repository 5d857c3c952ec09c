"""the audit log: one row per change to the catalogue

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 23:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_kind", sa.String(10), nullable=False),
        sa.Column("actor_key_id", sa.String(36), nullable=True),
        sa.Column("actor_identity_id", sa.String(36), nullable=True),
        sa.Column("actor_role", sa.String(20), nullable=True),
        sa.Column("actor_name", sa.String(200), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("account_id", sa.String(36), nullable=True),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("object_type", sa.String(30), nullable=False),
        sa.Column("object_id", sa.String(200), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_account_at", "audit_events", ["account_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_account_at", table_name="audit_events")
    op.drop_index("ix_audit_events_at", table_name="audit_events")
    op.drop_table("audit_events")
