"""modelport's own account-secret routes (admins): values go in, never come out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from modelport.api.deps import CatalogueDep, CurrentPrincipal
from modelport.schemas.catalogue import SecretOut

router = APIRouter(tags=["secrets"])

SecretName = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.\-]{1,200}$")]


class SecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str = Field(min_length=1, max_length=16_384)


@router.put("/v4/secrets/{name}", response_model=SecretOut)
async def put_secret(
    name: SecretName, body: SecretIn, principal: CurrentPrincipal, catalogue: CatalogueDep
) -> SecretOut:
    return await catalogue.secrets.put(principal, name, body.value)


@router.get("/v4/secrets", response_model=list[SecretOut])
async def list_secrets(principal: CurrentPrincipal, catalogue: CatalogueDep) -> list[SecretOut]:
    return await catalogue.secrets.list(principal)


@router.delete("/v4/secrets/{name}", status_code=204)
async def delete_secret(name: SecretName, principal: CurrentPrincipal, catalogue: CatalogueDep) -> None:
    await catalogue.secrets.delete(principal, name)
