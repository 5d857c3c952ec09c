"""POST /v4/models/{model_deployment_id}/chat-completions and /completions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from modelport.api import sse
from modelport.api.deps import CurrentPrincipal, Service, parse_body
from modelport.compat import sgp
from modelport.schemas.inference import ChatCompletionRequest, CompletionRequest, CompletionResponse

router = APIRouter(tags=["inference"])

# The bodies these routes parse by hand (for speed, see `parse_body`), so FastAPI does not
# see them: they are declared to OpenAPI here, and `api.app` adds their schemas.
BODY_MODELS: tuple[type[BaseModel], ...] = (ChatCompletionRequest, CompletionRequest)


def _error(status: int, body: dict[str, Any]) -> bytes:
    return sse.error_event({"status_code": status, **body})


# SGP's streams: no `[DONE]` (the SDK parses every `data:` line as JSON), and an error
# event whose data is modelport's own error body with its status.
_FRAMING: sse.Framing[BaseModel] = sse.Framing(event=sse.data_event, error=_error)


def _declared_body(model: type[BaseModel]) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def _answer(
    service: Service, principal: CurrentPrincipal, deployment_id: str, body: CompletionRequest
) -> Response:
    messages = sgp.messages(body)
    if body.stream:
        pieces = await service.generate_stream_at(principal, deployment_id, body, messages=messages)
        return sse.EventStream(sgp.completion_events(body, pieces), _FRAMING)
    generated = await service.generate_at(principal, deployment_id, body, messages=messages)
    return Response(sgp.completion(body, generated).model_dump_json(exclude_none=True), media_type="application/json")


@router.post(
    "/v4/models/{model_deployment_id}/chat-completions",
    response_model=CompletionResponse,
    openapi_extra=_declared_body(ChatCompletionRequest),
)
async def chat_completions(
    model_deployment_id: str, request: Request, principal: CurrentPrincipal, service: Service
) -> Response:
    body = await parse_body(request, ChatCompletionRequest)
    return await _answer(service, principal, model_deployment_id, body)


@router.post(
    "/v4/models/{model_deployment_id}/completions",
    response_model=CompletionResponse,
    openapi_extra=_declared_body(CompletionRequest),
)
async def completions(
    model_deployment_id: str, request: Request, principal: CurrentPrincipal, service: Service
) -> Response:
    body = await parse_body(request, CompletionRequest)
    return await _answer(service, principal, model_deployment_id, body)
