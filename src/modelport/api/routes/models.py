"""/v4/models: the models of the selected account."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from modelport.api.deps import CatalogueDep, CurrentPrincipal, PageNumber, PageSize, parse_list
from modelport.schemas.catalogue import DeleteResponse, ModelCreate, ModelInstanceOut, ModelUpdate, Page

router = APIRouter(tags=["models"])


@router.post("/v4/models", response_model=ModelInstanceOut, response_model_exclude_none=True)
async def create_model(body: ModelCreate, principal: CurrentPrincipal, catalogue: CatalogueDep) -> ModelInstanceOut:
    return await catalogue.models.create(principal, body)


@router.get("/v4/models", response_model=Page[ModelInstanceOut], response_model_exclude_none=True)
async def list_models(
    principal: CurrentPrincipal,
    catalogue: CatalogueDep,
    page: PageNumber = 1,
    limit: PageSize = 100,
    model_type: str | None = None,
    model_group_id: str | None = None,
    account_id: str | None = None,
    sort_by: Annotated[list[str] | None, Query()] = None,
    view: Annotated[list[str] | None, Query()] = None,
) -> Page[ModelInstanceOut]:
    return await catalogue.models.list(
        principal,
        page=page,
        limit=limit,
        model_type=model_type,
        model_group_id=model_group_id,
        account_id=account_id,
        sort_by=sort_by,
        with_deployments="Deployments" in parse_list(view),
        with_group="ModelGroup" in parse_list(view),
    )


@router.get("/v4/models/{model_id}", response_model=ModelInstanceOut, response_model_exclude_none=True)
async def retrieve_model(
    model_id: str,
    principal: CurrentPrincipal,
    catalogue: CatalogueDep,
    view: Annotated[list[str] | None, Query()] = None,
) -> ModelInstanceOut:
    views = parse_list(view)
    return await catalogue.models.get(
        principal, model_id, with_deployments="Deployments" in views, with_group="ModelGroup" in views
    )


@router.patch("/v4/models/{model_id}", response_model=ModelInstanceOut, response_model_exclude_none=True)
async def update_model(
    model_id: str, body: ModelUpdate, principal: CurrentPrincipal, catalogue: CatalogueDep
) -> ModelInstanceOut:
    return await catalogue.models.update(principal, model_id, body)


@router.delete("/v4/models/{model_id}", response_model=DeleteResponse)
async def delete_model(model_id: str, principal: CurrentPrincipal, catalogue: CatalogueDep) -> DeleteResponse:
    await catalogue.models.delete(principal, model_id)
    return DeleteResponse(count=1, success=True)
