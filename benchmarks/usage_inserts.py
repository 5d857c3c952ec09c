"""What writing one usage record costs as the usage table grows, by how its request ids
are drawn: at random (UUID version 4, modelport before this benchmark) or in time order
(version 7, `observability.ids.uuid_text`). Every request writes one; the table is unique
by its id.

    .venv/bin/python benchmarks/usage_inserts.py [--rows 1000000] [--postgres URL]

Each kind of id fills a fresh database (a SQLite file with modelport's own pragmas, or the
PostgreSQL database at URL, emptied first) through modelport's `UsageRecorder`, in
batches of 500 as its writer takes them, and prints the CPU per row for each tenth of the
rows: this process's (where the SQLite library runs, in aiosqlite's thread), and with
--postgres also the database server's (every process named `postgres` on this machine).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from modelport.catalogue.usage import UsageRecorder
from modelport.generation import UsageEvent
from modelport.observability.ids import uuid_text
from modelport.principal import IdentityType, Principal, Role
from modelport.store.db import make_engine, make_sessions
from modelport.store.tables import Base

BATCH = 500
_draw = random.Random()
TICKS = os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU seconds of every `postgres` process on this machine (0 without one)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, fields = stat.read_text().split(" (", 1)[1].rsplit(")", 1)
        except (OSError, ValueError):
            continue
        if name == "postgres":
            user, system = fields.split()[11:13]
            total += int(user) + int(system)
    return total / TICKS


def random_id() -> str:
    """What modelport drew before: a version 4 UUID."""
    return str(uuid.UUID(int=_draw.getrandbits(128), version=4))


IDS: dict[str, Callable[[], str]] = {"random (v4)": random_id, "time-ordered (v7)": uuid_text}


async def fill(url: str, rows: int, draw: Callable[[], str]) -> list[tuple[float, float]]:
    """(this process's, the database server's) CPU µs per row for each tenth of `rows`."""
    engine = make_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.drop_all)
        await connection.run_sync(Base.metadata.create_all)
    recorder = UsageRecorder(make_sessions(engine), batch_size=10 * rows)  # flushed here, by hand
    principal = Principal(str(uuid.uuid4()), IdentityType.SERVICE_ACCOUNT, str(uuid.uuid4()), Role.MEMBER,
                          key_id=str(uuid.uuid4()))  # fmt: skip
    deployment = str(uuid.uuid4())
    tenth, costs = rows // 10, []
    started, server_started = time.process_time(), postgres_cpu_seconds()
    for written in range(BATCH, rows + 1, BATCH):
        for _ in range(BATCH):
            recorder.record(UsageEvent(principal=principal, deployment_id=deployment, prompt_tokens=12,
                                       response_tokens=9, status=200, latency_ms=3.0, cost=2.4e-5,
                                       request_id=draw()))  # fmt: skip
        await recorder.flush()
        if written % tenth == 0:
            now, server_now = time.process_time(), postgres_cpu_seconds()
            costs.append((1e6 * (now - started) / tenth, 1e6 * (server_now - server_started) / tenth))
            started, server_started = now, server_now
    await engine.dispose()
    return costs


async def main(rows: int, postgres: str | None) -> None:
    results = {}
    for name, draw in IDS.items():
        url = postgres or f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'usage.db'}"
        results[name] = await fill(url, rows, draw)
    print(f"CPU µs per usage record written, {'PostgreSQL' if postgres else 'SQLite'}, by rows in the table")
    columns = [f"{name}{', modelport' if postgres else ''}" for name in results]
    if postgres:
        columns += [f"{name}, database server" for name in results]
    print("| rows | " + " | ".join(columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for index in range(10):
        cells = [costs[index][0] for costs in results.values()]
        if postgres:
            cells += [costs[index][1] for costs in results.values()]
        print(f"| {(index + 1) * rows // 10:,} | " + " | ".join(f"{cell:.1f}" for cell in cells) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--postgres", help="a PostgreSQL URL (postgresql+asyncpg://...) to empty, fill and measure")
    arguments = parser.parse_args()
    if arguments.rows <= 0 or arguments.rows % (10 * BATCH):
        parser.error(f"--rows: a positive multiple of {10 * BATCH} (ten tenths of whole batches)")
    asyncio.run(main(arguments.rows, arguments.postgres))
