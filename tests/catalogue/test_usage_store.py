"""Usage records as the batch writer stores them, read back as every query reads them,
on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

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
