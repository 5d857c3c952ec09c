"""Alembic environment. modelport hands it an open connection (see store/db.py)."""

from __future__ import annotations

from alembic import context

from modelport.store.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `modelport db upgrade`, which supplies the connection")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
