"""server operators: identities that may create accounts and manage any key

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 07:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("identities") as batch:
        batch.add_column(sa.Column("is_operator", sa.Boolean(), nullable=False, server_default=sa.false()))
    # The first user (the one first start created, holding the first admin key) runs
    # the server: it keeps the powers it had.
    op.execute(
        "UPDATE identities SET is_operator = TRUE WHERE id = ("
        "SELECT id FROM identities WHERE identity_type = 'user' ORDER BY created_at, id LIMIT 1)"
    )


def downgrade() -> None:
    with op.batch_alter_table("identities") as batch:
        batch.drop_column("is_operator")
