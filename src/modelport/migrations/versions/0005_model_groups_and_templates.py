"""model groups and model templates

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _owned() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
    ]


def _created() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by_user_id", sa.String(36), nullable=False),
        sa.Column("created_by_identity_type", sa.String(20), nullable=False),
    ]


def upgrade() -> None:
    op.create_table("model_groups", *_owned(), sa.Column("description", sa.Text(), nullable=True), *_created())
    op.create_index("ix_model_groups_account_id", "model_groups", ["account_id"])
    op.create_table(
        "model_templates",
        *_owned(),
        sa.Column("model_type", sa.String(40), nullable=False),
        sa.Column("endpoint_type", sa.String(20), nullable=False),
        sa.Column("endpoint_protocol", sa.String(20), nullable=True),
        sa.Column("vendor_configuration", sa.JSON(), nullable=False),
        sa.Column("model_creation_parameters_schema", sa.JSON(), nullable=True),
        sa.Column("model_request_parameters_schema", sa.JSON(), nullable=True),
        *_created(),
    )
    op.create_index("ix_model_templates_account_id", "model_templates", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_model_templates_account_id", "model_templates")
    op.drop_table("model_templates")
    op.drop_index("ix_model_groups_account_id", "model_groups")
    op.drop_table("model_groups")
