"""stored responses of the Responses API (/v1/responses)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 19:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stored_responses",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("input_items", sa.JSON(), nullable=False),
        sa.Column("conversation", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_stored_responses_account_id", "stored_responses", ["account_id"], unique=False)
    op.create_index("ix_stored_responses_created", "stored_responses", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_stored_responses_created", table_name="stored_responses")
    op.drop_index("ix_stored_responses_account_id", table_name="stored_responses")
    op.drop_table("stored_responses")
