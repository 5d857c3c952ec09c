"""the response cache on API keys: how long a key's cacheable answers are kept

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 01:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: keys made before this revision cache nothing of their own (the model's
    # setting, if any, applies to them).
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("cache_ttl_seconds", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("cache_ttl_seconds")
