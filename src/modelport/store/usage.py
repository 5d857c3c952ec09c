"""Usage records: written in batches, summed for spend and usage statistics."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Float, and_, case, func, insert, literal, or_, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.ext.asyncio import AsyncSession

from modelport.store.tables import UsageRecord


async def insert_usage(session: AsyncSession, records: list[dict[str, Any]]) -> None:
    """Insert usage records (all with the same fields); one whose request_id is already
    stored is skipped, so a batch written again after an unclear failure (a lost commit
    reply) counts once."""
    if not records:
        return
    dialect = session.bind.dialect.name if session.bind is not None else ""
    if dialect == "sqlite":
        await _insert_usage_sqlite(session, records)
        return
    if dialect == "postgresql":
        statement: Any = postgresql_insert(UsageRecord).on_conflict_do_nothing(index_elements=["request_id"])
    else:
        statement = insert(UsageRecord)
    await session.execute(statement, records)


# Rows per INSERT statement: 13 fields each, 6,500 parameters, within SQLite's 32,766.
_SQLITE_ROWS_PER_INSERT = 500


async def _insert_usage_sqlite(session: AsyncSession, records: list[dict[str, Any]]) -> None:
    """Many rows per statement, not one statement run once per row (executemany).

    aiosqlite runs SQLite in its own thread, and Python's sqlite3 lets go of the GIL
    for every row it steps through; each time it must win the GIL back from the serving
    loop, which under load holds it for up to the 5 ms switch interval. A batch of
    1,000 records took about a second to write at 1,150 requests/s, less than the rate
    they came in, so records (and memory) piled up as long as the load lasted. One
    statement per 500 rows lets go of the GIL once per statement. The values are
    encoded by the columns' own SQLAlchemy types, as an ORM insert would store them.
    """
    table = UsageRecord.__table__
    fields = list(records[0])
    dialect = session.get_bind().dialect
    encoders = [table.c[name].type.bind_processor(dialect) for name in fields]
    row = "(" + ", ".join("?" * len(fields)) + ")"
    connection = await session.connection()
    for start in range(0, len(records), _SQLITE_ROWS_PER_INSERT):
        chunk = records[start : start + _SQLITE_ROWS_PER_INSERT]
        values: list[Any] = []
        for record in chunk:
            for name, encode in zip(fields, encoders, strict=True):
                value = record[name]
                values.append(encode(value) if encode is not None and value is not None else value)
        sql = (
            f"INSERT INTO {UsageRecord.__tablename__} ({', '.join(fields)}) VALUES {', '.join([row] * len(chunk))} "
            "ON CONFLICT (request_id) DO NOTHING"
        )
        await connection.exec_driver_sql(sql, tuple(values))


async def spend_since(session: AsyncSession, *, scope: str, owner_id: str, since: datetime) -> float:
    """What a key (`scope` "key") or an account ("account") spent since `since`."""
    owner = UsageRecord.key_id if scope == "key" else UsageRecord.account_id
    total = await session.scalar(
        select(func.coalesce(func.sum(UsageRecord.cost), 0.0)).where(owner == owner_id, UsageRecord.created_at >= since)
    )
    return float(total or 0.0)


# Owners summed by one query of `spend_in_windows`: each is two bound parameters, and
# SQLite allows 32,766 of them (PostgreSQL 65,535).
WINDOWS_PER_QUERY = 500


async def spend_in_windows(session: AsyncSession, *, scope: str, since: Mapping[str, datetime]) -> dict[str, float]:
    """What each key (`scope` "key") or account spent since its own moment in `since`, in
    one query per WINDOWS_PER_QUERY owners (an account's budgeted keys each have a window
    of their own); an owner with no usage in its window maps to 0."""
    owner = UsageRecord.key_id if scope == "key" else UsageRecord.account_id
    spent = dict.fromkeys(since, 0.0)
    owners = list(since.items())
    for first in range(0, len(owners), WINDOWS_PER_QUERY):
        part = owners[first : first + WINDOWS_PER_QUERY]
        rows = await session.execute(
            select(owner, func.sum(UsageRecord.cost))
            .where(or_(*(and_(owner == owner_id, UsageRecord.created_at >= moment) for owner_id, moment in part)))
            .group_by(owner)
        )
        spent.update({str(owner_id): float(total or 0.0) for owner_id, total in rows.all()})
    return spent


async def spend_by_key(session: AsyncSession, *, key_ids: Sequence[str]) -> dict[str, float]:
    """Each key's spend: the sum of its usage records' costs, in every account."""
    if not key_ids:
        return {}
    rows = await session.execute(
        select(UsageRecord.key_id, func.sum(UsageRecord.cost))
        .where(UsageRecord.key_id.in_(key_ids))
        .group_by(UsageRecord.key_id)
    )
    return {str(key_id): float(total or 0.0) for key_id, total in rows.all()}


async def account_spend(session: AsyncSession, *, account_id: str, by: str) -> dict[str, float]:
    """The account's spend grouped by "key_id" or "deployment_id" (a key-less record, from
    before spend was kept, groups under "")."""
    column = UsageRecord.key_id if by == "key_id" else UsageRecord.deployment_id
    rows = await session.execute(
        select(column, func.sum(UsageRecord.cost)).where(UsageRecord.account_id == account_id).group_by(column)
    )
    return {str(group or ""): float(total or 0.0) for group, total in rows.all()}


def _epoch_seconds(session: AsyncSession, column: Any) -> Any:
    # The one place where the SQL differs between SQLite and PostgreSQL.
    if session.bind is not None and session.bind.dialect.name == "sqlite":
        return func.cast(func.strftime("%s", column), Float) + (
            func.cast(func.strftime("%f", column), Float) - func.cast(func.strftime("%S", column), Float)
        )
    return func.extract("epoch", column)


async def usage_by_chunk(
    session: AsyncSession,
    *,
    account_id: str,
    deployment_id: str | Sequence[str],
    start: datetime,
    end: datetime,
    chunks: int,
) -> dict[int, tuple[int, int]]:
    """Sums of prompt and response tokens of one or several deployments per chunk of
    [start, end), by chunk index."""
    deployment_ids = [deployment_id] if isinstance(deployment_id, str) else list(deployment_id)
    width = (end - start).total_seconds() / chunks
    bucket = func.floor((_epoch_seconds(session, UsageRecord.created_at) - start.timestamp()) / width)
    rows = await session.execute(
        select(bucket, func.sum(UsageRecord.prompt_tokens), func.sum(UsageRecord.response_tokens))
        .where(
            UsageRecord.account_id == account_id,
            UsageRecord.deployment_id.in_(deployment_ids),
            UsageRecord.created_at >= start,
            UsageRecord.created_at < end,
        )
        .group_by(bucket)
    )
    sums: dict[int, tuple[int, int]] = {}
    for index, prompt, response in rows.all():
        position = min(max(int(index), 0), chunks - 1)
        before = sums.get(position, (0, 0))
        sums[position] = (before[0] + int(prompt or 0), before[1] + int(response or 0))
    return sums


# The latency percentiles a summary reports, by the nearest-rank method: the p-th is
# the latency at rank ceil(p * n / 100) of the n successful requests, lowest first, so
# each one is a latency some request really had.
LATENCY_PERCENTILES = (50, 95, 99)


@dataclass(frozen=True, slots=True)
class GroupTotals:
    """A group's requests in a period: counts, tokens, cost, and the latency
    percentiles of its successful requests (empty when none succeeded)."""

    requests: int
    failures: int  # answered with a status of 400 or more
    prompt_tokens: int
    response_tokens: int
    cost: float
    latency_ms: dict[int, int] = field(default_factory=dict)  # percentile -> milliseconds


async def usage_totals(
    session: AsyncSession,
    *,
    account_id: str,
    start: datetime,
    end: datetime,
    by: str,
    shown: Collection[str] | None = None,
    others: str = "",
) -> dict[str, GroupTotals]:
    """The account's requests in [start, end) grouped by "key_id" or "deployment_id".
    With `shown`, the groups outside it are reported together under `others` (a
    key-less record, from before keys were recorded, stays under "").

    Percentiles are computed in the database (a window function per group, the same SQL
    on SQLite and PostgreSQL), so only three rows per group come back however many
    requests the period holds."""
    column = UsageRecord.key_id if by == "key_id" else UsageRecord.deployment_id
    group: Any = func.coalesce(column, "")
    if shown is not None:
        group = case((column.is_(None), ""), (column.in_(list(shown)), column), else_=literal(others))
    # The grouping is a column of a subquery: PostgreSQL refuses to group by an expression
    # whose bound parameters are rendered apart from the selected one.
    rows = (
        select(
            group.label("grp"),
            UsageRecord.status,
            UsageRecord.prompt_tokens,
            UsageRecord.response_tokens,
            UsageRecord.cost,
            UsageRecord.latency_ms,
        )
        .where(UsageRecord.account_id == account_id, UsageRecord.created_at >= start, UsageRecord.created_at < end)
        .subquery()
    )
    sums = await session.execute(
        select(
            rows.c.grp,
            func.count(),
            func.sum(case((rows.c.status >= 400, 1), else_=0)),
            func.sum(rows.c.prompt_tokens),
            func.sum(rows.c.response_tokens),
            func.sum(rows.c.cost),
        ).group_by(rows.c.grp)
    )
    totals = {
        str(grp): GroupTotals(int(count), int(failed or 0), int(prompt or 0), int(response or 0), float(cost or 0.0))
        for grp, count, failed, prompt, response, cost in sums.all()
    }
    ranked = (
        select(
            rows.c.grp,
            rows.c.latency_ms,
            func.row_number().over(partition_by=rows.c.grp, order_by=rows.c.latency_ms).label("rank"),
            func.count().over(partition_by=rows.c.grp).label("n"),
        )
        .where(rows.c.status < 400)
        .subquery()
    )
    # ceil(p * n / 100) in integer arithmetic, which both databases do alike.
    wanted = [(percentile * ranked.c.n + 99) // 100 for percentile in LATENCY_PERCENTILES]
    picked = await session.execute(
        select(ranked.c.grp, ranked.c.n, ranked.c.rank, ranked.c.latency_ms).where(
            or_(*(ranked.c.rank == rank for rank in wanted))
        )
    )
    for grp, count, rank, latency in picked.all():
        for percentile in LATENCY_PERCENTILES:
            if (percentile * int(count) + 99) // 100 == int(rank):
                totals[str(grp)].latency_ms[percentile] = int(latency)
    return totals
