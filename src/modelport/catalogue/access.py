"""Who may do what: the caller an API key stands for, accounts, memberships and keys.

Reads are open to every member of the selected account; changes need its admin role.
A resource of another account is not found, exactly like a missing one.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.catalogue.budgets import budget_status
from modelport.catalogue.keys import display_prefix, generate_key, hash_key
from modelport.errors import Conflict, Forbidden, NotFound, Unauthenticated, field_error, field_errors
from modelport.policy import ServerPolicy
from modelport.principal import IdentityType, Principal, Role
from modelport.schemas.catalogue import KeyCreated, KeyOut, KeyUpdate
from modelport.schemas.limits import AccountLimitsOut, AccountLimitsUpdate
from modelport.store import accounts, usage
from modelport.store.cache import CatalogueCache
from modelport.store.tables import Account, ApiKey, utcnow


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden(f"this needs the admin role in account {principal.account_id}; the key's role is member")


def check_account(principal: Principal, account_id: str | None) -> None:
    """The SDK's create calls may name an account; it must be the selected one."""
    if account_id is not None and account_id != principal.account_id:
        raise Forbidden(f"account_id {account_id} is not the selected account {principal.account_id}")


def check_account_filter(principal: Principal, account_id: str | None) -> None:
    """Lists are of the selected account; an `account_id` filter naming another one
    is refused rather than answered with that account's resources or an empty page."""
    if account_id is not None and account_id != principal.account_id:
        raise field_error(
            ["query", "account_id"],
            f"{account_id} is not the selected account {principal.account_id}; "
            "select it with the x-selected-account-id header",
            "account_filter",
        )


def creator(principal: Principal) -> dict[str, str]:
    """The `created_by_*` columns of a row the caller creates."""
    return {"created_by_user_id": principal.identity_id, "created_by_identity_type": principal.identity_type}


class Access:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], cache: CatalogueCache, policy: ServerPolicy) -> None:
        self._sessions = sessions
        self._cache = cache
        self._policy = policy

    async def principal(self, api_key: str, selected_account_id: str | None) -> Principal:
        """The caller `api_key` stands for, in the selected account (the key's default
        one without a selection). Read from the cache on every request: it holds the
        key's owner and the owner's role per account."""
        key_hash = hash_key(api_key)

        async def load_owner() -> accounts.KeyOwner | None:
            async with self._sessions() as session:
                return await accounts.find_key_owner(session, key_hash=key_hash)

        owner = await self._cache.get_or_load(("key", key_hash), load_owner)
        # One answer for unknown and revoked keys, and for a secret a rotation retired:
        # errors never say whether a key exists.
        if owner is None:
            raise Unauthenticated("invalid API key")
        if owner.expires_at is not None or owner.retires_at is not None:
            # The cached owner may outlive these times: they are checked on every request.
            now = time.time()
            if owner.retires_at is not None and now >= owner.retires_at:
                raise Unauthenticated("invalid API key")
            if owner.expires_at is not None and now >= owner.expires_at:
                # Said plainly: only the key's holder can be told, who knows the key already.
                raise Unauthenticated("API key expired")
        account_id = selected_account_id or owner.default_account_id

        async def load_access() -> accounts.AccountAccess | None:
            async with self._sessions() as session:
                return await accounts.account_access(session, identity_id=owner.identity_id, account_id=account_id)

        access = await self._cache.get_or_load(("access", owner.identity_id, account_id), load_access)
        if access is None:
            raise Forbidden(f"this API key's identity is not a member of account {account_id}")
        return accounts.principal_of(owner, access, account_id)

    async def create_account(self, principal: Principal, *, name: str) -> str:
        if not (principal.is_operator or self._policy.account_self_service):
            # Its creator becomes the new account's admin, with everything an admin may
            # point the server at: that is the operator's to hand out.
            raise Forbidden("only the server's operators may create accounts (MODELPORT_ACCOUNT_SELF_SERVICE is off)")
        async with self._sessions() as session, session.begin():
            account = await accounts.create_account(session, name=name)
            await accounts.add_membership(
                session, identity_id=principal.identity_id, account_id=account.id, role=Role.ADMIN
            )
            return account.id

    async def account_limits(self, principal: Principal, account_id: str) -> AccountLimitsOut:
        """An account's own limits and its budget's window: for its admins, and for
        operators (of any account)."""
        if not principal.is_operator:
            if account_id != principal.account_id:
                raise NotFound(f"account {account_id} not found")
            require_admin(principal)
        async with self._sessions() as session:
            account = await accounts.get_account(session, account_id=account_id)
            if account is None:
                raise NotFound(f"account {account_id} not found")
            return await account_limits_out(session, account)

    async def update_account_limits(
        self, principal: Principal, account_id: str, body: AccountLimitsUpdate
    ) -> AccountLimitsOut:
        """Set an account's limits: the server's operators only. They bound what all the
        account's keys may use together, so an account's own admins may not raise them."""
        if not principal.is_operator:
            if account_id != principal.account_id:
                raise NotFound(f"account {account_id} not found")
            raise Forbidden("only the server's operators may set an account's limits")
        async with self._sessions() as session, session.begin():
            account = await accounts.get_account(session, account_id=account_id)
            if account is None:
                raise NotFound(f"account {account_id} not found")
            apply_limit_changes(account, body.model_dump(exclude_unset=True))
            await session.flush()
            return await account_limits_out(session, account)

    async def create_key(
        self,
        principal: Principal,
        *,
        role: Role,
        name: str,
        limits: dict[str, Any] | None = None,
        expires_at: datetime | None = None,
        models: list[str] | None = None,
        deployments: list[str] | None = None,
    ) -> KeyCreated:
        require_admin(principal)
        return await create_key(
            self._sessions,
            account_id=principal.account_id,
            role=role,
            name=name,
            limits=limits,
            expires_at=expires_at,
            models=models,
            deployments=deployments,
        )

    async def list_keys(self, principal: Principal) -> list[KeyOut]:
        require_admin(principal)
        async with self._sessions() as session:
            keys = await accounts.list_keys(
                session,
                account_id=principal.account_id,
                identity_id=principal.identity_id,
                everyone=principal.is_operator,
            )
            spend = await usage.spend_by_key(session, key_ids=[key.id for key, _ in keys])
            return [key_out(key, role, spend.get(key.id, 0.0)) for key, role in keys]

    async def revoke_key(self, principal: Principal, key_id: str) -> KeyOut:
        """An admin revokes the account's service-account keys and their own; another
        user's key only that user or an operator (a user may belong to many accounts,
        and no admin of one of them may lock them out of the others)."""
        async with self._sessions() as session, session.begin():
            key, role = await self._managed_key(session, principal, key_id)
            if key.revoked_at is None:
                key.revoked_at = utcnow()
            return key_out(key, role)

    async def update_key(self, principal: Principal, key_id: str, body: KeyUpdate) -> KeyOut:
        """Change a key's name or limits (the keys an admin may revoke, they may change)."""
        async with self._sessions() as session, session.begin():
            key, role = await self._managed_key(session, principal, key_id)
            changes = body.model_dump(exclude_unset=True)
            await check_allow_lists(
                session,
                account_id=principal.account_id,
                models=changes.get("models"),
                deployments=changes.get("deployments"),
            )
            apply_key_changes(key, changes)
            spend = await usage.spend_by_key(session, key_ids=[key.id])
            return key_out(key, role, spend.get(key.id, 0.0))

    async def rotate_key(self, principal: Principal, key_id: str, *, grace_seconds: int = 0) -> KeyCreated:
        """A new secret for the same key (its id, name, role, limits, spend and usage
        kept); the old one works `grace_seconds` more. Whoever may revoke the key may."""
        async with self._sessions() as session, session.begin():
            key, role = await self._managed_key(session, principal, key_id)
            secret = rotate_secret(key, grace_seconds=grace_seconds)
            spend = await usage.spend_by_key(session, key_ids=[key.id])
            return KeyCreated(**key_out(key, role, spend.get(key.id, 0.0)).model_dump(), key=secret)

    async def _managed_key(self, session: AsyncSession, principal: Principal, key_id: str) -> tuple[ApiKey, Role]:
        require_admin(principal)
        found = await accounts.get_key_in_account(
            session,
            account_id=principal.account_id,
            key_id=key_id,
            identity_id=principal.identity_id,
            everyone=principal.is_operator,
        )
        if found is None:
            raise NotFound(f"API key {key_id} not found")
        return found


def key_out(key: ApiKey, role: Role, spend: float = 0.0) -> KeyOut:
    return KeyOut(
        id=key.id,
        name=key.name,
        display_prefix=key.display_prefix,
        role=role,
        identity_id=key.identity_id,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
        rpm_limit=key.rpm_limit,
        tpm_limit=key.tpm_limit,
        max_parallel_requests=key.max_parallel_requests,
        max_budget=key.max_budget,
        budget_duration=key.budget_duration,
        spend=spend,
        expires_at=key.expires_at,
        models=key.allowed_models,
        deployments=key.allowed_deployments,
        previous_key_retired_at=key.previous_key_retired_at,
        cache_ttl_seconds=key.cache_ttl_seconds,
    )


def rotate_secret(key: ApiKey, *, grace_seconds: int = 0) -> str:
    """Give `key` a new secret (returned, to be shown once); its current one keeps
    working `grace_seconds` more, and the one before, if still in a grace, stops now.
    The API's rotate and `modelport keys rotate`."""
    if key.revoked_at is not None:
        # A new secret would not work either; saying so beats handing out a dead key.
        raise Conflict(f"API key {key.id} is revoked: create a new key instead")
    secret = generate_key()
    key.previous_key_hash = key.key_hash
    key.previous_key_retired_at = utcnow() + timedelta(seconds=grace_seconds)
    key.key_hash = hash_key(secret)
    key.display_prefix = display_prefix(secret)
    return secret


# The API's names of a key's allow-lists -> its columns.
_ALLOW_COLUMNS = {"models": "allowed_models", "deployments": "allowed_deployments"}


async def check_allow_lists(
    session: AsyncSession, *, account_id: str, models: list[str] | None, deployments: list[str] | None
) -> None:
    """422 naming the field when an allow-list names a model or deployment that is not the
    account's: a list that can never match is a mistake worth saying at once. Only admins
    of the account set lists, and they may list its models anyway."""
    unknown_models, unknown_deployments = await accounts.unknown_allow_entries(
        session, account_id=account_id, models=models or [], deployments=deployments or []
    )
    errors = []
    if unknown_models:
        errors.append(
            {
                "loc": ["body", "models"],
                "msg": f"no model of this account is named {', '.join(map(repr, unknown_models[:5]))} "
                "(give a name or vendor/name as GET /v1/models shows it)",
                "type": "unknown_model",
            }
        )
    if unknown_deployments:
        errors.append(
            {
                "loc": ["body", "deployments"],
                "msg": f"no deployment of this account has the id {', '.join(map(repr, unknown_deployments[:5]))}",
                "type": "unknown_deployment",
            }
        )
    if errors:
        raise field_errors(errors)


def apply_key_changes(key: ApiKey, changes: dict[str, Any]) -> None:
    """Set a key's name, limits and allow-lists (the API's PATCH and `modelport keys update`)."""
    if "name" in changes and changes["name"] is None:
        del changes["name"]
    for field, column in _ALLOW_COLUMNS.items():
        if field in changes:
            # Duplicates dropped, order kept: the listing shows what was meant.
            value = changes.pop(field)
            changes[column] = list(dict.fromkeys(value)) if value is not None else None
    apply_limit_changes(key, changes)


def apply_limit_changes(holder: ApiKey | Account, changes: dict[str, Any]) -> None:
    """Set the columns of a key or an account that `changes` names: its limits, and for a
    key its name and allow-lists (already in column form)."""
    if "budget_duration" in changes and changes["budget_duration"] != holder.budget_duration:
        holder.budget_started_at = utcnow()  # a new kind of window starts counting now
    for field, value in changes.items():
        setattr(holder, field, value)


async def account_limits_out(session: AsyncSession, account: Account) -> AccountLimitsOut:
    limits = accounts.limits_of(account)
    return AccountLimitsOut(
        account_id=account.id,
        rpm_limit=account.rpm_limit,
        tpm_limit=account.tpm_limit,
        max_parallel_requests=account.max_parallel_requests,
        max_budget=account.max_budget,
        budget_duration=account.budget_duration,
        budget=await budget_status(session, scope="account", owner_id=account.id, limits=limits),
    )


async def create_key(
    sessions: async_sessionmaker[AsyncSession],
    *,
    account_id: str,
    role: Role,
    name: str,
    limits: dict[str, Any] | None = None,
    expires_at: datetime | None = None,
    models: list[str] | None = None,
    deployments: list[str] | None = None,
) -> KeyCreated:
    """A new service-account identity in `account_id` with `role`, and its key (shown once),
    limited to `models` and `deployments` when given."""
    async with sessions() as session, session.begin():
        if await accounts.get_account(session, account_id=account_id) is None:
            raise NotFound(f"account {account_id} not found")
        await check_allow_lists(session, account_id=account_id, models=models, deployments=deployments)
        identity = await accounts.create_identity(
            session,
            name=name or "service account",
            identity_type=IdentityType.SERVICE_ACCOUNT,
            default_account_id=account_id,
        )
        await accounts.add_membership(session, identity_id=identity.id, account_id=account_id, role=role)
        secret = generate_key()
        key = await accounts.create_api_key(
            session,
            identity_id=identity.id,
            key_hash=hash_key(secret),
            display_prefix=display_prefix(secret),
            name=name,
            limits=limits,
            expires_at=expires_at,
            allowed_models=list(dict.fromkeys(models)) if models is not None else None,
            allowed_deployments=list(dict.fromkeys(deployments)) if deployments is not None else None,
        )
        return KeyCreated(**key_out(key, role).model_dump(), key=secret)
