"""The Anthropic Messages surface: POST /v1/messages and /v1/messages/count_tokens, for
any deployment (the `model` is routed like on /v1/chat/completions), and GET /v1/models
in Anthropic's shape when the caller is an Anthropic client (it sends
`anthropic-version`). Translation lives in `modelport.compat.anthropic`; errors are
reshaped by `api.error_shapes`.

`?beta=true` (what the SDK's beta client and Claude Code add) changes nothing here; the
`anthropic-beta` header is sent on to ANTHROPIC deployments with the request.

count_tokens generates nothing and records no usage: the embedded model counts with
its own tokenizer and chat template, an ANTHROPIC deployment's upstream with its count
endpoint, and any other vendor gets modelport's estimate, marked by the response header
`x-modelport-estimated: true`.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from modelport.api import sse
from modelport.api.answers import TextSurface, asks_no_cache
from modelport.api.deps import CatalogueDep, CurrentPrincipal, Service, parse_body
from modelport.api.error_shapes import anthropic_error
from modelport.compat import anthropic as translate
from modelport.errors import InvalidRequest
from modelport.principal import Principal
from modelport.schemas import anthropic as wire
from modelport.schemas.catalogue import MAX_PAGE_SIZE

router = APIRouter(tags=["anthropic-compatible"])

ESTIMATED_HEADER = "x-modelport-estimated"
# GET /v1/models: Anthropic's default page size and its largest.
DEFAULT_MODELS_LIMIT = 20
MAX_MODELS_LIMIT = 1000


def _event(event: translate.Event) -> bytes:
    return sse.named_event(*event)


def _error(status: int, body: dict[str, Any]) -> bytes:
    return sse.error_event(anthropic_error(status, str(body["detail"])))


_FRAMING: sse.Framing[translate.Event] = sse.Framing(event=_event, error=_error)


# Anthropic's bodies show unset fields as null.
_MESSAGES = TextSurface(translate.message_request, translate.message, translate.message_events, exclude_none=False)


def _declared(model: type[BaseModel]) -> dict[str, Any]:
    """The body's JSON schema for the OpenAPI document (the body is parsed by hand, see
    `parse_body`), its definitions inlined so the operation stands alone."""
    schema = model.model_json_schema(by_alias=True)
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(definitions[ref.removeprefix("#/$defs/")])
            # A discriminator's mapping names definitions, gone once inlined. Its branches
            # differ in `type`, so anyOf says the same as oneOf, and a fuzzer draws it
            # without checking each case against every other branch.
            kept = {key: inline(value) for key, value in node.items() if key != "discriminator"}
            if "oneOf" in kept:
                kept["anyOf"] = kept.pop("oneOf")
            return kept
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}


async def _body(request: Request, schema: type[wire.CountTokensBody]) -> Any:
    body = await parse_body(request, schema)
    body._anthropic_beta = request.headers.get("anthropic-beta")
    return body


@router.post("/v1/messages", response_model=wire.MessageResponse, openapi_extra=_declared(wire.MessagesBody))
async def messages(request: Request, principal: CurrentPrincipal, service: Service) -> Response:
    body: wire.MessagesBody = await _body(request, wire.MessagesBody)
    no_cache = asks_no_cache(request)
    return await _MESSAGES.by_model(service, principal, body.model, body, _FRAMING, no_cache=no_cache)


@router.post("/v1/messages/count_tokens", response_model=wire.TokenCount, openapi_extra=_declared(wire.CountTokensBody))
async def count_tokens(request: Request, principal: CurrentPrincipal, service: Service) -> Response:
    body: wire.CountTokensBody = await _body(request, wire.CountTokensBody)
    counted = await service.count_tokens(principal, body.model, translate.message_request(body))
    headers = {ESTIMATED_HEADER: "true"} if counted.estimated else None
    return Response(wire.TokenCount(input_tokens=counted.tokens).model_dump_json(), media_type="application/json",
                    headers=headers)  # fmt: skip


# --- GET /v1/models for Anthropic clients (dispatched from api/routes/openai_compat.py) ---


def asks_anthropic_shape(request: Request) -> bool:
    return "anthropic-version" in request.headers


async def _model_infos(principal: Principal, catalogue: CatalogueDep) -> list[wire.ModelInfo]:
    page = await catalogue.models.list(
        principal, page=1, limit=MAX_PAGE_SIZE, model_type=None, sort_by=None, with_deployments=False
    )
    return [
        wire.ModelInfo(
            id=model.name,
            display_name=model.display_name or model.name,
            created_at=model.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        )
        for model in page.items
    ]


async def model_page(request: Request, principal: Principal, catalogue: CatalogueDep) -> Response:
    """Anthropic's model list: newest first, paged by `limit`, `after_id`, `before_id`."""
    infos = sorted(await _model_infos(principal, catalogue), key=lambda info: info.created_at, reverse=True)
    query = request.query_params
    try:
        limit = int(query.get("limit", DEFAULT_MODELS_LIMIT))
    except ValueError:
        raise InvalidRequest("limit must be an integer", param="limit") from None
    if not 1 <= limit <= MAX_MODELS_LIMIT:
        raise InvalidRequest(f"limit must lie in [1, {MAX_MODELS_LIMIT}]", param="limit")
    ids = [info.id for info in infos]
    start, end = 0, len(infos)
    if query.get("after_id") in ids:
        start = ids.index(str(query["after_id"])) + 1
    if query.get("before_id") in ids:
        end = ids.index(str(query["before_id"]))
    window = infos[start:end]
    # Paging backwards (before_id alone) shows the models right before it.
    shown = window[-limit:] if "before_id" in query and "after_id" not in query else window[:limit]
    page = wire.ModelPage(
        data=shown,
        has_more=len(window) > limit,
        first_id=shown[0].id if shown else None,
        last_id=shown[-1].id if shown else None,
    )
    return Response(page.model_dump_json(), media_type="application/json")


async def model_info(model: str, principal: Principal, catalogue: CatalogueDep) -> Response:
    for info in await _model_infos(principal, catalogue):
        if info.id == model:
            return Response(info.model_dump_json(), media_type="application/json")
    return JSONResponse(anthropic_error(404, f"model {model!r} not found"), status_code=404)
