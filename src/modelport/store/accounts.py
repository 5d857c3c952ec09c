"""Accounts, identities, their memberships and API keys: the rows of who may call."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from modelport.errors import Conflict
from modelport.principal import IdentityType, Limits, ModelAllowList, Principal, Role
from modelport.store.tables import Account, ApiKey, Deployment, Identity, Membership, Model, utcnow


@dataclass(frozen=True, slots=True)
class KeyOwner:
    key_id: str
    identity_id: str
    identity_type: IdentityType
    default_account_id: str
    is_operator: bool = False
    limits: Limits | None = None
    model_allow: ModelAllowList | None = None
    cache_ttl_seconds: int | None = None  # the response cache's, for this key's answers
    # Epoch seconds, checked on every request against the clock (an owner stays cached
    # past these times): from `expires_at` on the key is expired; from `retires_at` on
    # the secret it was found by, the one before a rotation, is no longer the key's.
    expires_at: float | None = None
    retires_at: float | None = None


async def count_accounts(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Account)) or 0)


async def create_account(session: AsyncSession, *, name: str) -> Account:
    """A new account. Names are unique, since the CLI and the playground name accounts by
    name: a second `team-b` would make every `--account team-b` ambiguous (409).
    Checked here rather than by a unique index, which a database already holding two
    accounts of one name could not be migrated to."""
    if await session.scalar(select(Account.id).where(Account.name == name).limit(1)) is not None:
        raise Conflict(f"an account named {name!r} already exists; choose another name")
    account = Account(name=name)
    session.add(account)
    await session.flush()
    return account


async def create_identity(
    session: AsyncSession, *, name: str, identity_type: IdentityType, default_account_id: str, is_operator: bool = False
) -> Identity:
    identity = Identity(
        name=name, identity_type=identity_type, default_account_id=default_account_id, is_operator=is_operator
    )
    session.add(identity)
    await session.flush()
    return identity


async def add_membership(session: AsyncSession, *, identity_id: str, account_id: str, role: Role) -> None:
    session.add(Membership(identity_id=identity_id, account_id=account_id, role=role))
    await session.flush()


async def create_api_key(
    session: AsyncSession,
    *,
    identity_id: str,
    key_hash: str,
    display_prefix: str,
    name: str = "",
    limits: dict[str, Any] | None = None,
    expires_at: datetime | None = None,
    allowed_models: list[str] | None = None,
    allowed_deployments: list[str] | None = None,
) -> ApiKey:
    key = ApiKey(
        identity_id=identity_id,
        key_hash=key_hash,
        display_prefix=display_prefix,
        name=name,
        expires_at=expires_at,
        allowed_models=allowed_models,
        allowed_deployments=allowed_deployments,
        **(limits or {}),
    )
    session.add(key)
    await session.flush()
    return key


async def find_key_owner(session: AsyncSession, *, key_hash: str) -> KeyOwner | None:
    """The owner of the unrevoked key whose secret hashes to `key_hash`: its current
    secret, or the one before its last rotation until that one's grace is over."""
    row = (
        await session.execute(
            select(ApiKey, Identity.id, Identity.identity_type, Identity.default_account_id, Identity.is_operator)
            .join(Identity, Identity.id == ApiKey.identity_id)
            .where(or_(ApiKey.key_hash == key_hash, ApiKey.previous_key_hash == key_hash), ApiKey.revoked_at.is_(None))
        )
    ).first()
    if row is None:
        return None
    key: ApiKey = row[0]
    retires_at = None
    if key.key_hash != key_hash:  # found by the previous secret
        retired = as_utc(key.previous_key_retired_at)
        if retired is None or retired <= utcnow():
            return None  # past its grace: as unknown as any wrong key
        retires_at = retired.timestamp()
    expires = as_utc(key.expires_at)
    return KeyOwner(
        key_id=key.id,
        identity_id=row[1],
        identity_type=row[2],
        default_account_id=row[3],
        is_operator=bool(row[4]),
        limits=limits_of(key),
        model_allow=model_allow(key),
        cache_ttl_seconds=key.cache_ttl_seconds,
        expires_at=expires.timestamp() if expires is not None else None,
        retires_at=retires_at,
    )


def as_utc(moment: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime: SQLite gives back naive UTC."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def limits_of(holder: ApiKey | Account) -> Limits | None:
    """A key's or an account's limits, or None when it has none (the common case:
    nothing to count). Both store them in columns of the same names."""
    limits = Limits(
        rpm_limit=holder.rpm_limit,
        tpm_limit=holder.tpm_limit,
        max_parallel_requests=holder.max_parallel_requests,
        max_budget=holder.max_budget,
        budget_duration=holder.budget_duration,
    )
    if not limits.any:
        return None
    anchor = as_utc(holder.budget_started_at or holder.created_at)
    return replace(limits, budget_anchor=anchor.timestamp() if anchor is not None else 0.0)


def model_allow(key: ApiKey) -> ModelAllowList | None:
    """The models and deployments the key is limited to; None when it has no list."""
    if key.allowed_models is None and key.allowed_deployments is None:
        return None
    return ModelAllowList(
        models=frozenset(key.allowed_models or ()), deployments=frozenset(key.allowed_deployments or ())
    )


async def unknown_allow_entries(
    session: AsyncSession, *, account_id: str, models: list[str], deployments: list[str]
) -> tuple[list[str], list[str]]:
    """The entries of a key's lists that name no model (by name or `vendor/name`, vendor
    in any case) or no deployment of `account_id`."""
    unknown_models: list[str] = []
    if models:
        rows = await session.execute(select(Model.name, Model.model_vendor).where(Model.account_id == account_id))
        known: set[str] = set()
        for name, vendor in rows.all():
            known.add(name)
            known.add(f"{(vendor or 'OTHER').lower()}/{name}")
        unknown_models = [entry for entry in models if entry not in known]
    unknown_deployments: list[str] = []
    if deployments:
        found = set(
            await session.scalars(
                select(Deployment.id).where(Deployment.account_id == account_id, Deployment.id.in_(set(deployments)))
            )
        )
        unknown_deployments = [entry for entry in deployments if entry not in found]
    return unknown_models, unknown_deployments


@dataclass(frozen=True, slots=True)
class AccountAccess:
    """An identity's standing in an account: its role, and the account's own limits."""

    role: Role
    account_limits: Limits | None = None


def principal_of(owner: KeyOwner, access: AccountAccess, account_id: str) -> Principal:
    """Who a key's caller is in an account: the key's own facts and its identity's role
    and the account's limits there. One place, so a request and a batch line (which
    runs as the key that created it) are never different callers."""
    return Principal(
        identity_id=owner.identity_id,
        identity_type=owner.identity_type,
        account_id=account_id,
        role=access.role,
        is_operator=owner.is_operator,
        key_id=owner.key_id,
        key_limits=owner.limits,
        account_limits=access.account_limits,
        model_allow=owner.model_allow,
        cache_ttl_seconds=owner.cache_ttl_seconds,
    )


async def account_access(session: AsyncSession, *, identity_id: str, account_id: str) -> AccountAccess | None:
    """None when the identity is not a member of the account."""
    row = (
        await session.execute(
            select(Membership.role, Account)
            .join(Account, Account.id == Membership.account_id)
            .where(Membership.identity_id == identity_id, Membership.account_id == account_id)
        )
    ).first()
    if row is None:
        return None
    return AccountAccess(role=row[0], account_limits=limits_of(row[1]))


def _keys_managed_in(account_id: str, identity_id: str, *, everyone: bool) -> Any:
    """Keys an admin of `account_id` manages: those of the account's own service
    accounts, and the admin's own; with `everyone` (an operator), every member's."""
    if everyone:
        return Membership.account_id == account_id
    own_service_account = (Identity.identity_type == IdentityType.SERVICE_ACCOUNT) & (
        Identity.default_account_id == account_id
    )
    return (Membership.account_id == account_id) & (own_service_account | (Identity.id == identity_id))


async def list_keys(
    session: AsyncSession, *, account_id: str, identity_id: str, everyone: bool = False
) -> list[tuple[ApiKey, Role]]:
    """Keys an admin of the account may see, with their identity's role there."""
    rows = await session.execute(
        select(ApiKey, Membership.role)
        .join(Membership, Membership.identity_id == ApiKey.identity_id)
        .join(Identity, Identity.id == ApiKey.identity_id)
        .where(_keys_managed_in(account_id, identity_id, everyone=everyone))
        .order_by(ApiKey.created_at, ApiKey.id)
    )
    return [(key, role) for key, role in rows.all()]


async def get_key_in_account(
    session: AsyncSession, *, account_id: str, key_id: str, identity_id: str, everyone: bool = False
) -> tuple[ApiKey, Role] | None:
    row = (
        await session.execute(
            select(ApiKey, Membership.role)
            .join(Membership, Membership.identity_id == ApiKey.identity_id)
            .join(Identity, Identity.id == ApiKey.identity_id)
            .where(ApiKey.id == key_id, _keys_managed_in(account_id, identity_id, everyone=everyone))
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def get_account(session: AsyncSession, *, account_id: str) -> Account | None:
    return await session.get(Account, account_id)


async def get_identity(session: AsyncSession, *, identity_id: str) -> Identity | None:
    return await session.get(Identity, identity_id)


async def memberships_of(session: AsyncSession, *, identity_id: str) -> list[tuple[Account, Role]]:
    """Every account the identity belongs to, with its role there."""
    rows = await session.execute(
        select(Account, Membership.role)
        .join(Membership, Membership.account_id == Account.id)
        .where(Membership.identity_id == identity_id)
        .order_by(Account.created_at, Account.id)
    )
    return [(account, role) for account, role in rows.all()]
