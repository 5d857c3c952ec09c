"""Wire models of the Anthropic Messages surface (`/v1/messages`, `/v1/messages/count_tokens`).
No I/O here.

Requests are checked as Anthropic checks them (`max_tokens` required, roles `user` and
`assistant`, content as a string or blocks); an unknown field is refused (400 naming
it), as are `thinking` and `output_config.effort`, which no deployment here honours.
Fields that change nothing about the answer here (`metadata`, `service_tier`,
`cache_control`, `inference_geo`, `speed`, `user_profile_id`, `workspace_id`) are
accepted and ignored. `temperature`, `top_p` and `top_k` are honoured as older
Anthropic clients send them; `output_config.format` (a JSON schema) becomes OpenAI's
`response_format` for the deployment's adapter.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelport.schemas.inference import MAX_MAX_TOKENS, MAX_TOP_K


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class _Block(_Strict):
    cache_control: dict[str, Any] | None = None  # prompt caching hints: accepted, ignored


class TextBlock(_Block):
    type: Literal["text"]
    text: str


class Base64Source(_Strict):
    type: Literal["base64"]
    media_type: str
    data: str


class URLSource(_Strict):
    type: Literal["url"]
    url: str


class ImageBlock(_Block):
    type: Literal["image"]
    source: Annotated[Base64Source | URLSource, Field(discriminator="type")]


class ToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock] | None = None
    is_error: bool | None = None


ContentBlock = Annotated[TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]


class Message(_Strict):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class Tool(_Strict):
    name: str
    description: str | None = None
    input_schema: dict[str, Any]
    cache_control: dict[str, Any] | None = None


class ToolChoice(_Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class JSONOutputFormat(_Strict):
    type: Literal["json_schema"]
    schema_: Annotated[dict[str, Any], Field(alias="schema")]


class OutputConfig(_Strict):
    format: JSONOutputFormat | None = None


class CountTokensBody(_Strict):
    """`POST /v1/messages/count_tokens`: what a request would send, without sampling."""

    model: str
    messages: Annotated[list[Message], Field(min_length=1)]
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    output_config: OutputConfig | None = None
    # Accepted and ignored: they do not change the answer here.
    cache_control: dict[str, Any] | None = None
    inference_geo: str | None = None
    user_profile_id: str | None = None
    workspace_id: str | None = None


class MessagesBody(CountTokensBody):
    """`POST /v1/messages`."""

    max_tokens: Annotated[int, Field(ge=1, le=MAX_MAX_TOKENS)]
    stop_sequences: list[str] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K)] | None = None
    stream: bool = False
    metadata: dict[str, Any] | None = None
    service_tier: str | None = None
    speed: str | None = None


# --- responses ------------------------------------------------------------------------


class ResponseText(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ResponseToolUse(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]


class Usage(BaseModel):
    input_tokens: int  # as Anthropic counts it: only the input read neither from nor into the cache
    output_tokens: int
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class MessageResponse(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ResponseText | ResponseToolUse]
    stop_reason: StopReason | None
    stop_sequence: str | None
    usage: Usage


class TokenCount(BaseModel):
    input_tokens: int
