"""Accounts, and modelport's own API-key routes (admins of the selected account)."""

from __future__ import annotations

from fastapi import APIRouter

from modelport.api.deps import CatalogueDep, CurrentPrincipal
from modelport.schemas.catalogue import (
    AccountCreate,
    AccountCreated,
    KeyCreate,
    KeyCreated,
    KeyLimitFields,
    KeyOut,
    KeyUpdate,
)

router = APIRouter(tags=["accounts"])


@router.post("/accounts", response_model=AccountCreated)
async def create_account(body: AccountCreate, principal: CurrentPrincipal, registry: CatalogueDep) -> AccountCreated:
    return AccountCreated(account_id=await registry.create_account(principal, name=body.account_name))


@router.post("/v4/api-keys", response_model=KeyCreated, status_code=201)
async def create_key(body: KeyCreate, principal: CurrentPrincipal, registry: CatalogueDep) -> KeyCreated:
    limits = body.model_dump(include=set(KeyLimitFields.model_fields), exclude_none=True)
    return await registry.create_key(principal, role=body.role, name=body.name, limits=limits)


@router.get("/v4/api-keys", response_model=list[KeyOut])
async def list_keys(principal: CurrentPrincipal, registry: CatalogueDep) -> list[KeyOut]:
    return await registry.list_keys(principal)


@router.patch("/v4/api-keys/{key_id}", response_model=KeyOut)
async def update_key(key_id: str, body: KeyUpdate, principal: CurrentPrincipal, registry: CatalogueDep) -> KeyOut:
    return await registry.update_key(principal, key_id, body)


@router.delete("/v4/api-keys/{key_id}", response_model=KeyOut)
async def revoke_key(key_id: str, principal: CurrentPrincipal, registry: CatalogueDep) -> KeyOut:
    return await registry.revoke_key(principal, key_id)
