"""OpenAI's Responses API: POST /v1/responses (whole or streamed, `model` routed like on
/v1/chat/completions), GET and DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items
and POST /v1/responses/{id}/cancel. Translation lives in `modelport.compat.responses`,
stored responses in `modelport.catalogue.responses`; errors are OpenAI's shape
(`api.error_shapes`).

Streams carry OpenAI's named events (`event: response.output_text.delta` and its
`data:`), with no `[DONE]` (the Responses API sends none). A failure after the stream
started ends it with an `error` event, which the `openai` SDK raises.

Only background responses can be cancelled, and none are made here (`background: true`
is a 400), so cancelling an existing response is the 400 OpenAI answers for one that
was not made in the background.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from modelport.api import sse
from modelport.api.answers import TextSurface, asks_no_cache, cost_header
from modelport.api.deps import CatalogueDep, CurrentPrincipal, Service
from modelport.api.error_shapes import openai_error
from modelport.catalogue.responses import StoredResponses
from modelport.compat import responses as translate
from modelport.compat import responses_relay as relay
from modelport.compat.responses_answer import ResponseRun
from modelport.errors import InvalidRequest
from modelport.inference.relay import Relayed
from modelport.principal import Principal
from modelport.schemas import responses as wire

router = APIRouter(tags=["openai-compatible"])

# The body this module parses by hand (see `parse_body`), declared to OpenAPI here;
# `api.app` adds its schema to the document.
BODY_MODELS: tuple[type[BaseModel], ...] = (wire.ResponsesBody,)
_DECLARED_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ResponsesBody"}}},
    }
}


def _json(payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload), media_type="application/json", headers=headers)


def _parsed(raw: bytes) -> wire.ResponsesBody:
    """The body, or a 400 naming the first refused field as OpenAI does (`param`)."""
    try:
        return wire.ResponsesBody.model_validate_json(raw)
    except ValidationError as exc:
        # Of a union's alternatives (`input` as a string or items), the one that got
        # furthest into the body says best what is wrong.
        error = max(exc.errors(include_url=False), key=lambda found: len(found["loc"]))
        try:
            document: Any = json.loads(raw)
        except ValueError:
            document = None
        param = _param(document, error["loc"], missing=error["type"] == "missing")
        if error["type"] == "extra_forbidden":
            message = f"Unknown parameter: '{param}'."
        elif param is None:
            message = f"invalid request: {error['msg']}"
        else:
            message = f"Invalid value for '{param}': {error['msg']}"
        raise InvalidRequest(message, param=param) from None


def _param(document: Any, location: tuple[int | str, ...], *, missing: bool) -> str | None:
    """The place in the body a validation error points at, `input.0.content` style.
    Pydantic's location also names the union members it tried (`list[...]`, a tag like
    `function_call`); walking the body itself keeps only the real keys and indexes."""
    parts: list[str] = []
    here = document
    for index, part in enumerate(location):
        in_dict = isinstance(here, dict) and isinstance(part, str) and part in here
        in_list = isinstance(here, list) and isinstance(part, int) and part < len(here)
        if in_dict or in_list:
            here = here[part]
        elif not (missing and index == len(location) - 1):  # the missing field is not in the body
            continue
        parts.append(str(part))
    return ".".join(parts) or None


def _event(event: translate.Event) -> bytes:
    return sse.named_event(*event)


@router.post("/v1/responses", response_model=wire.ResponseObject, openapi_extra=_DECLARED_BODY)
async def create_response(
    request: Request, principal: CurrentPrincipal, service: Service, catalogue: CatalogueDep
) -> Response:
    raw = await request.body()
    body = _parsed(raw)
    if body.background:
        raise InvalidRequest("background mode is not supported on this server", param="background")
    stored = catalogue.responses
    earlier = await stored.continued(principal, body.previous_response_id) if body.previous_response_id else []
    items = translate.input_items(body, earlier)
    conversation = [*earlier, *items]
    if body.store is True and not stored.fits(items, conversation):
        raise InvalidRequest(
            "this conversation is too large to store (MODELPORT_RESPONSES_MAX_STORED_BYTES): send store: false",
            param="store",
        )

    async def save(run: ResponseRun) -> None:
        assert run.response is not None
        await stored.save(principal, response=run.response, input_items=run.input_items, conversation=run.conversation)

    relayed = await service.relay_responses(
        principal, body.model, relay.upstream_body(json.loads(raw), earlier, items), stream=body.stream
    )
    if relayed is not None:
        return await _relayed(relayed, body, principal, stored, items, conversation)

    run = ResponseRun(body, items, conversation, save=save)

    def error(status: int, detail: dict[str, Any]) -> bytes:
        shaped = openai_error(status, str(detail["detail"]))["error"]
        return sse.error_event({**run.error_event(status, shaped["message"], shaped["code"]), "error": shaped})

    surface: TextSurface[wire.ResponsesBody, translate.Event] = TextSurface(
        lambda parsed: translate.response_request(parsed, conversation), run.whole, run.events, exclude_none=False
    )
    framing = sse.Framing(event=_event, error=error)
    answer = await surface.by_model(service, principal, body.model, body, framing, no_cache=asks_no_cache(request))
    if not body.stream:
        await run.keep()
    return answer


async def _relayed(
    relayed: Relayed,
    body: wire.ResponsesBody,
    principal: Principal,
    stored: StoredResponses,
    items: list[dict[str, Any]],
    conversation: list[dict[str, Any]],
) -> Response:
    """The answer of an upstream that served the Responses API itself, as it came, its
    response kept here per account (`compat.responses_relay`)."""

    async def save(response: dict[str, Any]) -> None:
        await stored.save(principal, response=response, input_items=items, conversation=conversation)

    answer = relay.RelayedAnswer(body.previous_response_id, body.stored(), save)
    if relayed.response is not None:
        return _json(await answer.whole(relayed.response), cost_header(relayed.cost))
    assert relayed.events is not None

    def error(status: int, detail: dict[str, Any]) -> bytes:
        shaped = openai_error(status, str(detail["detail"]))["error"]
        failure = {"type": "error", "code": shaped["code"] or str(status), "message": shaped["message"]}
        number = answer.last_sequence_number + 1
        return sse.error_event({**failure, "param": None, "sequence_number": number, "error": shaped})

    return sse.EventStream(answer.events(relayed.events), sse.Framing(event=_event, error=error))


@router.get("/v1/responses/{response_id}", response_model=wire.ResponseObject)
async def get_response(response_id: str, principal: CurrentPrincipal, catalogue: CatalogueDep) -> Response:
    return _json((await catalogue.responses.get(principal, response_id)).response)


@router.delete("/v1/responses/{response_id}", response_model=wire.DeletedResponse)
async def delete_response(
    response_id: str, principal: CurrentPrincipal, catalogue: CatalogueDep
) -> wire.DeletedResponse:
    await catalogue.responses.delete(principal, response_id)
    return wire.DeletedResponse(id=response_id)


@router.get("/v1/responses/{response_id}/input_items", response_model=wire.InputItemList)
async def list_input_items(
    response_id: str,
    principal: CurrentPrincipal,
    catalogue: CatalogueDep,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=wire.MAX_ITEMS_PAGE)] = wire.DEFAULT_ITEMS_PAGE,
) -> wire.InputItemList:
    page = await catalogue.responses.input_items(principal, response_id, order=order, after=after, limit=limit)
    return wire.InputItemList(
        data=page.items,
        first_id=page.items[0].get("id") if page.items else None,
        last_id=page.items[-1].get("id") if page.items else None,
        has_more=page.has_more,
    )


@router.post("/v1/responses/{response_id}/cancel", response_model=wire.ResponseObject)
async def cancel_response(response_id: str, principal: CurrentPrincipal, catalogue: CatalogueDep) -> Response:
    await catalogue.responses.get(principal, response_id)  # 404 for an unknown one
    raise InvalidRequest("Only responses created with background mode can be cancelled.", param="response_id")
