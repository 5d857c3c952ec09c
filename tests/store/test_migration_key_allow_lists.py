"""The key allow-list migration, up and down, on SQLite and PostgreSQL: a key made before
it has no lists (it may call every model, as before); a downgrade drops the columns and
keeps the key."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.catalogue.keys import hash_key
from modelport.store import accounts, db
from tests.store.test_migration_cached_tokens import _downgrade
from tests.store.test_migration_key_rotation import _key_columns

NEW_COLUMNS = {"allowed_models", "allowed_deployments"}
SECRET = "mp_made_before_allow_lists_0123456789"
REVISION, BEFORE = "0012", "0011"


async def test_key_allow_list_columns_up_and_down(engine: AsyncEngine) -> None:
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
    await db.upgrade(engine)
    async with db.make_sessions(engine)() as session:
        owner = await accounts.find_key_owner(session, key_hash=hash_key(SECRET))
    assert owner is not None and (owner.key_id, owner.model_allow) == ("k", None)

    await _downgrade(engine, BEFORE)
    async with engine.begin() as connection:
        assert not NEW_COLUMNS & await connection.run_sync(_key_columns)
        assert await connection.scalar(text("SELECT key_hash FROM api_keys WHERE id = 'k'")) == hash_key(SECRET)
    await db.upgrade(engine)
    assert await db.schema_is_current(engine)
