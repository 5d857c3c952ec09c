"""Spend: what usage cost, summed from the usage records (each carries its cost).
Knows no HTTP. A key's own spend is shown with the key (`GET /v4/api-keys`)."""

from __future__ import annotations

from collections.abc import Container

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.catalogue.access import require_admin
from modelport.catalogue.budgets import budget_status, budget_statuses
from modelport.principal import Principal
from modelport.schemas.catalogue import SpendReport
from modelport.store import accounts, usage

# In `by_key`, the spend of the keys the reader may not see (another user's, the
# operator's), summed: the totals still add up, and no key id is shown to whom
# `GET /v4/api-keys` would not show it.
OTHER_KEYS = "other keys"


async def account_spend(
    sessions: async_sessionmaker[AsyncSession], account_id: str, *, visible_keys: Container[str] | None = None
) -> SpendReport:
    """The account's spend; with `visible_keys`, the keys outside it are summed under
    OTHER_KEYS (a key-less record, from before spend was kept, stays under "")."""
    async with sessions() as session:
        by_key = await usage.account_spend(session, account_id=account_id, by="key_id")
        by_deployment = await usage.account_spend(session, account_id=account_id, by="deployment_id")
        account = await accounts.get_account(session, account_id=account_id)
        limits = accounts.limits_of(account) if account is not None else None
        budget = await budget_status(session, scope="account", owner_id=account_id, limits=limits)
        keys = await accounts.list_keys(session, account_id=account_id, identity_id="", everyone=True)
        key_budgets = await budget_statuses(
            session,
            scope="key",
            owners={
                key.id: accounts.limits_of(key)
                for key, _ in keys
                if key.revoked_at is None and (visible_keys is None or key.id in visible_keys)
            },
        )
    if visible_keys is not None:
        shown: dict[str, float] = {}
        for key_id, total in by_key.items():
            group = key_id if not key_id or key_id in visible_keys else OTHER_KEYS
            shown[group] = shown.get(group, 0.0) + total
        by_key = shown
    return SpendReport(
        account_id=account_id,
        spend=sum(by_deployment.values()),
        by_key=by_key,
        by_deployment=by_deployment,
        budget=budget,
        key_budgets=key_budgets,
    )


async def listable_key_ids(sessions: async_sessionmaker[AsyncSession], principal: Principal) -> set[str] | None:
    """The ids of the keys `GET /v4/api-keys` shows this admin; None for an operator,
    who sees every key. Reports per key name only these, and sum the rest."""
    if principal.is_operator:
        return None
    async with sessions() as session:
        keys = await accounts.list_keys(session, account_id=principal.account_id, identity_id=principal.identity_id)
    return {key.id for key, _ in keys}


async def spend_report(sessions: async_sessionmaker[AsyncSession], principal: Principal) -> SpendReport:
    """The selected account's spend; an admin's to read, per key only for the keys that
    admin may list (an operator sees every key)."""
    require_admin(principal)
    visible = await listable_key_ids(sessions, principal)
    return await account_spend(sessions, principal.account_id, visible_keys=visible)


__all__ = ["OTHER_KEYS", "account_spend", "listable_key_ids", "spend_report"]
