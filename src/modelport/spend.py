"""Spend: what usage cost, summed from the usage records (each carries its cost).
Knows no HTTP. A key's own spend is shown with the key (`GET /v4/api-keys`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.auth import Principal
from modelport.registry import require_admin
from modelport.schemas.registry import SpendReport
from modelport.store import repo


async def account_spend(sessions: async_sessionmaker[AsyncSession], account_id: str) -> SpendReport:
    async with sessions() as session:
        by_key = await repo.account_spend(session, account_id=account_id, by="key_id")
        by_deployment = await repo.account_spend(session, account_id=account_id, by="deployment_id")
    return SpendReport(
        account_id=account_id,
        spend=sum(by_deployment.values()),
        by_key=by_key,
        by_deployment=by_deployment,
    )


async def spend_report(sessions: async_sessionmaker[AsyncSession], principal: Principal) -> SpendReport:
    """The selected account's spend; an admin's to read, like its keys."""
    require_admin(principal)
    return await account_spend(sessions, principal.account_id)


__all__ = ["account_spend", "spend_report"]
