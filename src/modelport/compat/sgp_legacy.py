"""SGP's older top-level routes (`POST /v4/chat-completions`, `POST /v4/completions`) <->
the one InferenceService, by way of the v4 request (`compat/sgp.py`).

A body becomes the v4 `CompletionRequest` its `model_parameters` describe, so the
platform's own rules hold here as on `/v4/models/{id}/...` (the family's max_tokens
default, the window check, parameters a vendor cannot honour refused). A chat's turns are:
`instructions` as a system message first, then `messages` trimmed by `memory_strategy`
(`last_k`: the last k messages; the instructions are not one of them). A whole answer is
the SDK's `ChatCompletionsResponse` / `CompletionsResponse`; a streamed one is the v4
stream, whose chunks the SDK reads as `CompletionResponse` on these routes too.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from modelport.compat import sgp
from modelport.inference.calls import V4_WINDOW
from modelport.inference.metering import Generated
from modelport.inference.service import TextRequest
from modelport.schemas.inference import (
    ChatCompletionRequest,
    CompletionRequest,
    CompletionResponse,
    EncodedEvent,
    UserMessage,
)
from modelport.schemas.sgp_legacy import (
    ChatCompletionsRequest,
    ChatCompletionsResponse,
    CompletionsRequest,
    CompletionsResponse,
    LegacyAssistantMessage,
    LegacyChatCompletion,
    LegacyCompletion,
    LegacyTokenUsage,
)

LegacyRequest = ChatCompletionsRequest | CompletionsRequest


def v4_request(body: LegacyRequest) -> CompletionRequest:
    """The v4 request the body means. Its bounds were checked when the body was parsed
    (the same named types), so this cannot fail."""
    values: dict[str, Any] = {"stream": body.stream}
    if body.model_parameters is not None:
        values |= body.model_parameters.model_dump(exclude_none=True)
        if "top_k" in values:
            values["top_k"] = float(values["top_k"])  # the v4 request types it as the SDK does there
    if isinstance(body, CompletionsRequest):
        return CompletionRequest.model_validate({"prompt": body.prompt, **values})
    if body.chat_template is not None:
        values["chat_template"] = body.chat_template
    # A COMPLETION model on the chat route answers the last user turn (as on v4 and /v1).
    last = body.messages[-1]
    prompt = last.content if isinstance(last, UserMessage) and isinstance(last.content, str) else ""
    return ChatCompletionRequest.model_validate({"chat_history": [], "prompt": prompt, **values})


def remembered(body: ChatCompletionsRequest) -> tuple[dict[str, Any], ...]:
    """The turns sent: the instructions, then the messages the memory strategy keeps."""
    kept = body.messages
    if body.memory_strategy is not None:
        kept = kept[-body.memory_strategy.params.k :]
    system = ({"role": "system", "content": body.instructions},) if body.instructions is not None else ()
    return (*system, *sgp.turns(kept))


def text_request(body: LegacyRequest) -> TextRequest:
    messages = remembered(body) if isinstance(body, ChatCompletionsRequest) else None
    return TextRequest(v4_request(body), messages, window=V4_WINDOW)


def _usage(generated: Generated) -> LegacyTokenUsage:
    prompt, completion = generated.prompt_tokens or 0, generated.response_tokens or 0
    return LegacyTokenUsage(total=prompt + completion, prompt=prompt, completion=completion)


def _finish_reason(generated: Generated) -> str | None:
    # As on v4: the SGP responses have no "tool_calls" reason (SPEC 3.7: it reads as "stop").
    return "stop" if generated.finish_reason == "tool_calls" else generated.finish_reason


def whole(body: LegacyRequest, generated: Generated) -> ChatCompletionsResponse | CompletionsResponse:
    if isinstance(body, CompletionsRequest):
        return CompletionsResponse(
            completion=LegacyCompletion(text=generated.text, finish_reason=_finish_reason(generated)),
            token_usage=_usage(generated),
        )
    return ChatCompletionsResponse(
        chat_completion=LegacyChatCompletion(
            message=LegacyAssistantMessage(content=generated.text), finish_reason=_finish_reason(generated)
        ),
        token_usage=_usage(generated),
    )


def events(
    body: LegacyRequest, pieces: AsyncGenerator[Generated, None]
) -> AsyncIterator[CompletionResponse | EncodedEvent]:
    return sgp.completion_events(v4_request(body), pieces)
