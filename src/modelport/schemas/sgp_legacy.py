"""Wire models of SGP's older top-level routes, `POST /v4/chat-completions` and
`POST /v4/completions` (the SDK's `client.chat_completions.create` and
`client.completions.create`). No I/O here.

They name a model rather than a deployment, and carry their sampling parameters in
`model_parameters`; the bounds are the v4 request's own (`schemas.inference`). Responses
mirror the SDK's `ChatCompletionsResponse` and `CompletionsResponse` exactly; a stream's
chunks are the v4 `CompletionResponse`, as the SDK reads them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from modelport.schemas.inference import (
    MAX_TOP_K,
    ChatMessage,
    MaxTokens,
    Penalty,
    ReasoningEffort,
    StopSequences,
    Temperature,
    TopP,
)


class _Strict(BaseModel):
    # As the v4 requests: a misspelt field is a 422 naming it, "0.5" is not a number.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ModelParameters(_Strict):
    """The SDK's `ModelParameters`. It sends `top_k` and `top_p` as `topK` and `topP`;
    the snake-case names are taken too, for callers writing the JSON by hand."""

    temperature: Temperature | None = None
    max_tokens: MaxTokens | None = None
    stop_sequences: StopSequences | None = None
    top_p: TopP | None = Field(default=None, validation_alias=AliasChoices("topP", "top_p"))
    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K)] | None = Field(
        default=None, validation_alias=AliasChoices("topK", "top_k")
    )
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    reasoning_effort: ReasoningEffort | None = None


class LastKParams(_Strict):
    # At least one: a conversation trimmed to nothing has nothing to answer.
    k: Annotated[int, Field(ge=1)]


class MemoryStrategy(_Strict):
    """The SDK's `MemoryStrategy`: only `last_k`, which keeps the last `k` messages."""

    name: Literal["last_k"] = "last_k"
    params: LastKParams


class _TopLevelRequest(_Strict):
    model: Annotated[str, Field(min_length=1)]
    model_parameters: ModelParameters | None = None
    # The SDK's "account to use for usage tracking": here it must be the selected account.
    account_id: str | None = None
    stream: bool = False


class ChatCompletionsRequest(_TopLevelRequest):
    """`POST /v4/chat-completions`."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    instructions: str | None = None
    memory_strategy: MemoryStrategy | None = None
    chat_template: str | None = None


class CompletionsRequest(_TopLevelRequest):
    """`POST /v4/completions`."""

    prompt: str


# --- responses ------------------------------------------------------------------


class LegacyTokenUsage(BaseModel):
    total: int
    prompt: int | None = None
    completion: int | None = None


class LegacyAssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class LegacyChatCompletion(BaseModel):
    message: LegacyAssistantMessage
    finish_reason: str | None = None


class ChatCompletionsResponse(BaseModel):
    chat_completion: LegacyChatCompletion
    token_usage: LegacyTokenUsage | None = None


class LegacyCompletion(BaseModel):
    text: str
    finish_reason: str | None = None


class CompletionsResponse(BaseModel):
    completion: LegacyCompletion
    token_usage: LegacyTokenUsage | None = None
