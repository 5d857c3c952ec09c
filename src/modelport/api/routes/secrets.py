"""modelport's own account-secret routes (admins): values go in, never come out."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from modelport.api.deps import CurrentPrincipal
from modelport.catalogue.catalogue import require_admin
from modelport.catalogue.secrets import SecretBox
from modelport.errors import NotFound
from modelport.store import repo

router = APIRouter(tags=["secrets"])

SecretName = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.\-]{1,200}$")]


class SecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str = Field(min_length=1, max_length=16_384)


class SecretOut(BaseModel):
    name: str
    created_at: datetime
    updated_at: datetime


@router.put("/v4/secrets/{name}", response_model=SecretOut)
async def put_secret(name: SecretName, body: SecretIn, request: Request, principal: CurrentPrincipal) -> SecretOut:
    require_admin(principal)
    box: SecretBox = request.app.state.secret_box
    sealed = box.seal(body.value)
    async with request.app.state.sessions() as session, session.begin():
        secret = await repo.put_secret(session, account_id=principal.account_id, name=name, ciphertext=sealed)
        return SecretOut(name=secret.name, created_at=secret.created_at, updated_at=secret.updated_at)


@router.get("/v4/secrets", response_model=list[SecretOut])
async def list_secrets(request: Request, principal: CurrentPrincipal) -> list[SecretOut]:
    require_admin(principal)
    async with request.app.state.sessions() as session:
        rows = await repo.list_secrets(session, account_id=principal.account_id)
    return [SecretOut(name=row.name, created_at=row.created_at, updated_at=row.updated_at) for row in rows]


@router.delete("/v4/secrets/{name}", status_code=204)
async def delete_secret(name: SecretName, request: Request, principal: CurrentPrincipal) -> None:
    require_admin(principal)
    async with request.app.state.sessions() as session, session.begin():
        if not await repo.delete_secret(session, account_id=principal.account_id, name=name):
            raise NotFound(f"secret {name} not found")
