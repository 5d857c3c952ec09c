"""Reading the registry: models and deployments visible in the selected account."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from modelport.api.deps import CurrentPrincipal, Sessions
from modelport.errors import NotFound
from modelport.schemas.registry import MAX_PAGE_SIZE, DeploymentOut, ModelInstanceOut, Page
from modelport.store import repo

router = APIRouter(tags=["registry"])

PageNumber = Annotated[int, Query(ge=1)]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]


@router.get("/v4/models/{model_id}", response_model=ModelInstanceOut, response_model_exclude_none=True)
async def retrieve_model(
    model_id: str,
    principal: CurrentPrincipal,
    sessions: Sessions,
    view: Annotated[list[str] | None, Query()] = None,
) -> ModelInstanceOut:
    async with sessions() as session:
        model = await repo.get_model(session, account_id=principal.account_id, model_id=model_id)
        if model is None:
            raise NotFound(f"model {model_id} not found")
        deployments, total = await repo.list_deployments(
            session, account_id=principal.account_id, model_id=model_id, page=1, limit=MAX_PAGE_SIZE
        )
    return ModelInstanceOut.of(
        model, deployment_count=total, deployments=deployments if view and "Deployments" in view else None
    )


@router.get("/v4/model-deployments", response_model=Page[DeploymentOut])
async def list_all_deployments(
    principal: CurrentPrincipal, sessions: Sessions, page: PageNumber = 1, limit: PageSize = 100
) -> Page[DeploymentOut]:
    async with sessions() as session:
        rows, total = await repo.list_deployments(session, account_id=principal.account_id, page=page, limit=limit)
    return Page(
        items=[DeploymentOut.of(row) for row in rows],
        current_page=page,
        items_per_page=limit,
        total_item_count=total,
    )


@router.get("/v4/models/{model_instance_id}/deployments", response_model=Page[DeploymentOut])
async def list_deployments(
    model_instance_id: str,
    principal: CurrentPrincipal,
    sessions: Sessions,
    page: PageNumber = 1,
    limit: PageSize = 100,
) -> Page[DeploymentOut]:
    async with sessions() as session:
        if await repo.get_model(session, account_id=principal.account_id, model_id=model_instance_id) is None:
            raise NotFound(f"model {model_instance_id} not found")
        rows, total = await repo.list_deployments(
            session, account_id=principal.account_id, model_id=model_instance_id, page=page, limit=limit
        )
    return Page(
        items=[DeploymentOut.of(row) for row in rows],
        current_page=page,
        items_per_page=limit,
        total_item_count=total,
    )


@router.get("/v4/models/{model_instance_id}/deployments/{deployment_id}", response_model=DeploymentOut)
async def retrieve_deployment(
    model_instance_id: str, deployment_id: str, principal: CurrentPrincipal, sessions: Sessions
) -> DeploymentOut:
    async with sessions() as session:
        deployment = await repo.get_deployment(session, account_id=principal.account_id, deployment_id=deployment_id)
    if deployment is None or deployment.model_id != model_instance_id:
        raise NotFound(f"deployment {deployment_id} of model {model_instance_id} not found")
    return DeploymentOut.of(deployment)
