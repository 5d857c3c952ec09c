"""POST /v4/models/{model_deployment_id}/chat-completions and /completions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from modelport.api import sse
from modelport.api.answers import TextSurface, asks_no_cache
from modelport.api.deps import CurrentPrincipal, Service, parse_body
from modelport.compat import sgp
from modelport.schemas.inference import ChatCompletionRequest, CompletionRequest, CompletionResponse, EncodedEvent

router = APIRouter(tags=["inference"])

# The bodies these routes parse by hand (for speed, see `parse_body`), so FastAPI does not
# see them: they are declared to OpenAPI here, and `api.app` adds their schemas.
BODY_MODELS: tuple[type[BaseModel], ...] = (ChatCompletionRequest, CompletionRequest)


def _error(status: int, body: dict[str, Any]) -> bytes:
    return sse.error_event({"status_code": status, **body})


# SGP's streams: no `[DONE]` (the SDK parses every `data:` line as JSON), and an error
# event whose data is modelport's own error body with its status.
FRAMING: sse.Framing[BaseModel | EncodedEvent] = sse.Framing(event=sse.data_event, error=_error)


def _declared_body(model: type[BaseModel]) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_V4: TextSurface[CompletionRequest, BaseModel | EncodedEvent] = TextSurface(
    sgp.text_request, sgp.completion, sgp.completion_events
)


def _route(path: str, name: str, schema: type[CompletionRequest]) -> None:
    """POST `path`: the v4 request `schema` (a chat's or a plain completion's), answered
    by the deployment the path names. One handler for both: they differ only in the body."""

    async def answer(
        model_deployment_id: str, request: Request, principal: CurrentPrincipal, service: Service
    ) -> Response:
        body = await parse_body(request, schema)
        no_cache = asks_no_cache(request)
        return await _V4.at_deployment(service, principal, model_deployment_id, body, FRAMING, no_cache=no_cache)

    # `name` keeps each operation's OpenAPI id and summary what they were as two functions.
    router.post(path, response_model=CompletionResponse, openapi_extra=_declared_body(schema), name=name)(answer)


_route("/v4/models/{model_deployment_id}/chat-completions", "chat_completions", ChatCompletionRequest)
_route("/v4/models/{model_deployment_id}/completions", "completions", CompletionRequest)
