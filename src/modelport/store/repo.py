"""Repository functions: the only place that speaks SQL.

Every read of an account's resource takes the account id, so a resource of another
account is simply not found.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from modelport.store.tables import Account, ApiKey, Deployment, Identity, Membership, Model, utcnow


@dataclass(frozen=True, slots=True)
class KeyOwner:
    key_id: str
    identity_id: str
    identity_type: str
    default_account_id: str


async def count_accounts(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Account)) or 0)


async def create_account(session: AsyncSession, *, name: str) -> Account:
    account = Account(name=name)
    session.add(account)
    await session.flush()
    return account


async def create_identity(
    session: AsyncSession, *, name: str, identity_type: str, default_account_id: str
) -> Identity:
    identity = Identity(name=name, identity_type=identity_type, default_account_id=default_account_id)
    session.add(identity)
    await session.flush()
    return identity


async def add_membership(session: AsyncSession, *, identity_id: str, account_id: str, role: str) -> None:
    session.add(Membership(identity_id=identity_id, account_id=account_id, role=role))
    await session.flush()


async def create_api_key(
    session: AsyncSession, *, identity_id: str, key_hash: str, display_prefix: str, name: str = ""
) -> ApiKey:
    key = ApiKey(identity_id=identity_id, key_hash=key_hash, display_prefix=display_prefix, name=name)
    session.add(key)
    await session.flush()
    return key


async def find_key_owner(session: AsyncSession, *, key_hash: str) -> KeyOwner | None:
    row = (
        await session.execute(
            select(ApiKey.id, Identity.id, Identity.identity_type, Identity.default_account_id)
            .join(Identity, Identity.id == ApiKey.identity_id)
            .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
        )
    ).first()
    if row is None:
        return None
    return KeyOwner(key_id=row[0], identity_id=row[1], identity_type=row[2], default_account_id=row[3])


async def membership_role(session: AsyncSession, *, identity_id: str, account_id: str) -> str | None:
    role: str | None = await session.scalar(
        select(Membership.role).where(
            Membership.identity_id == identity_id, Membership.account_id == account_id
        )
    )
    return role


async def create_model(session: AsyncSession, *, account_id: str, **fields: Any) -> Model:
    model = Model(account_id=account_id, **fields)
    session.add(model)
    await session.flush()
    return model


async def get_model(session: AsyncSession, *, account_id: str, model_id: str) -> Model | None:
    model: Model | None = await session.scalar(
        select(Model).where(Model.id == model_id, Model.account_id == account_id)
    )
    return model


async def deployment_counts(session: AsyncSession, *, model_ids: list[str]) -> dict[str, int]:
    if not model_ids:
        return {}
    rows = await session.execute(
        select(Deployment.model_id, func.count())
        .where(Deployment.model_id.in_(model_ids))
        .group_by(Deployment.model_id)
    )
    return {model_id: int(count) for model_id, count in rows.all()}


async def create_deployment(
    session: AsyncSession, *, account_id: str, model_id: str, **fields: Any
) -> Deployment:
    deployment = Deployment(account_id=account_id, model_id=model_id, **fields)
    session.add(deployment)
    await session.flush()
    return deployment


async def get_deployment(session: AsyncSession, *, account_id: str, deployment_id: str) -> Deployment | None:
    deployment: Deployment | None = await session.scalar(
        select(Deployment).where(Deployment.id == deployment_id, Deployment.account_id == account_id)
    )
    return deployment


async def get_deployment_with_model(
    session: AsyncSession, *, account_id: str, deployment_id: str
) -> tuple[Deployment, Model] | None:
    row = (
        await session.execute(
            select(Deployment, Model)
            .join(Model, Model.id == Deployment.model_id)
            .where(Deployment.id == deployment_id, Deployment.account_id == account_id)
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def list_deployments(
    session: AsyncSession, *, account_id: str, page: int, limit: int, model_id: str | None = None
) -> tuple[list[Deployment], int]:
    where = [Deployment.account_id == account_id]
    if model_id is not None:
        where.append(Deployment.model_id == model_id)
    total = int(await session.scalar(select(func.count()).select_from(Deployment).where(*where)) or 0)
    rows = await session.scalars(
        select(Deployment)
        .where(*where)
        .order_by(Deployment.created_at, Deployment.id)
        .offset((page - 1) * limit)
        .limit(limit)
    )
    return list(rows), total


async def embedded_deployments(session: AsyncSession) -> list[Deployment]:
    """Deployments of every account that the embedded engine should serve."""
    rows = await session.scalars(select(Deployment).where(Deployment.status.in_(("READY", "PENDING"))))
    return [
        deployment for deployment in rows if (deployment.vendor_configuration or {}).get("checkpoint_path")
    ]


async def set_deployment_status(
    session: AsyncSession, *, deployment_id: str, status: str, reason: str | None = None
) -> None:
    deployment = await session.get(Deployment, deployment_id)
    if deployment is not None:
        deployment.status = status
        deployment.status_reason = reason


def now() -> datetime:
    return utcnow()
