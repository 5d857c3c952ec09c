"""The Anthropic Messages surface: POST /v1/messages and /v1/messages/count_tokens, for
any deployment (the `model` is routed like on /v1/chat/completions). Translation lives
in `modelport.compat.anthropic`; errors are reshaped by `api.error_shapes`.

count_tokens asks the deployment for one token and reports the prompt tokens it
counted: exact for every vendor (each counts with its own tokenizer), at the price of
a one-token generation, recorded in usage like any other call.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from modelport.api import sse
from modelport.api.answers import TextSurface
from modelport.api.deps import CurrentPrincipal, Service, parse_body
from modelport.api.error_shapes import anthropic_error
from modelport.compat import anthropic as translate
from modelport.schemas import anthropic as wire

router = APIRouter(tags=["anthropic-compatible"])


def _event(event: translate.Event) -> bytes:
    return sse.named_event(*event)


def _error(status: int, body: dict[str, Any]) -> bytes:
    return sse.error_event(anthropic_error(status, str(body["detail"])))


_FRAMING: sse.Framing[translate.Event] = sse.Framing(event=_event, error=_error)


# Anthropic's bodies show unset fields as null.
_MESSAGES = TextSurface(translate.message_request, translate.message, translate.message_events, exclude_none=False)


@router.post("/v1/messages", response_model=wire.MessageResponse)
async def messages(request: Request, principal: CurrentPrincipal, service: Service) -> Response:
    body = await parse_body(request, wire.MessagesBody)
    return await _MESSAGES.by_model(service, principal, body.model, body, _FRAMING)


@router.post("/v1/messages/count_tokens", response_model=wire.TokenCount)
async def count_tokens(request: Request, principal: CurrentPrincipal, service: Service) -> wire.TokenCount:
    body = await parse_body(request, wire.CountTokensBody)
    generated = await service.generate(principal, body.model, translate.message_request(body))
    return wire.TokenCount(input_tokens=generated.prompt_tokens or 0)
