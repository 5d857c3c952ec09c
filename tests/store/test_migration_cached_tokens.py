"""The cached-tokens migration on usage records, up and down, on SQLite and PostgreSQL:
records written before it read 0 cached tokens, and a downgrade gives back the table
the revision before it had."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.store import db
from tests.conftest import POSTGRES_SERVER
from tests.prerequisites import unavailable


def _revisions() -> tuple[str, str]:
    """This migration's revision and the one before it, read from its file: the test
    follows it wherever the chain places it."""
    import ast

    [path] = (db.MIGRATIONS / "versions").glob("*_cached_tokens.py")
    found: dict[str, str] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            found.update({target.id: node.value.value for target in node.targets if isinstance(target, ast.Name)})
    return found["revision"], found["down_revision"]


REVISION, BEFORE = _revisions()
CACHE_COLUMNS = {"cached_prompt_tokens", "cache_creation_tokens"}


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An empty database of each kind, of this test's own."""
    if request.param == "sqlite":
        made = db.make_engine(f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}")
        yield made
        await made.dispose()
        return
    import asyncpg

    try:
        admin = await asyncpg.connect(POSTGRES_SERVER, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable("POSTGRES", f"PostgreSQL leg not run: no server at {POSTGRES_SERVER} ({exc})")
    name = f"modelport_migration_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_SERVER.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    made = db.make_engine(f"{base}/{name}")
    try:
        yield made
    finally:
        await made.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _usage_columns(connection: Connection) -> set[str]:
    return {column["name"] for column in inspect(connection).get_columns("usage_records")}


async def _downgrade(engine: AsyncEngine, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    def _run(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(db.MIGRATIONS))
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(_run)


async def test_cached_token_columns_up_and_down(engine: AsyncEngine) -> None:
    await db.upgrade(engine, BEFORE)
    async with engine.begin() as connection:
        assert not CACHE_COLUMNS & await connection.run_sync(_usage_columns)
        await connection.execute(
            text(
                "INSERT INTO usage_records (account_id, deployment_id, created_at, prompt_tokens, response_tokens,"
                " status, latency_ms, estimated, cost, request_id) VALUES ('a', 'd', CURRENT_TIMESTAMP, 10, 2,"
                " 200, 5, false, 0.5, 'before-cache-columns')"
            )
        )
    await db.upgrade(engine, REVISION)
    assert await db.current_revision(engine) == REVISION
    async with engine.begin() as connection:
        assert await connection.run_sync(_usage_columns) >= CACHE_COLUMNS
        before = (
            await connection.execute(
                text("SELECT cached_prompt_tokens, cache_creation_tokens FROM usage_records WHERE request_id = :id"),
                {"id": "before-cache-columns"},
            )
        ).one()
        assert tuple(before) == (0, 0)  # a record from before counted no cache
    await _downgrade(engine, BEFORE)
    assert await db.current_revision(engine) == BEFORE
    async with engine.begin() as connection:
        assert not CACHE_COLUMNS & await connection.run_sync(_usage_columns)
        kept = await connection.scalar(
            text("SELECT prompt_tokens FROM usage_records WHERE request_id = :id"), {"id": "before-cache-columns"}
        )
        assert kept == 10
    await db.upgrade(engine)  # and up again to the head
    assert await db.schema_is_current(engine)
