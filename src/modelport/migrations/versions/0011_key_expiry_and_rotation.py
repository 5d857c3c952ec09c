"""expiry and rotation of API keys: expires_at, and the previous secret's hash until it retires

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 23:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # All nullable: keys made before this revision never expire and were never rotated.
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("previous_key_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("previous_key_retired_at", sa.DateTime(timezone=True), nullable=True))
        # A key is looked up by its previous secret too (during a rotation's grace).
        batch.create_index("ix_api_keys_previous_key_hash", ["previous_key_hash"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index("ix_api_keys_previous_key_hash")
        batch.drop_column("previous_key_retired_at")
        batch.drop_column("previous_key_hash")
        batch.drop_column("expires_at")
