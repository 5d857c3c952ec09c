"""The SGP v4 shapes (`/v4/models/{id}/chat-completions` and `/completions`) <-> the one
InferenceService, as `compat/openai.py` and `compat/anthropic.py` are for theirs.

A v4 request is already what the service takes for its sampling parameters; a chat
request's `chat_history` and `prompt` become OpenAI-style messages (the prompt last, as
a user turn; parts with images kept as parts). The service's `Generated` pieces become
`CompletionResponse`s: one for a whole answer, one per streamed delta (SPEC 3.1, 3.3).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson

from modelport.inference.calls import V4_WINDOW
from modelport.inference.metering import Generated
from modelport.inference.service import TextRequest
from modelport.schemas.inference import (
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChoiceLogprobs,
    CompletionRequest,
    CompletionResponse,
    EncodedEvent,
    wire_logprobs,
)


def text_request(request: CompletionRequest) -> TextRequest:
    """What the service takes for a v4 request: the request itself, its turns, and the
    platform's own max_tokens rules (SPEC 3.1: the family default when absent; a
    max_tokens the window cannot hold with the prompt is a 400 naming both numbers)."""
    return TextRequest(request, messages(request), window=V4_WINDOW)


def messages(request: CompletionRequest) -> tuple[dict[str, Any], ...] | None:
    """A chat request's history and prompt as messages; None for `/completions`, whose
    prompt is sent as raw text."""
    if not isinstance(request, ChatCompletionRequest):
        return None
    return (*turns(request.chat_history), {"role": "user", "content": request.prompt})


def turns(history: list[ChatMessage]) -> tuple[dict[str, Any], ...]:
    """v4 chat messages as OpenAI-style messages (the older `/v4/chat-completions` too)."""
    found: list[dict[str, Any]] = []
    for message in history:
        content = message.content
        if isinstance(content, list):
            if any(part.type != "text" for part in content):
                # Kept as parts: the service refuses them for a model that takes no images.
                found.append({"role": message.role, "content": [part.model_dump() for part in content]})
                continue
            content = "\n".join(part.text for part in content if part.type == "text")
        found.append({"role": message.role, "content": content})
    return tuple(found)


def completion(request: CompletionRequest, generated: Generated) -> CompletionResponse:
    """A whole answer, or one streamed delta (the last one carries the finish reason and
    the token counts)."""
    choices = None
    if request.logprobs:  # SPEC 3.1: present when logprobs were asked for
        choices = [Choice(index=0, logprobs=ChoiceLogprobs(content=wire_logprobs(generated.logprobs)))]
    return CompletionResponse(
        completions=[[request.prompt, [generated.text]]],
        choices=choices,
        # The v4 response has no "tool_calls" reason (SPEC 3.7: it reads as "stop").
        finish_reason="stop" if generated.finish_reason == "tool_calls" else generated.finish_reason,
        prompt_tokens=generated.prompt_tokens,
        response_tokens=generated.response_tokens,
    )


async def completion_events(
    request: CompletionRequest, pieces: AsyncGenerator[Generated, None]
) -> AsyncIterator[CompletionResponse | EncodedEvent]:
    """The v4 stream: one `CompletionResponse` per piece. Closing it closes the service's
    stream, which settles the request then.

    A text delta's event is `{"completions":[[prompt,[text]]]}`: the same bytes every
    time but for the text. It is made from a template, the prompt encoded once rather
    than once a token (what `completion` would write, byte for byte: both encoders write
    the same JSON for a string); the other events go through the model."""
    head = b'{"completions":[[' + orjson.dumps(request.prompt) + b",["
    async with contextlib.aclosing(pieces):
        async for piece in pieces:
            plain = piece.finish_reason is None and piece.prompt_tokens is None and piece.response_tokens is None
            if plain and not request.logprobs:
                yield EncodedEvent(head + orjson.dumps(piece.text) + b"]]]}")
            else:
                yield completion(request, piece)
