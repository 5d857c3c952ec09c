"""Usage records as the batch writer stores them, read back as every query reads them,
on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select

from modelport.store import db, usage
from modelport.store.tables import UsageRecord


def _record(at: datetime, index: int, *, key_id: str | None) -> dict[str, Any]:
    # The fields UsageRecorder.record writes, in its order.
    return {
        "request_id": str(uuid.uuid4()),
        "key_id": key_id,
        "cost": 0.25,
        "account_id": "acct-usage-store",
        "deployment_id": "dep-usage-store",
        "created_at": at + timedelta(milliseconds=index, microseconds=7),  # stored to the microsecond
        "prompt_tokens": 3,
        "response_tokens": 4,
        "status": 200 if index % 2 else 499,
        "latency_ms": index,
        "estimated": index % 3 == 0,
    }


async def test_a_batch_larger_than_one_statement_is_stored_whole_and_once(database_url: str) -> None:
    engine = db.make_engine(database_url)
    try:
        if not await db.schema_is_current(engine):
            await db.upgrade(engine)
        sessions = db.make_sessions(engine)
        start = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
        records = [_record(start, index, key_id="key-usage-store" if index % 2 else None) for index in range(1234)]
        async with sessions() as session, session.begin():
            await usage.insert_usage(session, records)
        async with sessions() as session, session.begin():  # written again after an unclear failure
            await usage.insert_usage(session, records[:600])

        async with sessions() as session:
            mine = select(UsageRecord).where(UsageRecord.account_id == "acct-usage-store")
            stored = {row.request_id: row for row in await session.scalars(mine)}
            assert len(stored) == len(records)
            for record in records:
                row = stored[record["request_id"]]
                assert row.created_at.replace(tzinfo=UTC) == record["created_at"]
                assert (row.key_id, row.estimated, row.status, row.latency_ms) == (
                    record["key_id"],
                    record["estimated"],
                    record["status"],
                    record["latency_ms"],
                )
                assert row.cost == record["cost"]
            # The queries compare times in SQL: the stored form must be the one they expect.
            sums = await usage.usage_by_chunk(
                session,
                account_id="acct-usage-store",
                deployment_id="dep-usage-store",
                start=start,
                end=start + timedelta(seconds=2),
                chunks=2,
            )
            assert sums == {0: (1000 * 3, 1000 * 4), 1: (234 * 3, 234 * 4)}
            since = start + timedelta(seconds=1)
            spent = await usage.spend_since(session, scope="key", owner_id="key-usage-store", since=since)
            assert spent == 0.25 * 117  # the odd indexes from 1001 to 1233
            total = await session.scalar(
                select(func.count()).select_from(UsageRecord).where(UsageRecord.account_id == "acct-usage-store")
            )
            assert total == 1234
    finally:
        await engine.dispose()


async def test_each_owner_is_summed_over_its_own_window_in_one_query_per_batch(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`/v4/spend` shows every budgeted key's window: each key's spend since its own
    window's start, in one query per WINDOWS_PER_QUERY keys, not one per key."""
    engine = db.make_engine(database_url)
    try:
        if not await db.schema_is_current(engine):
            await db.upgrade(engine)
        sessions = db.make_sessions(engine)
        start = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
        keys = [f"key-windows-{uuid.uuid4().hex[:8]}-{index}" for index in range(5)]
        # Key i has records at seconds 0..i; its window starts at second i // 2.
        records = [
            _record(start + timedelta(seconds=second), second, key_id=key)
            for i, key in enumerate(keys)
            for second in range(i + 1)
        ]
        async with sessions() as session, session.begin():
            await usage.insert_usage(session, records)
        windows = {key: start + timedelta(seconds=i // 2) for i, key in enumerate(keys)}
        windows["key-windows-without-usage"] = start

        statements: list[str] = []

        def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if "usage_records" in statement:
                statements.append(statement)

        monkeypatch.setattr(usage, "WINDOWS_PER_QUERY", 2)
        event.listen(engine.sync_engine, "before_cursor_execute", count)
        async with sessions() as session:
            spent = await usage.spend_in_windows(session, scope="key", since=windows)
        event.remove(engine.sync_engine, "before_cursor_execute", count)

        assert len(statements) == 3  # six owners, two a query
        assert spent == {key: 0.25 * (i + 1 - i // 2) for i, key in enumerate(keys)} | {
            "key-windows-without-usage": 0.0
        }
        async with sessions() as session:  # the same as asking for each alone
            for key, since in windows.items():
                assert spent[key] == await usage.spend_since(session, scope="key", owner_id=key, since=since)
    finally:
        await engine.dispose()
