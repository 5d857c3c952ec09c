"""Accounts, and modelport's own API-key routes (admins of the selected account)."""

from __future__ import annotations

from fastapi import APIRouter

from modelport.api.deps import CatalogueDep, CurrentPrincipal
from modelport.principal import Role
from modelport.schemas.catalogue import (
    AccountCreate,
    AccountCreated,
    KeyCreate,
    KeyCreated,
    KeyLimitFields,
    KeyOut,
    KeyRotate,
    KeyUpdate,
)
from modelport.schemas.limits import AccountLimitsOut, AccountLimitsUpdate

router = APIRouter(tags=["accounts"])


@router.post("/accounts", response_model=AccountCreated)
async def create_account(body: AccountCreate, principal: CurrentPrincipal, catalogue: CatalogueDep) -> AccountCreated:
    return AccountCreated(account_id=await catalogue.access.create_account(principal, name=body.account_name))


@router.get("/v4/accounts/{account_id}/limits", response_model=AccountLimitsOut)
async def get_account_limits(account_id: str, principal: CurrentPrincipal, catalogue: CatalogueDep) -> AccountLimitsOut:
    """The account's own limits, shared by all its keys, and its budget's current window
    (its admins; operators for any account)."""
    return await catalogue.access.account_limits(principal, account_id)


@router.patch("/v4/accounts/{account_id}/limits", response_model=AccountLimitsOut)
async def update_account_limits(
    account_id: str, body: AccountLimitsUpdate, principal: CurrentPrincipal, catalogue: CatalogueDep
) -> AccountLimitsOut:
    """Set the account's limits (the server's operators only): `rpm_limit`, `tpm_limit`,
    `max_parallel_requests`, `max_budget`, `budget_duration`; null clears one."""
    return await catalogue.access.update_account_limits(principal, account_id, body)


@router.post("/v4/api-keys", response_model=KeyCreated, status_code=201)
async def create_key(body: KeyCreate, principal: CurrentPrincipal, catalogue: CatalogueDep) -> KeyCreated:
    limits = body.model_dump(include=set(KeyLimitFields.model_fields), exclude_none=True)
    return await catalogue.access.create_key(
        principal,
        role=Role(body.role),
        name=body.name,
        limits=limits,
        expires_at=body.expires_at,
        models=body.models,
        deployments=body.deployments,
    )


@router.get("/v4/api-keys", response_model=list[KeyOut])
async def list_keys(principal: CurrentPrincipal, catalogue: CatalogueDep) -> list[KeyOut]:
    return await catalogue.access.list_keys(principal)


@router.patch("/v4/api-keys/{key_id}", response_model=KeyOut)
async def update_key(key_id: str, body: KeyUpdate, principal: CurrentPrincipal, catalogue: CatalogueDep) -> KeyOut:
    return await catalogue.access.update_key(principal, key_id, body)


@router.delete("/v4/api-keys/{key_id}", response_model=KeyOut)
async def revoke_key(key_id: str, principal: CurrentPrincipal, catalogue: CatalogueDep) -> KeyOut:
    return await catalogue.access.revoke_key(principal, key_id)


@router.post("/v4/api-keys/{key_id}/rotate", response_model=KeyCreated)
async def rotate_key(
    key_id: str, principal: CurrentPrincipal, catalogue: CatalogueDep, body: KeyRotate | None = None
) -> KeyCreated:
    """A new secret for the key (in this response only), same id, limits and spend; the
    old secret keeps working `grace_seconds` (default 0), then answers 401."""
    grace = body.grace_seconds if body is not None else 0
    return await catalogue.access.rotate_key(principal, key_id, grace_seconds=grace)
