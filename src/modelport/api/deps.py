"""Request dependencies: who is calling, in which account, the catalogue and the service."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, TypeVar

from fastapi import Depends, Query, Request, Security
from fastapi.security import APIKeyHeader
from pydantic import BaseModel

from modelport.batches.service import Batches
from modelport.catalogue.catalogue import Catalogue
from modelport.catalogue.usage import MAX_CHUNKS
from modelport.errors import RateLimited, Unauthenticated, ValidationFailed
from modelport.inference.service import InferenceService
from modelport.limits.auth_throttle import AuthThrottle
from modelport.observability.requests import current_request
from modelport.principal import Principal
from modelport.schemas.catalogue import MAX_PAGE_NUMBER, MAX_PAGE_SIZE
from modelport.schemas.errors import validation_detail
from modelport.store import audit

ModelT = TypeVar("ModelT", bound=BaseModel)


# Dependencies are `async def` even where nothing is awaited: FastAPI runs plain `def`
# dependencies in a thread pool, which costs more than they do, on every request.


# Declared as a security scheme so that the OpenAPI document says how to authenticate
# and /docs offers "Authorize"; auto_error=False keeps modelport's own 401 below.
api_key_header = APIKeyHeader(name="x-api-key", auto_error=False)
# Also read by `current_principal`, from the headers directly rather than as FastAPI
# `Header()` parameters: FastAPI extracts and validates each declared header on every
# request, which cost more than the whole key lookup. `api.app` declares this one in
# the OpenAPI document for every operation that authenticates.
SELECTED_ACCOUNT_HEADER = "x-selected-account-id"


# The ASGI scope key under which a batch's line carries its caller (api/batch_calls.py):
# set only in-process, never from anything a client sends.
BATCH_PRINCIPAL = "modelport.batch_principal"


async def current_principal(
    request: Request, x_api_key: Annotated[str | None, Security(api_key_header)] = None
) -> Principal:
    given = request.scope.get(BATCH_PRINCIPAL)
    if isinstance(given, Principal):
        _act_as(given)
        return given
    headers = request.headers
    api_key = x_api_key or _bearer_token(headers.get("authorization"))
    if not api_key:
        raise Unauthenticated("missing API key: send an x-api-key header or Authorization: Bearer <key>")
    found: Catalogue = request.app.state.catalogue
    throttle: AuthThrottle = request.app.state.auth_throttle
    # The connection's address, or the client's as a trusted proxy names it (api.app).
    host = request.client.host if request.client else ""
    wait = await throttle.retry_after(host, api_key)
    if wait is not None:
        raise RateLimited(f"too many wrong API keys from this address: try again in {wait} s", retry_after=str(wait))
    try:
        principal = await found.access.principal(api_key, headers.get(SELECTED_ACCOUNT_HEADER))
    except Unauthenticated:
        await throttle.failed(host)
        raise
    throttle.accepted(host, api_key)
    _act_as(principal)
    return principal


def _act_as(principal: Principal) -> None:
    """Whatever this request changes in the catalogue is audited as its doing."""
    record = current_request.get()
    audit.acting.set(
        audit.Actor(
            kind="key",
            key_id=principal.key_id,
            identity_id=principal.identity_id,
            role="operator" if principal.is_operator else principal.role.value,
            request_id=record.request_id if record is not None else None,
        )
    )


def _bearer_token(authorization: str | None) -> str | None:
    """The key of `Authorization: Bearer <key>` (what the OpenAI SDK sends)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def inference_service(request: Request) -> InferenceService:
    service: InferenceService = request.app.state.service
    return service


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def batches_service(request: Request) -> Batches:
    found: Batches = request.app.state.batches
    return found


BatchesDep = Annotated[Batches, Depends(batches_service)]
Service = Annotated[InferenceService, Depends(inference_service)]


async def parse_body(request: Request, schema: type[ModelT]) -> ModelT:
    """Validate a JSON body with pydantic-core's own parser (strict JSON semantics, and
    one pass instead of json.loads + validation). Errors become 422s."""
    return schema.model_validate_json(await request.body())


async def catalogue(request: Request) -> Catalogue:
    found: Catalogue = request.app.state.catalogue
    return found


CatalogueDep = Annotated[Catalogue, Depends(catalogue)]
PageNumber = Annotated[int, Query(ge=1, le=MAX_PAGE_NUMBER)]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]


def parse_list(values: list[str] | None) -> list[str]:
    """The SDK sends list query parameters comma-joined (`view=Deployments,ModelGroup`)."""
    return [part for value in values or [] for part in value.split(",") if part]


@dataclass(frozen=True, slots=True)
class UsageWindow:
    """[start, end) in `chunks` equal parts: what a usage-statistics route reports on."""

    start: datetime
    end: datetime
    chunks: int


async def usage_window(
    start_date: datetime, end_date: datetime, chunks: Annotated[int, Query(ge=1, le=MAX_CHUNKS)]
) -> UsageWindow:
    """The query of every usage-statistics route."""
    _storable("start_date", start_date)
    _storable("end_date", end_date)
    return UsageWindow(start=start_date, end=end_date, chunks=chunks)


def storable_time(name: str, value: datetime | None) -> datetime | None:
    """An optional time of a query, checked as `_storable` does."""
    if value is not None:
        _storable(name, value)
    return value


def _storable(name: str, value: datetime) -> None:
    """Times are compared in UTC, and year 1 east of Greenwich or year 9999 west of it
    has no UTC equivalent that Python (or the database driver) can hold: a 422."""
    try:
        if value.tzinfo is not None:
            value.astimezone(UTC)
    except OverflowError:
        body = validation_detail(
            [{"loc": ["query", name], "msg": "out of the range of storable times in UTC", "type": "datetime_range"}]
        )
        raise ValidationFailed(str(body["detail"]), errors=body["errors"]) from None


UsageWindowDep = Annotated[UsageWindow, Depends(usage_window)]


@dataclass(frozen=True, slots=True)
class UsagePeriod:
    """[start, end): what a usage summary reports on."""

    start: datetime
    end: datetime


async def usage_period(start_date: datetime, end_date: datetime) -> UsagePeriod:
    _storable("start_date", start_date)
    _storable("end_date", end_date)
    return UsagePeriod(start=start_date, end=end_date)


UsagePeriodDep = Annotated[UsagePeriod, Depends(usage_period)]
