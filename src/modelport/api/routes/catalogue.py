"""/user-info, /users/{id}, /v4/model-groups and /v4/model-templates, and usage by model name."""

from __future__ import annotations

from fastapi import APIRouter

from modelport.api.deps import CatalogueDep, CurrentPrincipal, PageNumber, PageSize, UsageWindowDep
from modelport.schemas.catalogue import DeleteResponse, ModelInstanceOut, ModelUsage, Page
from modelport.schemas.groups import (
    ModelGroupCreate,
    ModelGroupOut,
    ModelGroupUpdate,
    ModelTemplateCreate,
    ModelTemplateOut,
    UserInfo,
)

router = APIRouter()


@router.get("/user-info", response_model=UserInfo, response_model_exclude_none=True, tags=["users"])
async def get_user_info(principal: CurrentPrincipal, catalogue: CatalogueDep) -> UserInfo:
    return await catalogue.user_info(principal)


@router.get("/users/{user_id}", response_model=UserInfo, response_model_exclude_none=True, tags=["users"])
async def get_user(user_id: str, principal: CurrentPrincipal, catalogue: CatalogueDep) -> UserInfo:
    """A user or service account, for an admin of an account it belongs to (with those
    accounts only) or an operator (with every account); 404 otherwise."""
    return await catalogue.user_profile(principal, user_id)


# --- model groups ---------------------------------------------------------------------------


@router.post("/v4/model-groups", response_model=ModelGroupOut, tags=["model-groups"])
async def create_group(body: ModelGroupCreate, principal: CurrentPrincipal, catalogue: CatalogueDep) -> ModelGroupOut:
    return await catalogue.groups.create(principal, body)


@router.get("/v4/model-groups", response_model=Page[ModelGroupOut], tags=["model-groups"])
async def list_groups(
    principal: CurrentPrincipal,
    catalogue: CatalogueDep,
    page: PageNumber = 1,
    limit: PageSize = 100,
    account_id: str | None = None,
) -> Page[ModelGroupOut]:
    return await catalogue.groups.list(principal, page=page, limit=limit, account_id=account_id)


@router.get("/v4/model-groups/{model_group_id}", response_model=ModelGroupOut, tags=["model-groups"])
async def get_group(model_group_id: str, principal: CurrentPrincipal, catalogue: CatalogueDep) -> ModelGroupOut:
    return await catalogue.groups.get(principal, model_group_id)


@router.patch("/v4/model-groups/{model_group_id}", response_model=ModelGroupOut, tags=["model-groups"])
async def update_group(
    model_group_id: str, body: ModelGroupUpdate, principal: CurrentPrincipal, catalogue: CatalogueDep
) -> ModelGroupOut:
    return await catalogue.groups.update(principal, model_group_id, body)


@router.delete("/v4/model-groups/{model_group_id}", response_model=DeleteResponse, tags=["model-groups"])
async def delete_group(model_group_id: str, principal: CurrentPrincipal, catalogue: CatalogueDep) -> DeleteResponse:
    await catalogue.groups.delete(principal, model_group_id)
    return DeleteResponse(count=1, success=True)


@router.post(
    "/v4/model-groups/{model_group_id}/models/{model_instance_id}",
    response_model=ModelInstanceOut,
    response_model_exclude_none=True,
    tags=["model-groups"],
)
async def add_model_to_group(
    model_group_id: str, model_instance_id: str, principal: CurrentPrincipal, catalogue: CatalogueDep
) -> ModelInstanceOut:
    return await catalogue.groups.add_model(principal, model_group_id, model_instance_id)


@router.get("/v4/model-groups/{model_group_id}/usage-statistics", response_model=ModelUsage, tags=["model-groups"])
async def group_usage(
    model_group_id: str, principal: CurrentPrincipal, catalogue: CatalogueDep, window: UsageWindowDep
) -> ModelUsage:
    return await catalogue.groups.usage(
        principal, model_group_id, start=window.start, end=window.end, chunks=window.chunks
    )


@router.get("/v4/models/{model_name}/usage-statistics", response_model=ModelUsage, tags=["models"])
async def model_usage(
    model_name: str, principal: CurrentPrincipal, catalogue: CatalogueDep, window: UsageWindowDep
) -> ModelUsage:
    return await catalogue.models.usage(principal, model_name, start=window.start, end=window.end, chunks=window.chunks)


# --- model templates ------------------------------------------------------------------------


@router.post("/v4/model-templates", response_model=ModelTemplateOut, tags=["model-templates"])
async def create_template(
    body: ModelTemplateCreate, principal: CurrentPrincipal, catalogue: CatalogueDep
) -> ModelTemplateOut:
    return await catalogue.templates.create(principal, body)


@router.get("/v4/model-templates", response_model=Page[ModelTemplateOut], tags=["model-templates"])
async def list_templates(
    principal: CurrentPrincipal,
    catalogue: CatalogueDep,
    page: PageNumber = 1,
    limit: PageSize = 100,
    account_id: str | None = None,
) -> Page[ModelTemplateOut]:
    return await catalogue.templates.list(principal, page=page, limit=limit, account_id=account_id)


@router.get("/v4/model-templates/{model_template_id}", response_model=ModelTemplateOut, tags=["model-templates"])
async def get_template(
    model_template_id: str, principal: CurrentPrincipal, catalogue: CatalogueDep
) -> ModelTemplateOut:
    return await catalogue.templates.get(principal, model_template_id)


@router.delete("/v4/model-templates/{model_template_id}", response_model=DeleteResponse, tags=["model-templates"])
async def delete_template(
    model_template_id: str, principal: CurrentPrincipal, catalogue: CatalogueDep
) -> DeleteResponse:
    await catalogue.templates.delete(principal, model_template_id)
    return DeleteResponse(count=1, success=True)
