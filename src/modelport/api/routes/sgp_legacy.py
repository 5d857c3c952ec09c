"""SGP's older top-level routes: POST /v4/chat-completions and /v4/completions (the SDK's
`client.chat_completions.create` and `client.completions.create`).

They name a model, resolved to one of the selected account's deployments as the
compatible surfaces resolve theirs (`InferenceService.generate`: the key's allow-list
hides what it may not use, as a 404). Translation lives in `compat.sgp_legacy`; streams
and errors are the v4 routes' own (`routes.inference`).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from modelport.api.answers import TextSurface, asks_no_cache
from modelport.api.deps import CurrentPrincipal, Service, parse_body
from modelport.api.openapi_bodies import declared_body
from modelport.api.routes.inference import FRAMING
from modelport.compat import sgp_legacy as translate
from modelport.errors import Forbidden
from modelport.principal import Principal
from modelport.schemas.inference import EncodedEvent
from modelport.schemas.sgp_legacy import (
    ChatCompletionsRequest,
    ChatCompletionsResponse,
    CompletionsRequest,
    CompletionsResponse,
)

router = APIRouter(tags=["inference"])

_SURFACE: TextSurface[translate.LegacyRequest, BaseModel | EncodedEvent] = TextSurface(
    translate.text_request, translate.whole, translate.events
)


def _in_selected_account(principal: Principal, body: translate.LegacyRequest) -> None:
    """The SDK's `account_id` ("the account to use for usage tracking") names the account
    the call is metered to: here that is the selected one, so another is refused rather
    than silently metered elsewhere."""
    if body.account_id is not None and body.account_id != principal.account_id:
        raise Forbidden(
            f"account_id {body.account_id!r} is not the selected account: select it with the "
            "x-selected-account-id header"
        )


@router.post(
    "/v4/chat-completions",
    response_model=ChatCompletionsResponse,
    openapi_extra=declared_body(ChatCompletionsRequest, "SgpLegacy"),
)
async def top_level_chat_completions(request: Request, principal: CurrentPrincipal, service: Service) -> Response:
    body = await parse_body(request, ChatCompletionsRequest)
    _in_selected_account(principal, body)
    no_cache = asks_no_cache(request)
    return await _SURFACE.by_model(service, principal, body.model, body, FRAMING, no_cache=no_cache)


@router.post(
    "/v4/completions",
    response_model=CompletionsResponse,
    openapi_extra=declared_body(CompletionsRequest, "SgpLegacy"),
)
async def top_level_completions(request: Request, principal: CurrentPrincipal, service: Service) -> Response:
    body = await parse_body(request, CompletionsRequest)
    _in_selected_account(principal, body)
    no_cache = asks_no_cache(request)
    return await _SURFACE.by_model(service, principal, body.model, body, FRAMING, no_cache=no_cache)
