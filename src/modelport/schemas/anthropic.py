"""Wire models of the Anthropic Messages surface (`/v1/messages`, `/v1/messages/count_tokens`).
No I/O here.

Requests are checked as Anthropic checks them (`max_tokens` required, roles `user`,
`assistant` and `system`, content as a string or blocks); an unknown field is refused (400 naming
it). Every documented field is accepted: the ones an ANTHROPIC deployment honours
(`thinking`, `context_management`, `output_config.effort`, `metadata`,
`cache_control` on the request, system blocks, message blocks and tools, tools with
`strict`, server tools such as `web_search`, `thinking`/`redacted_thinking` blocks
sent back, `document` and `search_result` blocks, `container`, `mcp_servers`) travel to
it unchanged (`compat/anthropic.py`). For other vendors the hints among them are left out
and named; content they cannot take (PDF and URL documents, search results, images in
tool results, server tools, `mcp_servers`, `container`) is a 400 naming it.
`temperature`, `top_p` and `top_k` are honoured as older Anthropic clients send them;
`output_config.format` (a JSON schema) becomes OpenAI's `response_format` for the
deployment's adapter.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from modelport.schemas.inference import MAX_MAX_TOKENS, MAX_SURFACE_STOP_SEQUENCES, MAX_TOP_K


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class CacheControl(_Strict):
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class _Block(_Strict):
    cache_control: CacheControl | None = None  # a prompt-caching breakpoint


class TextBlock(_Block):
    type: Literal["text"]
    text: str
    # What Claude answers with (null or its sources) and clients send back as they got it.
    citations: list[dict[str, Any]] | None = None


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


class DocumentBlock(_Block):
    type: Literal["document"]
    # {"type": "text", "media_type", "data"}, {"type": "base64", ...} (PDF), {"type": "url", ...}, ...
    source: dict[str, Any]
    title: str | None = None
    context: str | None = None
    citations: dict[str, Any] | None = None


class ThinkingBlock(_Strict):
    """The model's reasoning from an earlier answer, sent back with its signature."""

    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlock(_Strict):
    type: Literal["redacted_thinking"]
    data: str


class ServerToolUseBlock(_Block):
    """A server tool's call (web_search, code execution, ...) from an earlier answer."""

    type: Literal["server_tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class SearchResultBlock(_Block):
    """Search results the caller found, for Claude to cite (passed to ANTHROPIC deployments only)."""

    type: Literal["search_result"]
    source: str
    title: str
    content: list[TextBlock]
    citations: dict[str, Any] | None = None


ToolResultContent = Annotated[TextBlock | ImageBlock | DocumentBlock | SearchResultBlock, Field(discriminator="type")]


class ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[ToolResultContent] | None = None
    is_error: bool | None = None


ContentBlock = Annotated[
    TextBlock
    | ImageBlock
    | DocumentBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock
    | ServerToolUseBlock
    | SearchResultBlock,
    Field(discriminator="type"),
]


class Message(_Strict):
    # "system": an instruction in the middle of the conversation (Claude Code sends them,
    # with the anthropic-beta flag mid-conversation-system-2026-04-07).
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


class Tool(_Strict):
    """A client tool (`type` absent or "custom")."""

    type: Literal["custom"] | None = None
    name: str
    description: str | None = None
    input_schema: dict[str, Any]
    cache_control: CacheControl | None = None
    strict: bool | None = None  # the input always matches input_schema (constrained sampling)
    defer_loading: bool | None = None
    input_examples: list[dict[str, Any]] | None = None
    eager_input_streaming: bool | None = None


class ServerTool(BaseModel):
    """A tool Anthropic runs or defines itself (`web_search_20250305`, `bash_20250124`,
    `text_editor_...`, `code_execution_...`, ...): its fields vary by type and version,
    so beyond `type` and `name` they are the upstream's to check."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    type: str
    name: str

    @field_validator("type")
    @classmethod
    def _not_custom(cls, value: str) -> str:
        if value == "custom":
            raise ValueError("a custom tool needs input_schema and no other fields than the documented ones")
        return value


class ToolChoice(_Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class JSONOutputFormat(_Strict):
    type: Literal["json_schema"]
    schema_: Annotated[dict[str, Any], Field(alias="schema")]


class OutputConfig(_Strict):
    effort: Literal["low", "medium", "high", "max"] | None = None
    format: JSONOutputFormat | None = None


class ThinkingConfig(_Strict):
    """`{"type": "enabled", "budget_tokens": N}`, `{"type": "adaptive"}` or `{"type": "disabled"}`."""

    type: Literal["enabled", "adaptive", "disabled"]
    budget_tokens: Annotated[int, Field(ge=1, le=MAX_MAX_TOKENS)] | None = None
    display: Literal["summarized", "omitted"] | None = None


class ContextManagement(_Strict):
    # Each edit ({"type": "clear_tool_uses_20250919", "trigger", "keep", ...}) is the upstream's to check.
    edits: list[dict[str, Any]] | None = None


class Metadata(_Strict):
    user_id: str | None = None


class CountTokensBody(_Strict):
    """`POST /v1/messages/count_tokens`: what a request would send, without sampling."""

    model: str
    messages: Annotated[list[Message], Field(min_length=1)]
    system: str | list[TextBlock] | None = None
    tools: list[Tool | ServerTool] | None = None
    tool_choice: ToolChoice | None = None
    output_config: OutputConfig | None = None
    thinking: ThinkingConfig | None = None
    context_management: ContextManagement | None = None
    mcp_servers: list[dict[str, Any]] | None = None
    cache_control: CacheControl | None = None
    # Accepted and ignored: they do not change the answer here.
    inference_geo: str | None = None
    user_profile_id: str | None = None
    workspace_id: str | None = None
    # The request's `anthropic-beta` header, set by the route: sent on to ANTHROPIC deployments.
    _anthropic_beta: str | None = PrivateAttr(default=None)


class MessagesBody(CountTokensBody):
    """`POST /v1/messages`."""

    max_tokens: Annotated[int, Field(ge=1, le=MAX_MAX_TOKENS)]
    # As many as the deployment's vendor takes (Capabilities.max_stop_sequences), within the bound.
    stop_sequences: Annotated[list[str], Field(max_length=MAX_SURFACE_STOP_SEQUENCES)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K)] | None = None
    stream: bool = False
    metadata: Metadata | None = None
    service_tier: Literal["auto", "standard_only"] | None = None
    container: str | dict[str, Any] | None = None
    speed: str | None = None

    @field_validator("stop_sequences")
    @classmethod
    def _no_empty_stop(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(stop == "" for stop in value):
            raise ValueError("stop sequences must not be empty strings")
        return value


# --- responses ------------------------------------------------------------------------


class ResponseText(BaseModel):
    type: Literal["text"] = "text"
    text: str
    citations: list[dict[str, Any]] | None = None


class ResponseThinking(BaseModel):
    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str


class ResponseRedactedThinking(BaseModel):
    type: Literal["redacted_thinking"] = "redacted_thinking"
    data: str


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
    content: list[ResponseThinking | ResponseRedactedThinking | ResponseText | ResponseToolUse]
    stop_reason: StopReason | None
    stop_sequence: str | None
    usage: Usage


class TokenCount(BaseModel):
    input_tokens: int


# --- GET /v1/models, asked by an Anthropic client (it sends anthropic-version) ---------


class ModelInfo(BaseModel):
    type: Literal["model"] = "model"
    id: str
    display_name: str
    created_at: str  # RFC 3339


class ModelPage(BaseModel):
    data: list[ModelInfo]
    has_more: bool
    first_id: str | None
    last_id: str | None
