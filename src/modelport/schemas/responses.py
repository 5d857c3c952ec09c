"""Wire models of OpenAI's Responses API (`/v1/responses`). No I/O here.

The create body is checked as OpenAI checks it: an unknown field is refused (400 naming
it), and so is a value out of range. `input` is a string or a list of items: messages
(roles `user`, `assistant`, `system`, `developer`; content a string or `input_text`,
`input_image`, `output_text` and `refusal` parts), `function_call` and
`function_call_output` items, `reasoning` items sent back (accepted; no vendor here
is given them), and `item_reference`s to items of the conversation continued.
Function tools are checked; the built-in tools (`web_search`, `file_search`, `mcp`,
`namespace`, ...) are accepted in any shape: no deployment here runs them, so the
translator leaves them out and names them (`compat/responses.py`).

The answer is built as plain JSON-ready dicts by the translator; `ResponseObject` and the
listing models here declare it for the OpenAPI document. Their shapes are those of the
`openai` SDK's `openai.types.responses` types, which parse them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from modelport.schemas.inference import MAX_MAX_TOKENS, MAX_TOP_LOGPROBS
from modelport.schemas.json_value import JsonObject

# OpenAI's own limits: 16 metadata pairs, keys of 64 characters, values of 512.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
# What GET /v1/responses/{id}/input_items lists at most per page (OpenAI's bounds).
DEFAULT_ITEMS_PAGE = 20
MAX_ITEMS_PAGE = 100


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class _Loose(BaseModel):
    """An object whose other keys are a vendor's business: accepted as it came."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


# --- input: content parts ---------------------------------------------------------------


class InputText(_Strict):
    type: Literal["input_text"]
    text: str


class InputImage(_Strict):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["low", "high", "auto", "original"] | None = None


class OutputText(_Strict):
    """An assistant's text sent back (what a previous answer's `output` held)."""

    type: Literal["output_text"]
    text: str
    annotations: list[JsonObject] | None = None
    logprobs: list[JsonObject] | None = None


class Refusal(_Strict):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[InputText | InputImage | OutputText | Refusal, Field(discriminator="type")]


# --- input: items -----------------------------------------------------------------------


class MessageItem(_Strict):
    """A message; `type` may be left out (OpenAI's "easy input message")."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallItem(_Strict):
    """A function call the model made, sent back with its output in a later turn."""

    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallOutputItem(_Strict):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[ContentPart]
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class ReasoningItem(_Loose):
    """A reasoning item a reasoning model returned, sent back: accepted, given to no vendor."""

    type: Literal["reasoning"]


class ItemReference(_Strict):
    type: Literal["item_reference"]
    id: str


def _item_kind(value: Any) -> str:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", "message")
    return kind if isinstance(kind, str) else "message"


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[ItemReference, Tag("item_reference")],
    Discriminator(_item_kind),
]


# --- tools ------------------------------------------------------------------------------


class FunctionTool(_Strict):
    type: Literal["function"]
    name: Annotated[str, Field(min_length=1, max_length=128)]
    description: str | None = None
    parameters: JsonObject | None = None
    strict: bool | None = None


# Tools the vendor runs itself, not the caller: no deployment here can.
BuiltinToolType = Literal[
    "web_search",
    "web_search_2025_08_26",
    "web_search_preview",
    "web_search_preview_2025_03_11",
    "file_search",
    "code_interpreter",
    "computer_use_preview",
    "computer_use",
    "image_generation",
    "mcp",
    "local_shell",
    "shell",
    "apply_patch",
    "custom",
    "namespace",
]


class BuiltinTool(_Loose):
    type: BuiltinToolType


def _tool_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "function" if kind == "function" else "builtin"


Tool = Annotated[
    Annotated[FunctionTool, Tag("function")] | Annotated[BuiltinTool, Tag("builtin")], Discriminator(_tool_kind)
]


class FunctionChoice(_Strict):
    type: Literal["function"]
    name: str


ToolChoice = Literal["auto", "none", "required"] | FunctionChoice


# --- text, reasoning, the rest ----------------------------------------------------------


class TextFormatText(_Strict):
    type: Literal["text"]


class TextFormatJsonObject(_Strict):
    type: Literal["json_object"]


class TextFormatJsonSchema(_Strict):
    type: Literal["json_schema"]
    name: Annotated[str, Field(min_length=1, max_length=64)]
    schema_: Annotated[JsonObject, Field(alias="schema")]
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[TextFormatText | TextFormatJsonObject | TextFormatJsonSchema, Field(discriminator="type")]


class TextConfig(_Strict):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(_Strict):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class StreamOptions(_Strict):
    include_obfuscation: bool | None = None


Metadata = Annotated[
    dict[
        Annotated[str, Field(max_length=MAX_METADATA_KEY)],
        Annotated[str, Field(max_length=MAX_METADATA_VALUE)],
    ],
    Field(max_length=MAX_METADATA_PAIRS),
]


class ResponsesBody(_Strict):
    """`POST /v1/responses`."""

    model: str
    input: str | list[InputItem] = Field(default_factory=list)
    instructions: str | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=MAX_MAX_TOKENS)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    reasoning: ReasoningConfig | None = None
    include: list[str] | None = None
    # None: stored, as OpenAI's default is.
    store: bool | None = None
    previous_response_id: str | None = None
    metadata: Metadata | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    safety_identifier: str | None = None
    user: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    # Background responses (run on, polled later) are not supported: only false is taken.
    background: bool | None = None
    max_tool_calls: Annotated[int, Field(ge=1)] | None = None
    # What Codex sends about itself; it changes nothing about the answer.
    client_metadata: JsonObject | None = None

    def stored(self) -> bool:
        return self.store is not False


# --- the answer (declared for OpenAPI; built as dicts by compat/responses.py) -----------


class ResponseObject(_Loose):
    """OpenAI's `Response` (`openai.types.responses.Response`)."""

    id: str
    object: Literal["response"] = "response"
    created_at: float
    status: Literal["completed", "incomplete", "in_progress", "failed"]
    model: str
    output: list[JsonObject]
    usage: JsonObject | None = None


class DeletedResponse(BaseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True


class InputItemList(BaseModel):
    """GET /v1/responses/{id}/input_items: OpenAI's cursor page."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool
