"""Stored responses of the Responses API (`/v1/responses`): kept per account, for
`previous_response_id`, retrieval, deletion and the input items list. Knows no HTTP.

Two bounds (config.py, "Bounds"): a stored response (the answer, its own input items
and the conversation it continued) larger than `max_bytes` is not stored: the answer
is still given and a warning logged (the route refuses beforehand, with a 400, a body
that asked for `store: true` whose input alone is too large). A response older than
`retention_seconds` is gone: never read back, and swept from the table on a later
write (at most once a minute per process).

Another account's response, a deleted one and an expired one are the same 404.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.errors import InvalidRequest, NotFound
from modelport.principal import Principal
from modelport.store import responses

log = logging.getLogger(__name__)

# Seconds between two sweeps of expired responses by one process.
SWEEP_INTERVAL_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class ResponseStoreBounds:
    max_bytes: int = 16 * 1024 * 1024
    retention_seconds: float = 30 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class KeptResponse:
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    conversation: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ItemPage:
    items: list[dict[str, Any]]
    has_more: bool


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", param="response_id")


class StoredResponses:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], bounds: ResponseStoreBounds | None = None) -> None:
        self._sessions = sessions
        self.bounds = bounds or ResponseStoreBounds()
        self._next_sweep = 0.0

    def _not_before(self) -> datetime:
        return datetime.now(UTC) - timedelta(seconds=self.bounds.retention_seconds)

    def fits(self, *parts: Any) -> bool:
        """Whether `parts` (as JSON) fit within a stored response's bound."""
        return len(orjson.dumps(parts)) <= self.bounds.max_bytes

    async def save(
        self,
        principal: Principal,
        *,
        response: dict[str, Any],
        input_items: list[dict[str, Any]],
        conversation: list[dict[str, Any]],
    ) -> bool:
        """Store a response; False (and a warning) when it is over the bound."""
        size = len(orjson.dumps([response, input_items, conversation]))
        if size > self.bounds.max_bytes:
            log.warning(
                "response %s not stored: %d bytes, over MODELPORT_RESPONSES_MAX_STORED_BYTES (%d)",
                response["id"],
                size,
                self.bounds.max_bytes,
            )
            return False
        now = time.monotonic()
        async with self._sessions() as session, session.begin():
            await responses.put_response(
                session,
                response_id=str(response["id"]),
                account_id=principal.account_id,
                created_at=datetime.fromtimestamp(float(response["created_at"]), UTC),
                response=response,
                input_items=input_items,
                conversation=conversation,
            )
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_INTERVAL_SECONDS
            await self.sweep()
        return True

    async def sweep(self) -> int:
        """Delete every account's responses past the retention; how many went."""
        async with self._sessions() as session, session.begin():
            swept = await responses.delete_older_than(session, self._not_before())
        if swept:
            log.info("swept %d stored responses past their retention", swept)
        return swept

    async def get(self, principal: Principal, response_id: str) -> KeptResponse:
        async with self._sessions() as session:
            row = await responses.get_response(
                session, account_id=principal.account_id, response_id=response_id, not_before=self._not_before()
            )
        if row is None:
            raise _not_found(response_id)
        return KeptResponse(response=row.response, input_items=row.input_items, conversation=row.conversation)

    async def delete(self, principal: Principal, response_id: str) -> None:
        async with self._sessions() as session, session.begin():
            if not await responses.delete_response(session, account_id=principal.account_id, response_id=response_id):
                raise _not_found(response_id)

    async def continued(self, principal: Principal, previous_response_id: str) -> list[dict[str, Any]]:
        """The conversation a response continues from: the previous one's, then its output.
        An unknown id (another account's, deleted, expired) is a 400, as OpenAI answers."""
        try:
            previous = await self.get(principal, previous_response_id)
        except NotFound:
            raise InvalidRequest(
                f"Previous response with id '{previous_response_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            ) from None
        return [*previous.conversation, *previous.response.get("output", [])]

    async def input_items(
        self,
        principal: Principal,
        response_id: str,
        *,
        order: Literal["asc", "desc"],
        after: str | None,
        limit: int,
    ) -> ItemPage:
        """A page of a response's own input items (OpenAI's: newest first by default)."""
        items = (await self.get(principal, response_id)).input_items
        if order == "desc":
            items = items[::-1]
        if after is not None:
            ids = [item.get("id") for item in items]
            if after not in ids:
                raise InvalidRequest(f"No input item with id '{after}' in response '{response_id}'.", param="after")
            items = items[ids.index(after) + 1 :]
        return ItemPage(items=items[:limit], has_more=len(items) > limit)
