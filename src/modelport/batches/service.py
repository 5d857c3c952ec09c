"""OpenAI's Batches and Anthropic's Message Batches, per account: create, read, list,
cancel, delete, and an Anthropic batch's results. Knows no HTTP; the runner
(`batches/runner.py`) runs them. Another account's batch is a 404, as a missing one."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.batches.files import ANTHROPIC_REQUESTS, FileStore, Owner
from modelport.errors import InvalidRequest, NotFound
from modelport.principal import Principal
from modelport.schemas import batches as wire
from modelport.store import batches as store
from modelport.store.tables import Batch, BatchLine

COMPLETION_WINDOW = timedelta(hours=24)
# Rows of a batch's lines read at once while answering its results.
RESULTS_PAGE = 500


def owner_of(principal: Principal) -> Owner:
    return Owner(
        account_id=principal.account_id,
        identity_id=principal.identity_id,
        key_id=principal.key_id,
        identity_type=principal.identity_type,
    )


@dataclass(frozen=True, slots=True)
class Counted:
    """A batch and how many of its lines came to each outcome so far."""

    batch: Batch
    counts: dict[str, int]


class Batches:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        files: FileStore,
        on_cancel: Callable[[str], None] | None = None,
    ) -> None:
        """`on_cancel`: told of each batch a cancel was asked for (this replica's runner)."""
        self._sessions = sessions
        self.files = files
        self.on_cancel = on_cancel

    async def create_openai(self, principal: Principal, body: wire.BatchCreate) -> Counted:
        source = await self.files.get(principal.account_id, body.input_file_id)
        if source.purpose != "batch":
            raise InvalidRequest(
                f"file {source.id} has purpose {source.purpose!r}: a batch's input file needs purpose 'batch'",
                param="input_file_id",
            )
        self._check_lines(source.lines)
        batch = self._new(principal, f"batch_{secrets.token_hex(16)}", "openai", body.endpoint, source.id, source.lines)
        batch.batch_metadata = body.metadata
        expiry = body.output_expires_after
        batch.output_expires_after_seconds = expiry.seconds if expiry is not None else None
        async with self._sessions() as session, session.begin():
            await store.add_batch(session, batch)
        return Counted(batch, {})

    async def create_anthropic(self, principal: Principal, body: wire.MessageBatchCreate) -> Counted:
        self._check_lines(len(body.requests))
        seen: set[str] = set()
        for request in body.requests:
            if request.custom_id in seen:
                raise InvalidRequest(f"custom_id {request.custom_id!r} is used by more than one request")
            seen.add(request.custom_id)

        async def requests() -> AsyncIterator[bytes]:
            for request in body.requests:
                yield orjson.dumps(request.model_dump()) + b"\n"

        batch_id = f"msgbatch_{secrets.token_hex(12)}"
        source = await self.files.write(
            owner_of(principal), purpose=ANTHROPIC_REQUESTS, filename=f"{batch_id}.jsonl", chunks=requests()
        )
        batch = self._new(principal, batch_id, "anthropic", wire.MESSAGES_ENDPOINT, source.id, source.lines)
        async with self._sessions() as session, session.begin():
            await store.add_batch(session, batch)
        return Counted(batch, {})

    def _check_lines(self, lines: int) -> None:
        if lines == 0:
            raise InvalidRequest("the batch has no requests", param="input_file_id")
        limit = self.files.bounds.max_lines
        if lines > limit:
            raise InvalidRequest(
                f"the batch has {lines} requests, more than the limit of {limit} (MODELPORT_BATCH_MAX_LINES)"
            )

    @staticmethod
    def _new(principal: Principal, batch_id: str, surface: str, endpoint: str, source: str, lines: int) -> Batch:
        now = datetime.now(UTC)
        return Batch(
            id=batch_id,
            account_id=principal.account_id,
            identity_id=principal.identity_id,
            key_id=principal.key_id,
            surface=surface,
            endpoint=endpoint,
            input_file_id=source,
            completion_window="24h",
            status="validating",
            total=lines,
            completed=0,
            failed=0,
            created_at=now,
            expires_at=now + COMPLETION_WINDOW,
        )

    async def get(self, principal: Principal, batch_id: str, surface: str) -> Counted:
        async with self._sessions() as session:
            batch = await store.get_batch(session, batch_id=batch_id, account_id=principal.account_id)
            if batch is None or batch.surface != surface:
                raise NotFound(_missing(batch_id, surface), param="batch_id")
            return Counted(batch, await store.line_counts(session, batch_id=batch.id))

    async def page(
        self, principal: Principal, surface: str, *, after: str | None, before: str | None, limit: int
    ) -> tuple[list[Counted], bool]:
        """A page of the account's batches, newest first, and whether more follow."""
        async with self._sessions() as session:
            found = await store.list_batches(
                session, account_id=principal.account_id, surface=surface, after=after, before=before, limit=limit + 1
            )
            more = len(found) > limit
            page = found[1:] if before is not None and after is None and more else found[:limit]
            counted = [Counted(batch, await store.line_counts(session, batch_id=batch.id)) for batch in page]
        return counted, more

    async def cancel(self, principal: Principal, batch_id: str, surface: str) -> Counted:
        """Ask the runner to stop the batch (`cancelling`); a finished one is as it was."""
        found = await self.get(principal, batch_id, surface)
        async with self._sessions() as session, session.begin():
            asked = await store.ask_cancel(session, batch_id=found.batch.id, now=datetime.now(UTC))
        if asked and self.on_cancel is not None:
            self.on_cancel(found.batch.id)
        return await self.get(principal, batch_id, surface)

    async def delete(self, principal: Principal, batch_id: str, surface: str) -> None:
        """Delete a finished batch with its lines and its own input (an Anthropic batch's
        requests); a running one must be cancelled first (400)."""
        found = (await self.get(principal, batch_id, surface)).batch
        if found.status in store.UNFINISHED:
            raise InvalidRequest(f"batch {batch_id} is still processing: cancel it first, then delete it")
        async with self._sessions() as session, session.begin():
            await store.delete_batch(session, batch_id=found.id)
            source = await store.get_file(
                session, account_id=found.account_id, file_id=found.input_file_id, include_expired=True
            )
            if source is not None and source.purpose == ANTHROPIC_REQUESTS:
                await store.delete_file(session, file_id=source.id)
        if source is not None and source.purpose == ANTHROPIC_REQUESTS:
            await self.files.remove_stored(source)

    async def anthropic_results(self, principal: Principal, batch_id: str) -> AsyncIterator[bytes]:
        """The results of an ended Anthropic batch, as JSONL, a page of lines at a time."""
        found = (await self.get(principal, batch_id, "anthropic")).batch
        if found.status in store.UNFINISHED:
            raise InvalidRequest(f"batch {batch_id} is still processing: its results are ready when it has ended")
        return self._results(found.id)

    async def _results(self, batch_id: str) -> AsyncIterator[bytes]:
        after = -1
        while True:
            async with self._sessions() as session:
                page = await store.lines_page(session, batch_id=batch_id, after_line=after, limit=RESULTS_PAGE)
            if not page:
                return
            yield b"".join(orjson.dumps(anthropic_result(row)) + b"\n" for row in page)
            after = page[-1].line


def _missing(batch_id: str, surface: str) -> str:
    return f"No batch found with id '{batch_id}'" if surface == "openai" else f"message batch {batch_id} not found"


def anthropic_result(row: BatchLine) -> dict[str, Any]:
    """A line of an Anthropic batch's results."""
    result: dict[str, Any]
    if row.outcome == "succeeded":
        result = {"type": "succeeded", "message": row.body}
    elif row.outcome in ("canceled", "expired"):
        result = {"type": row.outcome}
    elif row.status_code is not None and isinstance(row.body, dict) and row.body.get("type") == "error":
        result = {"type": "errored", "error": row.body}
    else:
        message = (row.error or {}).get("message") or "the request failed"
        result = {
            "type": "errored",
            "error": {"type": "error", "error": {"type": "invalid_request_error", "message": message}},
        }
    return {"custom_id": row.custom_id or "", "result": result}
