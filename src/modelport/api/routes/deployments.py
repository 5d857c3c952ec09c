"""Deployments of a model, every deployment of the account, and their usage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from modelport.api.deps import CatalogueDep, CurrentPrincipal, PageNumber, PageSize, UsageWindowDep
from modelport.catalogue.catalogue import Catalogue
from modelport.principal import Principal
from modelport.schemas.catalogue import (
    DeleteResponse,
    DeploymentCreate,
    DeploymentOut,
    DeploymentUpdate,
    ModelUsage,
    Page,
)

router = APIRouter(tags=["deployments"])

SortBy = Annotated[list[str] | None, Query()]


@router.post("/v4/models/{model_instance_id}/deployments", response_model=DeploymentOut)
async def create_deployment(
    model_instance_id: str, body: DeploymentCreate, principal: CurrentPrincipal, catalogue: CatalogueDep
) -> DeploymentOut:
    return await catalogue.deployments.create(principal, model_instance_id, body)


@dataclass(frozen=True, slots=True)
class _Listing:
    """The query of both deployment lists: one model's, and every one of the account."""

    page: int
    limit: int
    sort_by: list[str] | None
    account_id: str | None

    async def of(self, catalogue: Catalogue, principal: Principal, model_id: str | None) -> Page[DeploymentOut]:
        return await catalogue.deployments.list(
            principal,
            model_id=model_id,
            page=self.page,
            limit=self.limit,
            sort_by=self.sort_by,
            account_id=self.account_id,
        )


async def _listing(
    page: PageNumber = 1, limit: PageSize = 100, sort_by: SortBy = None, account_id: str | None = None
) -> _Listing:
    return _Listing(page=page, limit=limit, sort_by=sort_by, account_id=account_id)


Listing = Annotated[_Listing, Depends(_listing)]


@router.get("/v4/models/{model_instance_id}/deployments", response_model=Page[DeploymentOut])
async def list_deployments(
    model_instance_id: str, principal: CurrentPrincipal, catalogue: CatalogueDep, listing: Listing
) -> Page[DeploymentOut]:
    return await listing.of(catalogue, principal, model_instance_id)


@router.get("/v4/model-deployments", response_model=Page[DeploymentOut])
async def list_all_deployments(
    principal: CurrentPrincipal, catalogue: CatalogueDep, listing: Listing
) -> Page[DeploymentOut]:
    return await listing.of(catalogue, principal, None)


@router.get("/v4/models/{model_instance_id}/deployments/{deployment_id}", response_model=DeploymentOut)
async def retrieve_deployment(
    model_instance_id: str, deployment_id: str, principal: CurrentPrincipal, catalogue: CatalogueDep
) -> DeploymentOut:
    return await catalogue.deployments.get(principal, model_instance_id, deployment_id)


@router.patch("/v4/models/{model_instance_id}/deployments/{deployment_id}", response_model=DeploymentOut)
async def update_deployment(
    model_instance_id: str,
    deployment_id: str,
    body: DeploymentUpdate,
    principal: CurrentPrincipal,
    catalogue: CatalogueDep,
) -> DeploymentOut:
    return await catalogue.deployments.update(principal, model_instance_id, deployment_id, body)


@router.delete("/v4/models/{model_instance_id}/deployments/{deployment_id}", response_model=DeleteResponse)
async def delete_deployment(
    model_instance_id: str, deployment_id: str, principal: CurrentPrincipal, catalogue: CatalogueDep
) -> DeleteResponse:
    await catalogue.deployments.delete(principal, model_instance_id, deployment_id)
    return DeleteResponse(count=1, success=True)


@router.get("/v4/model-deployments/{model_deployment_id}/usage-statistics", response_model=ModelUsage)
async def deployment_usage(
    model_deployment_id: str, principal: CurrentPrincipal, catalogue: CatalogueDep, window: UsageWindowDep
) -> ModelUsage:
    return await catalogue.deployments.usage(
        principal, model_deployment_id, start=window.start, end=window.end, chunks=window.chunks
    )
