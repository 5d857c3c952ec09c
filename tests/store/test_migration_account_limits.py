"""The accounts' limits migration (0013), up and down, on SQLite and PostgreSQL: an
account made before it has no limits of its own (its keys are counted as before, by
their own limits only); a downgrade drops the columns (on SQLite from 3.35, which drops
a column itself) and keeps the account and everything that refers to it."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.store import accounts, db
from tests.store.test_migration_cached_tokens import _downgrade

NEW_COLUMNS = {"rpm_limit", "tpm_limit", "max_parallel_requests", "max_budget", "budget_duration", "budget_started_at"}
REVISION, BEFORE = "0013", "0012"


def _account_columns(connection: Connection) -> set[str]:
    return {column["name"] for column in inspect(connection).get_columns("accounts")}


@pytest.mark.parametrize(
    "sqlite_version", [sqlite3.sqlite_version_info, (3, 34, 1)], ids=["this-sqlite", "sqlite-3.34"]
)
async def test_account_limit_columns_up_and_down(
    engine: AsyncEngine,
    sqlite_version: tuple[int, int, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An SQLite older than 3.35 (Debian 11's 3.34) keeps the columns on a downgrade, and
    # the next upgrade finds them there.
    monkeypatch.setattr(sqlite3, "sqlite_version_info", sqlite_version)
    await db.upgrade(engine, BEFORE)
    async with engine.begin() as connection:
        assert not NEW_COLUMNS & await connection.run_sync(_account_columns)
        for statement in (
            "INSERT INTO accounts (id, name, created_at) VALUES ('a', 'team', CURRENT_TIMESTAMP)",
            "INSERT INTO identities (id, name, identity_type, default_account_id, created_at)"
            " VALUES ('i', 'ci', 'service_account', 'a', CURRENT_TIMESTAMP)",
            "INSERT INTO memberships (identity_id, account_id, role, created_at)"
            " VALUES ('i', 'a', 'member', CURRENT_TIMESTAMP)",
        ):
            await connection.execute(text(statement))

    await db.upgrade(engine, REVISION)
    async with engine.begin() as connection:
        assert await connection.run_sync(_account_columns) >= NEW_COLUMNS
    await db.upgrade(engine)
    async with db.make_sessions(engine)() as session:
        access = await accounts.account_access(session, identity_id="i", account_id="a")
    assert access is not None and (access.role, access.account_limits) == ("member", None)

    await _downgrade(engine, BEFORE)
    async with engine.begin() as connection:
        left = NEW_COLUMNS & await connection.run_sync(_account_columns)
        native_drop = engine.dialect.name != "sqlite" or sqlite3.sqlite_version_info >= (3, 35)
        assert left == (set() if native_drop else NEW_COLUMNS)
        assert await connection.scalar(text("SELECT role FROM memberships WHERE account_id = 'a'")) == "member"
    await db.upgrade(engine)
    assert await db.schema_is_current(engine)
