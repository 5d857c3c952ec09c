"""The OpenAI-compatible surface: /v1/chat/completions, /v1/completions, /v1/embeddings,
/v1/models, and the SGP SDK's OpenAI-shaped beta (/v4/beta/chat/completions, /v4/beta/completions),
answered by the same handlers. Translation lives in `modelport.compat.openai`; errors
are reshaped by `api.error_shapes`.

Streams end with `data: [DONE]` on /v1 (OpenAI's sentinel). The SGP SDK parses every
`data:` line as JSON, so the beta routes send no sentinel. An error after a stream has
started (a shutdown's included) is an `error` event whose data is OpenAI's error body,
which both SDKs raise.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from typing import Any, cast

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from modelport.api import several, sse
from modelport.api.answers import Pieces, TextSurface, asks_no_cache, cost_header
from modelport.api.deps import CatalogueDep, CurrentPrincipal, Service, parse_body
from modelport.api.error_shapes import openai_error
from modelport.api.openapi_bodies import declared_body
from modelport.api.routes import anthropic_compat
from modelport.compat import openai as translate
from modelport.errors import NotFound
from modelport.schemas import openai as wire
from modelport.schemas.catalogue import MAX_PAGE_SIZE
from modelport.schemas.inference import EncodedEvent
from modelport.schemas.retrieval import EmbeddingRequest, TokenEmbeddingRequest

router = APIRouter(tags=["openai-compatible"])


def _json(payload: BaseModel, headers: dict[str, str] | None = None) -> Response:
    return Response(payload.model_dump_json(exclude_none=True), media_type="application/json", headers=headers)


def _error(status: int, body: dict[str, Any]) -> bytes:
    return sse.error_event(openai_error(status, str(body["detail"])))


# /v1 ends a complete stream with OpenAI's `[DONE]`; the SGP SDK parses every `data:`
# line of /v4/beta as JSON, so there it ends with nothing.
_V1: sse.Framing[BaseModel | EncodedEvent] = sse.Framing(event=sse.data_event, error=_error, done=b"data: [DONE]\n\n")
_BETA: sse.Framing[BaseModel | EncodedEvent] = sse.Framing(event=sse.data_event, error=_error)


# Text-completion chunks are written with their nulls, as OpenAI writes them: every choice
# has its `finish_reason` (null until the last chunk) and `logprobs`, every chunk its `usage`.
def _with_nulls(payload: BaseModel) -> bytes:
    return b"data: " + payload.model_dump_json().encode() + b"\n\n"


_TEXT_V1: sse.Framing[BaseModel] = sse.Framing(event=_with_nulls, error=_error, done=b"data: [DONE]\n\n")
_TEXT_BETA: sse.Framing[BaseModel] = sse.Framing(event=_with_nulls, error=_error)


def _framing(request: Request) -> sse.Framing[BaseModel | EncodedEvent]:
    return _BETA if request.url.path.startswith("/v4/beta/") else _V1


def _text_framing(request: Request) -> sse.Framing[BaseModel]:
    return _TEXT_BETA if request.url.path.startswith("/v4/beta/") else _TEXT_V1


def _chat_chunk_models(body: wire.ChatCompletionBody, pieces: Pieces) -> AsyncIterator[wire.ChatCompletionChunk]:
    # Untemplated, every event is its model (the union is the templated stream's).
    return cast("AsyncIterator[wire.ChatCompletionChunk]", translate.chat_chunks(body, pieces, templated=False))


_CHAT: TextSurface[wire.ChatCompletionBody, BaseModel | EncodedEvent] = TextSurface(
    translate.chat_request, translate.chat_completion, translate.chat_chunks
)
# Several choices in one stream: `api/several.py` renumbers each event's choice.
_CHAT_CHOICES: TextSurface[wire.ChatCompletionBody, BaseModel] = TextSurface(
    translate.chat_request, translate.chat_completion, _chat_chunk_models
)
_TEXT: TextSurface[wire.TextCompletionBody, BaseModel] = TextSurface(
    translate.text_request, translate.text_completion, translate.text_chunks
)


# The bodies are parsed by hand (`parse_body`), and declared to OpenAPI (`declared_body`).
_CHAT_BODY = declared_body(wire.ChatCompletionBody, "OpenAI")
_TEXT_BODY = declared_body(wire.TextCompletionBody, "OpenAI")
_EMBEDDINGS_BODY = declared_body(wire.EmbeddingsBody, "OpenAI")


@router.post("/v1/chat/completions", response_model=wire.ChatCompletion, openapi_extra=_CHAT_BODY)
@router.post("/v4/beta/chat/completions", response_model=wire.ChatCompletion, openapi_extra=_CHAT_BODY)
async def chat_completions(request: Request, principal: CurrentPrincipal, service: Service) -> Response:
    body = await parse_body(request, wire.ChatCompletionBody)
    if several.several(body):  # never cached: n > 1 is not one deterministic answer
        return await several.answer(_CHAT_CHOICES, service, principal, body, _framing(request))
    no_cache = asks_no_cache(request)
    return await _CHAT.by_model(service, principal, body.model, body, _framing(request), no_cache=no_cache)


@router.post("/v1/completions", response_model=wire.TextCompletion, openapi_extra=_TEXT_BODY)
@router.post("/v4/beta/completions", response_model=wire.TextCompletion, openapi_extra=_TEXT_BODY)
async def completions(request: Request, principal: CurrentPrincipal, service: Service) -> Response:
    body = await parse_body(request, wire.TextCompletionBody)
    framing = _text_framing(request)
    # Never cached: several choices, prompts or an echo are not one deterministic answer.
    if several.several(body):
        return await several.answer(_TEXT, service, principal, body, framing)
    no_cache = asks_no_cache(request)
    return await _TEXT.by_model(service, principal, body.model, body, framing, no_cache=no_cache)


@router.post("/v1/embeddings", response_model=wire.EmbeddingList, openapi_extra=_EMBEDDINGS_BODY)
async def embeddings(request: Request, principal: CurrentPrincipal, service: Service) -> Response:
    body = await parse_body(request, wire.EmbeddingsBody)
    token_ids = body.token_ids
    inputs = TokenEmbeddingRequest(token_ids=token_ids) if token_ids else EmbeddingRequest(texts=body.texts or [])
    read = await service.embed_model(principal, body.model, inputs, dimensions=body.dimensions)
    answer, tokens = read.answer, read.answer.tokens_used or 0
    return _json(
        wire.EmbeddingList(
            data=[
                wire.EmbeddingItem(index=index, embedding=_encoded(vector, body.encoding_format))
                for index, vector in enumerate(answer.embeddings)
            ],
            model=body.model,
            usage=wire.EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens, cost=read.cost),
        ),
        cost_header(read.cost),
    )


def _encoded(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # OpenAI's: the little-endian float32s, base64-encoded
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


async def _model_cards(principal: CurrentPrincipal, catalogue: CatalogueDep) -> list[wire.ModelCard]:
    page = await catalogue.models.list(
        principal, page=1, limit=MAX_PAGE_SIZE, model_type=None, sort_by=None, with_deployments=False
    )
    return [
        wire.ModelCard(
            id=model.name,
            created=int(model.created_at.timestamp()),
            owned_by=(model.model_vendor or "other").lower(),
        )
        for model in page.items
    ]


# An Anthropic client (it sends anthropic-version) gets Anthropic's shapes.
@router.get("/v1/models", response_model=wire.ModelList)
async def list_models(request: Request, principal: CurrentPrincipal, catalogue: CatalogueDep) -> Any:
    if anthropic_compat.asks_anthropic_shape(request):
        return await anthropic_compat.model_page(request, principal, catalogue)
    return wire.ModelList(data=await _model_cards(principal, catalogue))


@router.get("/v1/models/{model:path}", response_model=wire.ModelCard)
async def get_model(model: str, request: Request, principal: CurrentPrincipal, catalogue: CatalogueDep) -> Any:
    if anthropic_compat.asks_anthropic_shape(request):
        return await anthropic_compat.model_info(model, principal, catalogue)
    for card in await _model_cards(principal, catalogue):
        if model in (card.id, f"{card.owned_by}/{card.id}"):
            return card
    # A deployment id is a model to /v1 too (routing: exactly that deployment).
    page = await catalogue.models.list(
        principal, page=1, limit=MAX_PAGE_SIZE, model_type=None, sort_by=None, with_deployments=True
    )
    for found in page.items:
        for deployment in found.deployments or []:
            if deployment.id == model:
                created = int(deployment.created_at.timestamp())
                return wire.ModelCard(id=model, created=created, owned_by=(found.model_vendor or "other").lower())
    raise NotFound(f"model {model!r} not found")
