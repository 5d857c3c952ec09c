"""Wire models of the inference endpoints (SPEC.md 3). No I/O here.

Requests are validated strictly at the edge: a violation is a 422 naming the field.
Responses mirror the SDK's `CompletionResponse` type exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from modelport import generation
from modelport.generation import TextFinishReason
from modelport.schemas.json_value import JsonObject

MAX_STOP_SEQUENCES = 4
# The compatible surfaces (`/v1/messages`, `/v1/chat/completions`, `/v1/completions`) take
# more for the vendors that do (vendors/base.py `Capabilities.max_stop_sequences`), up to
# this bound (README "### Bounds"): each one is matched against every piece of the answer.
MAX_SURFACE_STOP_SEQUENCES = 64
MAX_TOP_LOGPROBS = 20
# Far above any model's vocabulary or output length, and within a C int everywhere.
MAX_TOP_K = 1_000_000
MAX_MAX_TOKENS = 1_000_000


class _Strict(BaseModel):
    # strict: "0.5" is not a number and "yes" is not a bool; extra="forbid": a misspelt
    # parameter is an error the caller sees, not a setting silently ignored.
    # allow_inf_nan=False: NaN and Infinity are not JSON, and no parameter means them.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class TextPart(_Strict):
    type: Literal["text"] = "text"
    text: str


class ImageURL(_Strict):
    url: str
    detail: Literal["low", "high", "auto"] | None = None


class ImageURLPart(_Strict):
    type: Literal["image_url"] = "image_url"
    image_url: ImageURL


class ImageData(_Strict):
    data: str
    media_type: str
    detail: Literal["low", "high", "auto"] | None = None
    type: Literal["base64"] = "base64"


class ImageDataPart(_Strict):
    type: Literal["image_data"] = "image_data"
    image_data: ImageData


def _part_type(part: Any) -> str | None:
    """A content part's type. SGP's FlexibleMessageParam lets a part leave `type` out:
    it is then the one field the part carries (`text`, `image_url` or `image_data`)."""
    if not isinstance(part, dict):
        return getattr(part, "type", None)
    if "type" in part:
        return part["type"] if isinstance(part["type"], str) else None
    named = [kind for kind in ("text", "image_url", "image_data") if kind in part]
    return named[0] if len(named) == 1 else None


def _role(message: Any) -> str | None:
    """A message's role. SGP's FlexibleMessageParam lets a message leave `role` out: it
    is then a user's."""
    if not isinstance(message, dict):
        return getattr(message, "role", None)
    role = message.get("role", "user")
    return role if isinstance(role, str) else None


UserContentPart = Annotated[
    Annotated[TextPart, Tag("text")]
    | Annotated[ImageURLPart, Tag("image_url")]
    | Annotated[ImageDataPart, Tag("image_data")],
    Discriminator(_part_type),
]


class UserMessage(_Strict):
    role: Literal["user"] = "user"
    content: str | list[UserContentPart]


class AssistantMessage(_Strict):
    role: Literal["assistant"]
    content: str


class SystemMessage(_Strict):
    role: Literal["system"]
    content: str


ChatMessage = Annotated[
    Annotated[UserMessage, Tag("user")]
    | Annotated[AssistantMessage, Tag("assistant")]
    | Annotated[SystemMessage, Tag("system")],
    Discriminator(_role),
]


class ParameterBindings(_Strict):
    bindings: dict[str, str | int | float | bool]


# The sampling parameters' bounds, named once: the v4 request and the older top-level
# routes' `model_parameters` (schemas/sgp_legacy.py) take the same values.
Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
StopSequences = Annotated[list[str], Field(max_length=MAX_STOP_SEQUENCES)]
MaxTokens = Annotated[int, Field(ge=1, le=MAX_MAX_TOKENS)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
ReasoningEffort = Literal["low", "medium", "high"]


class CompletionRequest(_Strict):
    """`POST /v4/models/{id}/completions`; the chat request adds `chat_history`."""

    prompt: str
    temperature: Temperature = 0.2
    stop_sequences: StopSequences | None = None
    max_tokens: MaxTokens | None = None
    top_p: TopP | None = None
    # A float because the SDK types it so (40.0 is fine), but a whole number.
    top_k: Annotated[float, Field(ge=1, le=MAX_TOP_K, json_schema_extra={"multipleOf": 1})] | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    stream: bool = False
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    chat_template: str | None = None
    chat_template_kwargs: JsonObject | None = None
    model_request_parameters: ParameterBindings | None = None
    reasoning_effort: ReasoningEffort | None = None

    @field_validator("stop_sequences")
    @classmethod
    def _no_empty_stop(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(stop == "" for stop in value):
            raise ValueError("stop sequences must not be empty strings")
        return value

    @field_validator("top_k")
    @classmethod
    def _whole_top_k(cls, value: float | None) -> float | None:
        if value is not None and not float(value).is_integer():
            raise ValueError("top_k must be a whole number")
        return value

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self) -> CompletionRequest:
        if self.top_logprobs is not None and self.logprobs is not True:
            raise ValueError("top_logprobs requires logprobs to be true")
        return self

    def explicit_parameters(self) -> set[str]:
        """The optional parameters the caller actually set (to check against a vendor)."""
        return {name for name in self.model_fields_set if getattr(self, name) is not None}


class ChatCompletionRequest(CompletionRequest):
    """`POST /v4/models/{id}/chat-completions`."""

    chat_history: list[ChatMessage]


# --- responses: the SDK's CompletionResponse ---------------------------------------


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


# One generated token's log probability, in the shape OpenAI's chat responses and SGP's v4
# responses share: both surfaces use this class (a comment, not a docstring, which would
# show in the OpenAPI document).
class TokenLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob]


def wire_logprobs(entries: list[generation.TokenLogprob]) -> list[TokenLogprob]:
    return [
        TokenLogprob(
            token=entry.token,
            logprob=entry.logprob,
            bytes=entry.bytes,
            top_logprobs=[
                TopLogprob(token=alt.token, logprob=alt.logprob, bytes=alt.bytes) for alt in entry.top_logprobs
            ],
        )
        for entry in entries
    ]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class Choice(BaseModel):
    index: int = 0
    logprobs: ChoiceLogprobs | None = None


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """A stream event's JSON, already encoded: where an event is the same bytes each time
    but for its text, it is made from a template (`compat/sgp.py`) and written as it is
    (`api/sse.py`), byte for byte what the event's model would have written."""

    json: bytes


class CompletionResponse(BaseModel):
    completions: list[list[Any]]
    choices: list[Choice] | None = None
    finish_reason: TextFinishReason | None = None
    prompt_tokens: int | None = None
    response_tokens: int | None = None
