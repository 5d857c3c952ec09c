"""/user-info, /v4/model-groups and /v4/model-templates, and usage by model name."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request

from modelport.api.deps import CurrentPrincipal, PageNumber, PageSize
from modelport.api.routes.deployments import _storable
from modelport.catalogue.groups import ModelGroups, usage_of_model_name
from modelport.catalogue.templates import ModelTemplates
from modelport.catalogue.users import user_info
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
Chunks = Annotated[int, Query(ge=1, le=1000)]


def _groups(request: Request) -> ModelGroups:
    return ModelGroups(request.app.state.sessions)


def _templates(request: Request) -> ModelTemplates:
    return ModelTemplates(request.app.state.sessions)


async def fresh_usage(request: Request) -> None:
    """Usage is written in batches off the hot path; a read first writes what this
    process has pending, so it includes the calls made just before it."""
    await request.app.state.usage.flush()


@router.get("/user-info", response_model=UserInfo, response_model_exclude_none=True, tags=["users"])
async def get_user_info(request: Request, principal: CurrentPrincipal) -> UserInfo:
    return await user_info(request.app.state.sessions, principal)


# --- model groups ---------------------------------------------------------------------------


@router.post("/v4/model-groups", response_model=ModelGroupOut, tags=["model-groups"])
async def create_group(body: ModelGroupCreate, request: Request, principal: CurrentPrincipal) -> ModelGroupOut:
    return await _groups(request).create(principal, body)


@router.get("/v4/model-groups", response_model=Page[ModelGroupOut], tags=["model-groups"])
async def list_groups(
    request: Request, principal: CurrentPrincipal, page: PageNumber = 1, limit: PageSize = 100
) -> Page[ModelGroupOut]:
    return await _groups(request).list(principal, page=page, limit=limit)


@router.get("/v4/model-groups/{model_group_id}", response_model=ModelGroupOut, tags=["model-groups"])
async def get_group(model_group_id: str, request: Request, principal: CurrentPrincipal) -> ModelGroupOut:
    return await _groups(request).get(principal, model_group_id)


@router.patch("/v4/model-groups/{model_group_id}", response_model=ModelGroupOut, tags=["model-groups"])
async def update_group(
    model_group_id: str, body: ModelGroupUpdate, request: Request, principal: CurrentPrincipal
) -> ModelGroupOut:
    return await _groups(request).update(principal, model_group_id, body)


@router.delete("/v4/model-groups/{model_group_id}", response_model=DeleteResponse, tags=["model-groups"])
async def delete_group(model_group_id: str, request: Request, principal: CurrentPrincipal) -> DeleteResponse:
    await _groups(request).delete(principal, model_group_id)
    return DeleteResponse(count=1, success=True)


@router.post(
    "/v4/model-groups/{model_group_id}/models/{model_instance_id}",
    response_model=ModelInstanceOut,
    response_model_exclude_none=True,
    tags=["model-groups"],
)
async def add_model_to_group(
    model_group_id: str, model_instance_id: str, request: Request, principal: CurrentPrincipal
) -> ModelInstanceOut:
    return await _groups(request).add_model(principal, model_group_id, model_instance_id)


@router.get("/v4/model-groups/{model_group_id}/usage-statistics", response_model=ModelUsage, tags=["model-groups"])
async def group_usage(
    model_group_id: str,
    request: Request,
    principal: CurrentPrincipal,
    start_date: datetime,
    end_date: datetime,
    chunks: Chunks,
) -> ModelUsage:
    _storable("start_date", start_date)
    _storable("end_date", end_date)
    await fresh_usage(request)
    return await _groups(request).usage(principal, model_group_id, start=start_date, end=end_date, chunks=chunks)


@router.get("/v4/models/{model_name}/usage-statistics", response_model=ModelUsage, tags=["models"])
async def model_usage(
    model_name: str,
    request: Request,
    principal: CurrentPrincipal,
    start_date: datetime,
    end_date: datetime,
    chunks: Chunks,
) -> ModelUsage:
    _storable("start_date", start_date)
    _storable("end_date", end_date)
    await fresh_usage(request)
    return await usage_of_model_name(
        request.app.state.sessions, principal, model_name, start=start_date, end=end_date, chunks=chunks
    )


# --- model templates ------------------------------------------------------------------------


@router.post("/v4/model-templates", response_model=ModelTemplateOut, tags=["model-templates"])
async def create_template(body: ModelTemplateCreate, request: Request, principal: CurrentPrincipal) -> ModelTemplateOut:
    return await _templates(request).create(principal, body)


@router.get("/v4/model-templates", response_model=Page[ModelTemplateOut], tags=["model-templates"])
async def list_templates(
    request: Request, principal: CurrentPrincipal, page: PageNumber = 1, limit: PageSize = 100
) -> Page[ModelTemplateOut]:
    return await _templates(request).list(principal, page=page, limit=limit)


@router.get("/v4/model-templates/{model_template_id}", response_model=ModelTemplateOut, tags=["model-templates"])
async def get_template(model_template_id: str, request: Request, principal: CurrentPrincipal) -> ModelTemplateOut:
    return await _templates(request).get(principal, model_template_id)


@router.delete("/v4/model-templates/{model_template_id}", response_model=DeleteResponse, tags=["model-templates"])
async def delete_template(model_template_id: str, request: Request, principal: CurrentPrincipal) -> DeleteResponse:
    await _templates(request).delete(principal, model_template_id)
    return DeleteResponse(count=1, success=True)
