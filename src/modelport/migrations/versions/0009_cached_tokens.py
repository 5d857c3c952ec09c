"""cached-read and cache-creation input tokens on usage records

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 19:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Records written before this revision counted no cache: 0 is what they used.
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("cached_prompt_tokens", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("cache_creation_tokens", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("cache_creation_tokens")
        batch.drop_column("cached_prompt_tokens")
