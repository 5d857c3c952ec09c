"""Reads for the operator's terminal (`modelport accounts/keys/models/deployments/usage`).

Unlike `repo`, whose every read is fenced to one account (the HTTP API's rule), these
look across accounts: the operator at the terminal holds the database itself. Things
are found the way people remember them: by name, full id or a unique id prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from modelport.store.tables import Account, ApiKey, Deployment, Membership, Model, UsageRecord


@dataclass(frozen=True, slots=True)
class AccountRow:
    account: Account
    members: int
    models: int
    deployments: int


@dataclass(frozen=True, slots=True)
class UsageRow:
    deployment_id: str
    deployment_name: str
    account_name: str
    requests: int
    failures: int
    prompt_tokens: int
    response_tokens: int


def _named_or_prefixed(id_column: Any, name_column: Any, reference: str) -> Any:
    # A LIKE prefix with the wildcards escaped: ids are UUIDs, but a reference is typed.
    escaped = reference.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return or_(id_column == reference, name_column == reference, id_column.like(f"{escaped}%", escape="\\"))


async def accounts(session: AsyncSession) -> list[AccountRow]:
    members = select(func.count()).where(Membership.account_id == Account.id).scalar_subquery()
    models = select(func.count()).where(Model.account_id == Account.id).scalar_subquery()
    deployments = select(func.count()).where(Deployment.account_id == Account.id).scalar_subquery()
    rows = await session.execute(select(Account, members, models, deployments).order_by(Account.created_at, Account.id))
    return [AccountRow(account, int(m), int(n), int(d)) for account, m, n, d in rows.all()]


async def find_accounts(session: AsyncSession, reference: str) -> list[Account]:
    """Accounts whose id is `reference`, or starts with it, or whose name it is."""
    rows = await session.scalars(
        select(Account).where(_named_or_prefixed(Account.id, Account.name, reference)).order_by(Account.created_at)
    )
    return list(rows)


async def find_keys(session: AsyncSession, reference: str) -> list[ApiKey]:
    """Keys whose id is `reference`, or starts with it, or whose name it is."""
    rows = await session.scalars(
        select(ApiKey).where(_named_or_prefixed(ApiKey.id, ApiKey.name, reference)).order_by(ApiKey.created_at)
    )
    return list(rows)


async def models(session: AsyncSession, *, account_id: str | None) -> list[tuple[Model, str, int]]:
    """Models (of one account, or all), with their account's name and deployment count."""
    deployments = select(func.count()).where(Deployment.model_id == Model.id).scalar_subquery()
    query = select(Model, Account.name, deployments).join(Account, Account.id == Model.account_id)
    if account_id is not None:
        query = query.where(Model.account_id == account_id)
    rows = await session.execute(query.order_by(Model.created_at, Model.id))
    return [(model, str(account), int(count)) for model, account, count in rows.all()]


async def deployments(session: AsyncSession, *, account_id: str | None) -> list[tuple[Deployment, Model]]:
    query = select(Deployment, Model).join(Model, Model.id == Deployment.model_id)
    if account_id is not None:
        query = query.where(Deployment.account_id == account_id)
    rows = await session.execute(query.order_by(Deployment.created_at, Deployment.id))
    return [(deployment, model) for deployment, model in rows.all()]


async def usage_since(session: AsyncSession, *, since: datetime, account_id: str | None) -> list[UsageRow]:
    """Requests, failures (status >= 400) and tokens per deployment since `since`."""
    failed = func.sum(case((UsageRecord.status >= 400, 1), else_=0))
    query = (
        select(
            UsageRecord.deployment_id,
            func.coalesce(Deployment.name, ""),
            func.coalesce(Account.name, ""),
            func.count(),
            failed,
            func.sum(UsageRecord.prompt_tokens),
            func.sum(UsageRecord.response_tokens),
        )
        .outerjoin(Deployment, Deployment.id == UsageRecord.deployment_id)
        .outerjoin(Account, Account.id == UsageRecord.account_id)
        .where(UsageRecord.created_at >= since)
        .group_by(UsageRecord.deployment_id, Deployment.name, Account.name)
        .order_by(func.count().desc())
    )
    if account_id is not None:
        query = query.where(UsageRecord.account_id == account_id)
    rows = await session.execute(query)
    return [
        UsageRow(str(deployment), str(name), str(account), int(count), int(fails or 0), int(p or 0), int(r or 0))
        for deployment, name, account, count, fails, p, r in rows.all()
    ]
