"""The files and batches migration (0015), up and down, on SQLite and PostgreSQL: the
four tables appear, match the models (a row of each written and read back through the
store), and go on a downgrade; the rest of the schema stays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.store import batches, db
from modelport.store.tables import Batch, BatchFile, BatchLine
from tests.store.test_migration_cached_tokens import _downgrade

TABLES = {"batch_files", "batch_file_chunks", "batches", "batch_lines"}
REVISION, BEFORE = "0015", "0014"


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_files_and_batches_tables_up_and_down(engine: AsyncEngine) -> None:
    await db.upgrade(engine, BEFORE)
    async with engine.begin() as connection:
        assert not TABLES & await connection.run_sync(_tables)
        await connection.execute(
            text("INSERT INTO accounts (id, name, created_at) VALUES ('a', 'team', CURRENT_TIMESTAMP)")
        )

    await db.upgrade(engine, REVISION)
    async with engine.begin() as connection:
        assert await connection.run_sync(_tables) >= TABLES
    # The models are the newest revision's (0016 added columns to batch_files).
    await db.upgrade(engine)
    now = datetime.now(UTC)
    sessions = db.make_sessions(engine)
    async with sessions() as session, session.begin():
        await batches.add_file(
            session, BatchFile(id="file-1", account_id="a", identity_id="i", purpose="batch", filename="f", size=3)
        )
        await batches.add_chunk(session, file_id="file-1", seq=0, data=b"{}\n")
        await batches.add_batch(
            session,
            Batch(id="batch_1", account_id="a", identity_id="i", surface="openai", endpoint="/v1/chat/completions",
                  input_file_id="file-1", status="validating", total=1, completed=0, failed=0,
                  batch_metadata={"k": "v"}, expires_at=now + timedelta(hours=24)),
        )  # fmt: skip
        await batches.add_lines(
            session, [BatchLine(batch_id="batch_1", line=0, custom_id="c", succeeded=True, outcome="succeeded")]
        )
    async with sessions() as session:
        assert await batches.chunk(session, file_id="file-1", seq=0) == b"{}\n"
        found = await batches.get_batch(session, batch_id="batch_1", account_id="a")
        assert found is not None and found.batch_metadata == {"k": "v"}
        assert await batches.line_counts(session, batch_id="batch_1") == {"succeeded": 1}

    await _downgrade(engine, BEFORE)
    async with engine.begin() as connection:
        remaining = await connection.run_sync(_tables)
    assert not TABLES & remaining and {"accounts", "api_keys"} <= remaining
