"""what the SGP SDK's files show (checksum, media type, creator's kind), when a file
expires, and a batch's model and output expiry

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 09:40:00
"""

import sqlite3
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_FILE_COLUMNS = ("md5_checksum", "mime_type", "created_by_identity_type", "expires_at")
_BATCH_COLUMNS = ("model", "output_expires_after_seconds")


def _add_missing(table: str, columns: list[sa.Column[Any]]) -> None:
    # A column already there was kept by a downgrade on an SQLite older than 3.35 (see
    # below). Plain ADD COLUMN, not alembic's batch mode: on SQLite that copies and drops
    # the table, which the foreign keys of the chunks, batches and lines make fail.
    present = {column["name"] for column in sa.inspect(op.get_bind()).get_columns(table)}
    for column in columns:
        if column.name not in present:
            op.add_column(table, column)


def upgrade() -> None:
    # Nullable: files stored before this revision have no checksum or media type (they
    # read as "" and application/octet-stream) and never expire; batches made before it
    # show no model and keep their output files until deleted.
    _add_missing(
        "batch_files",
        [
            sa.Column("md5_checksum", sa.String(length=32), nullable=True),
            sa.Column("mime_type", sa.String(length=255), nullable=True),
            sa.Column("created_by_identity_type", sa.String(length=20), nullable=True),
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        ],
    )
    _add_missing(
        "batches",
        [
            sa.Column("model", sa.String(length=255), nullable=True),
            sa.Column("output_expires_after_seconds", sa.Integer(), nullable=True),
        ],
    )
    op.create_index("ix_batch_files_expires", "batch_files", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_batch_files_expires", table_name="batch_files")
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        # An older SQLite cannot drop a column; these stay, nullable and unread by the
        # code of revision 0015.
        return
    for column in _FILE_COLUMNS:
        op.drop_column("batch_files", column)
    for column in _BATCH_COLUMNS:
        op.drop_column("batches", column)
