"""Stored responses of the Responses API, per account (`catalogue/responses.py` decides
what is stored and for how long; this is only the SQL)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from modelport.store.tables import StoredResponse


async def put_response(
    session: AsyncSession,
    *,
    response_id: str,
    account_id: str,
    created_at: datetime,
    response: dict[str, Any],
    input_items: list[Any],
    conversation: list[Any],
) -> None:
    session.add(
        StoredResponse(
            id=response_id,
            account_id=account_id,
            created_at=created_at,
            response=response,
            input_items=input_items,
            conversation=conversation,
        )
    )
    await session.flush()


async def get_response(
    session: AsyncSession, *, account_id: str, response_id: str, not_before: datetime
) -> StoredResponse | None:
    """The account's response with that id, unless it is older than `not_before`
    (past its retention, even if not swept yet)."""
    found: StoredResponse | None = await session.scalar(
        select(StoredResponse).where(
            StoredResponse.id == response_id,
            StoredResponse.account_id == account_id,
            StoredResponse.created_at >= not_before,
        )
    )
    return found


async def delete_response(session: AsyncSession, *, account_id: str, response_id: str) -> bool:
    result = await session.execute(
        delete(StoredResponse).where(StoredResponse.id == response_id, StoredResponse.account_id == account_id)
    )
    return bool(getattr(result, "rowcount", 0))


async def delete_older_than(session: AsyncSession, cutoff: datetime) -> int:
    """Every account's responses created before `cutoff`; how many went."""
    result = await session.execute(delete(StoredResponse).where(StoredResponse.created_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
