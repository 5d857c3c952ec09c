"""allow-lists on API keys: the models and deployments a key is limited to

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 23:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: keys made before this revision keep calling every model of their account.
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("allowed_models", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("allowed_deployments", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("allowed_deployments")
        batch.drop_column("allowed_models")
