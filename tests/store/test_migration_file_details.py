"""The file details migration (0016), up and down, on SQLite and PostgreSQL: a file
stored before it (with its bytes and the batch reading it) is kept and reads with no
checksum, the default media type and no expiry, and the batch with no model and no
output expiry; a downgrade drops the columns and keeps the file, its bytes and the batch."""

from __future__ import annotations

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.batches.views import sgp_file
from modelport.store import batches, db
from tests.store.test_migration_cached_tokens import _downgrade

NEW_COLUMNS = {"md5_checksum", "mime_type", "created_by_identity_type", "expires_at"}
NEW_BATCH_COLUMNS = {"model", "output_expires_after_seconds"}
REVISION, BEFORE = "0016", "0015"


def _file_columns(connection: Connection) -> set[str]:
    return {column["name"] for column in inspect(connection).get_columns("batch_files")}


def _batch_columns(connection: Connection) -> set[str]:
    return {column["name"] for column in inspect(connection).get_columns("batches")}


async def test_file_detail_columns_up_and_down(engine: AsyncEngine) -> None:
    await db.upgrade(engine, BEFORE)
    async with engine.begin() as connection:
        assert not NEW_COLUMNS & await connection.run_sync(_file_columns)
        assert not NEW_BATCH_COLUMNS & await connection.run_sync(_batch_columns)
        for statement in (
            "INSERT INTO accounts (id, name, created_at) VALUES ('a', 'team', CURRENT_TIMESTAMP)",
            "INSERT INTO batch_files (id, account_id, identity_id, purpose, filename, bytes, lines, status, created_at)"
            " VALUES ('file-1', 'a', 'i', 'batch', 'in.jsonl', 3, 1, 'processed', CURRENT_TIMESTAMP)",
            "INSERT INTO batch_file_chunks (file_id, seq, data) VALUES ('file-1', 0, :data)",
            "INSERT INTO batches (id, account_id, identity_id, surface, endpoint, input_file_id, status, total,"
            " completion_window, completed, failed, expires_at, created_at) VALUES ('batch_1', 'a', 'i', 'openai',"
            " '/v1/chat/completions', 'file-1', 'validating', 1, '24h', 0, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
        ):
            await connection.execute(text(statement), {"data": b"{}\n"} if ":data" in statement else {})

    await db.upgrade(engine, REVISION)
    async with engine.begin() as connection:
        assert await connection.run_sync(_file_columns) >= NEW_COLUMNS
        assert await connection.run_sync(_batch_columns) >= NEW_BATCH_COLUMNS
    async with db.make_sessions(engine)() as session:
        found = await batches.get_file(session, account_id="a", file_id="file-1")
        assert found is not None and await batches.chunk(session, file_id="file-1", seq=0) == b"{}\n"
        batch = await batches.get_batch(session, batch_id="batch_1")
        assert batch is not None and (batch.model, batch.output_expires_after_seconds) == (None, None)
    shown = sgp_file(found)
    assert (shown.md5_checksum, shown.mime_type, found.expires_at) == ("", "application/octet-stream", None)
    assert shown.created_by.type == "service_account"

    await _downgrade(engine, BEFORE)
    async with engine.begin() as connection:
        assert not NEW_COLUMNS & await connection.run_sync(_file_columns)
        assert not NEW_BATCH_COLUMNS & await connection.run_sync(_batch_columns)
        assert await connection.scalar(text("SELECT input_file_id FROM batches WHERE id = 'batch_1'")) == "file-1"
        assert await connection.scalar(text("SELECT bytes FROM batch_files WHERE id = 'file-1'")) == 3
        assert await connection.scalar(text("SELECT count(*) FROM batch_file_chunks")) == 1
    await db.upgrade(engine)
    assert await db.schema_is_current(engine)
