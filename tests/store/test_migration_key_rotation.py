"""The key expiry and rotation migration, up and down, on SQLite and PostgreSQL: a key
made before it never expires, was never rotated and still finds its owner; a downgrade
gives back the table the revision before it had, the key kept."""

from __future__ import annotations

import ast

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.catalogue.keys import hash_key
from modelport.store import accounts, db
from tests.store.test_migration_cached_tokens import _downgrade  # Alembic's downgrade, on one connection

NEW_COLUMNS = {"expires_at", "previous_key_hash", "previous_key_retired_at"}
SECRET = "mp_made_before_rotation_0123456789"


def _revisions() -> tuple[str, str]:
    """This migration's revision and the one before it, read from its file."""
    [path] = (db.MIGRATIONS / "versions").glob("*_key_expiry_and_rotation.py")
    found: dict[str, str] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            found.update({target.id: node.value.value for target in node.targets if isinstance(target, ast.Name)})
    return found["revision"], found["down_revision"]


REVISION, BEFORE = _revisions()


def _key_columns(connection: Connection) -> set[str]:
    return {column["name"] for column in inspect(connection).get_columns("api_keys")}


def _key_indexes(connection: Connection) -> set[str]:
    return {str(index["name"]) for index in inspect(connection).get_indexes("api_keys")}


async def test_key_expiry_and_rotation_columns_up_and_down(engine: AsyncEngine) -> None:
    await db.upgrade(engine, BEFORE)
    async with engine.begin() as connection:
        assert not NEW_COLUMNS & await connection.run_sync(_key_columns)
        for statement in (
            "INSERT INTO accounts (id, name, created_at) VALUES ('a', 'team', CURRENT_TIMESTAMP)",
            "INSERT INTO identities (id, name, identity_type, default_account_id, created_at)"
            " VALUES ('i', 'ci', 'service_account', 'a', CURRENT_TIMESTAMP)",
            "INSERT INTO memberships (identity_id, account_id, role, created_at)"
            " VALUES ('i', 'a', 'member', CURRENT_TIMESTAMP)",
            "INSERT INTO api_keys (id, identity_id, key_hash, display_prefix, name, created_at)"
            f" VALUES ('k', 'i', '{hash_key(SECRET)}', 'mp_made_be', 'ci', CURRENT_TIMESTAMP)",
        ):
            await connection.execute(text(statement))

    await db.upgrade(engine, REVISION)
    async with engine.begin() as connection:
        assert await connection.run_sync(_key_columns) >= NEW_COLUMNS
        assert "ix_api_keys_previous_key_hash" in await connection.run_sync(_key_indexes)
    await db.upgrade(engine)  # the head, which the tables of the code are
    async with db.make_sessions(engine)() as session:
        owner = await accounts.find_key_owner(session, key_hash=hash_key(SECRET))
    assert owner is not None and (owner.key_id, owner.expires_at, owner.retires_at) == ("k", None, None)

    await _downgrade(engine, BEFORE)
    async with engine.begin() as connection:
        assert not NEW_COLUMNS & await connection.run_sync(_key_columns)
        assert "ix_api_keys_previous_key_hash" not in await connection.run_sync(_key_indexes)
        kept = await connection.scalar(text("SELECT key_hash FROM api_keys WHERE id = 'k'"))
        assert kept == hash_key(SECRET)
    await db.upgrade(engine)  # and up again to the head
    assert await db.schema_is_current(engine)
