"""Usage records, written in batches off the request's hot path.

A request only appends to an in-memory list; a background task writes what has
accumulated every `interval` seconds (or sooner, once `batch_size` records wait) in
one INSERT. Shutdown writes what is left, so a clean stop loses nothing. Each record
carries its request's id, unique in the table: a batch written again after a failure
whose outcome was unclear (the commit went through, its reply was lost) counts once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.catalogue.access import require_admin
from modelport.catalogue.spend import OTHER_KEYS, listable_key_ids
from modelport.errors import ValidationFailed
from modelport.generation import UsageEvent
from modelport.principal import Principal
from modelport.schemas.catalogue import LatencyPercentiles, ModelUsage, UsagePoint, UsageSummary, UsageTotals
from modelport.store import usage

log = logging.getLogger(__name__)

# The most chunks one usage-statistics answer has. The SDK sets no cap; this is what a
# database answers in under a second with the points encoded (10,000 chunks over 200,000
# records: 0.75 s on PostgreSQL on a busy 2-core machine, `benchmarks/usage_statistics.py`).
MAX_CHUNKS = 10_000


class UsageRecorder:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, interval: float = 1.0, batch_size: int = 500
    ) -> None:
        self._sessions = sessions
        self._interval = interval
        self._batch_size = batch_size
        self._pending: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()

    def record(self, event: UsageEvent) -> None:
        self._pending.append(
            {
                "request_id": event.request_id or str(uuid.uuid4()),
                "key_id": event.principal.key_id,
                "cost": event.cost,
                "account_id": event.principal.account_id,
                "deployment_id": event.deployment_id,
                "created_at": datetime.now(UTC),
                "prompt_tokens": event.prompt_tokens,
                "response_tokens": event.response_tokens,
                "status": event.status,
                "latency_ms": round(event.latency_ms),
                "estimated": event.estimated,
                "cached_prompt_tokens": event.cached_prompt_tokens,
                "cache_creation_tokens": event.cache_creation_tokens,
            }
        )
        if len(self._pending) >= self._batch_size:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def flush(self) -> None:
        """Write everything recorded so far."""
        async with self._write_lock:
            batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                async with self._sessions() as session, session.begin():
                    await usage.insert_usage(session, batch)
            except BaseException:
                # Keep the records for the next attempt rather than lose them, also when
                # the writer is cancelled mid-write (at shutdown `close` cancels it, then
                # flushes). Records carry a unique request id and are inserted with
                # ON CONFLICT DO NOTHING, so one written before the cancel is not doubled.
                self._pending[:0] = batch
                raise

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("writing usage records failed; will retry")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()


def _period(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """[start, end) in UTC (a time without a zone is taken as UTC); 422 when empty."""
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    if end <= start:
        raise ValidationFailed("end_date must be after start_date")
    return start, end


def _totals_out(totals: usage.GroupTotals) -> UsageTotals:
    latency = totals.latency_ms
    return UsageTotals(
        requests=totals.requests,
        failures=totals.failures,
        prompt_tokens=totals.prompt_tokens,
        response_tokens=totals.response_tokens,
        spend=totals.cost,
        latency_ms=LatencyPercentiles(p50=latency[50], p95=latency[95], p99=latency[99]) if latency else None,
    )


async def usage_summary(
    sessions: async_sessionmaker[AsyncSession], principal: Principal, *, start: datetime, end: datetime
) -> UsageSummary:
    """The selected account's requests, failures, tokens, spend and latency percentiles
    in [start, end), per deployment and per key. Scoped as `GET /v4/spend` is: an
    admin's to read, each key named only to an admin who may list it."""
    require_admin(principal)
    start, end = _period(start, end)
    visible = await listable_key_ids(sessions, principal)
    account_id = principal.account_id
    async with sessions() as session:
        by_deployment = await usage.usage_totals(
            session, account_id=account_id, start=start, end=end, by="deployment_id"
        )
        by_key = await usage.usage_totals(
            session, account_id=account_id, start=start, end=end, by="key_id", shown=visible, others=OTHER_KEYS
        )
    return UsageSummary(
        account_id=principal.account_id,
        start_date=start,
        end_date=end,
        by_deployment={group: _totals_out(totals) for group, totals in by_deployment.items()},
        by_key={group: _totals_out(totals) for group, totals in by_key.items()},
    )


async def usage_statistics(
    sessions: async_sessionmaker[AsyncSession],
    *,
    account_id: str,
    deployment_id: str | Sequence[str],
    start: datetime,
    end: datetime,
    chunks: int,
) -> ModelUsage:
    start, end = _period(start, end)
    if not 1 <= chunks <= MAX_CHUNKS:
        raise ValidationFailed(f"chunks must be between 1 and {MAX_CHUNKS}")
    async with sessions() as session:
        sums = await usage.usage_by_chunk(
            session, account_id=account_id, deployment_id=deployment_id, start=start, end=end, chunks=chunks
        )
    width = (end - start) / chunks
    points = []
    for index in range(chunks):
        prompt, response = sums.get(index, (0, 0))
        points.append(
            UsagePoint(
                date=start + width * index,
                prompt_tokens=prompt,
                response_tokens=response,
                summary_tokens=prompt + response,
            )
        )
    return ModelUsage(data=points, start_date=start, end_date=end)


class UsageStatistics:
    """Token usage per chunk of time, of the deployments a caller names (one, a
    model's, a group's). Usage is written in batches off the hot path; a read first
    writes what this process has pending, so it includes the calls made just before."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], recorder: UsageRecorder) -> None:
        self._sessions = sessions
        self._recorder = recorder

    async def of(
        self,
        principal: Principal,
        deployment_id: str | Sequence[str],
        *,
        start: datetime,
        end: datetime,
        chunks: int,
    ) -> ModelUsage:
        await self._recorder.flush()
        return await usage_statistics(
            self._sessions,
            account_id=principal.account_id,
            deployment_id=deployment_id,
            start=start,
            end=end,
            chunks=chunks,
        )

    async def summary(self, principal: Principal, *, start: datetime, end: datetime) -> UsageSummary:
        await self._recorder.flush()
        return await usage_summary(self._sessions, principal, start=start, end=end)


__all__ = ["UsageRecorder", "UsageStatistics", "usage_statistics", "usage_summary"]
