"""How many `chunks` one usage-statistics request may ask for (issue 26): the time to
sum a deployment's usage records per chunk and encode the answer, by chunk count.

    .venv/bin/python benchmarks/usage_statistics.py [--records 200000] [--postgres URL]

Fills a fresh database (a SQLite file, or the PostgreSQL database at URL, which it
empties first) with `--records` usage records of one deployment spread over 30 days,
then times `usage_statistics` for the whole 30 days at each chunk count, median of 3,
including the JSON encoding the HTTP layer does.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from modelport.catalogue import usage as usage_catalogue
from modelport.catalogue.usage import usage_statistics
from modelport.store.tables import Base, UsageRecord

CHUNK_COUNTS = (1_000, 10_000, 50_000, 100_000)


async def main(records: int, postgres: str | None) -> None:
    url = postgres or f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'usage.db'}"
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.drop_all)
        await connection.run_sync(Base.metadata.create_all)
    end = datetime.now(UTC)
    start = end - timedelta(days=30)
    step = (end - start) / records
    rows = [
        {
            "account_id": "a",
            "deployment_id": "d",
            "created_at": start + step * index,
            "prompt_tokens": 10,
            "response_tokens": 5,
            "status": 200,
            "latency_ms": 100,
            "request_id": f"r{index}",
        }
        for index in range(records)
    ]
    async with engine.begin() as connection:
        for offset in range(0, records, 5000):
            await connection.execute(insert(UsageRecord), rows[offset : offset + 5000])
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    usage_catalogue.MAX_CHUNKS = max(CHUNK_COUNTS)  # measured past the cap, to choose it
    print(f"{records} records over 30 days, {engine.dialect.name}")
    print("| chunks | median seconds (query + points + JSON) | answer bytes |")
    print("| --- | --- | --- |")
    for chunks in CHUNK_COUNTS:
        times, size = [], 0
        for _ in range(3):
            began = time.perf_counter()
            answer = await usage_statistics(
                sessions, account_id="a", deployment_id="d", start=start, end=end, chunks=chunks
            )
            size = len(answer.model_dump_json())
            times.append(time.perf_counter() - began)
        print(f"| {chunks} | {statistics.median(times):.3f} | {size} |")
    await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--postgres", help="a PostgreSQL URL (postgresql+asyncpg://...) to fill and measure")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.records, arguments.postgres))
