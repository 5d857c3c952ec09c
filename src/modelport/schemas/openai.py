"""Wire models of the OpenAI-compatible surface (`/v1/...` and the SGP beta `/v4/beta/...`).
No I/O here.

Requests are checked at the edge, like the v4 routes: an unknown parameter or a value
out of range is an error naming the field (OpenAI answers such requests with 400
`invalid_request_error`, and so does this surface). A few parameters that change
nothing about what may be sampled are accepted: `user` is ignored; the hints
(`reasoning_effort`, `verbosity`, `prompt_cache_key`, `safety_identifier`, `metadata`,
`store`, `service_tier`, `parallel_tool_calls`, `prediction`,
`stream_options.include_obfuscation`) go to a vendor that takes them, else are left out
and named in the `x-modelport-dropped` header (compat/openai.py).
Responses follow OpenAI's shapes, which the SGP SDK's beta types share.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from modelport.generation import FinishReason, TextFinishReason
from modelport.schemas.inference import (
    MAX_MAX_TOKENS,
    MAX_SURFACE_STOP_SEQUENCES,
    MAX_TOP_K,
    MAX_TOP_LOGPROBS,
    TokenLogprob,
)
from modelport.schemas.retrieval import MAX_DIMENSIONS, MAX_TEXTS, TokenIds


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class _Open(BaseModel):
    """Nested objects whose extra keys are the vendor's business (a tool's JSON schema)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


# --- request: content and messages ----------------------------------------------------


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageURL(_Strict):
    url: str
    detail: Literal["low", "high", "auto"] | None = None


class ImageURLPart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


class FileData(_Strict):
    """A PDF as OpenAI takes one: inline (`file_data`, a data URL) or uploaded (`file_id`)."""

    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class FilePart(_Strict):
    type: Literal["file"]
    file: FileData


class InputAudio(_Strict):
    data: str  # base64
    format: Literal["wav", "mp3"]


class InputAudioPart(_Strict):
    type: Literal["input_audio"]
    input_audio: InputAudio


# `file` and `input_audio` go to vendors that take them (OPENAI), a 400 naming them elsewhere.
ContentPart = Annotated[TextPart | ImageURLPart | FilePart | InputAudioPart, Field(discriminator="type")]


class FunctionCall(_Strict):
    name: str
    arguments: str


class ToolCall(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Strict):
    role: Literal["system", "developer"]
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(_Strict):
    role: Literal["user"]
    content: str | list[ContentPart]
    name: str | None = None


class AssistantMessage(_Strict):
    role: Literal["assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None  # the deprecated functions API's one call


class ToolMessage(_Strict):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str


class FunctionMessage(_Strict):
    """The deprecated functions API's result of the assistant's `function_call` before it."""

    role: Literal["function"]
    name: str
    content: str | None = None


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage, Field(discriminator="role")
]


class StreamOptions(_Strict):
    include_usage: bool | None = None
    # OpenAI pads its stream's events against length side channels; modelport writes
    # its own events, unpadded: a hint, left out and named.
    include_obfuscation: bool | None = None


class FunctionDefinition(_Open):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Strict):
    name: str


# As many as the deployment's vendor takes (Capabilities.max_stop_sequences: OpenAI's own 4),
# within the bound.
Stop = str | Annotated[list[str], Field(max_length=MAX_SURFACE_STOP_SEQUENCES)] | None
# The choices one request may ask for (`n`, `best_of`, times its prompts): OpenAI's own cap.
MAX_CHOICES = 128


class _Sampling(_Strict):
    """What chat and text completions share."""

    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K)] | None = None  # an extension (llama.cpp, vLLM, SGP beta)
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] | None = None
    stop: Stop = None
    max_tokens: Annotated[int, Field(ge=1, le=MAX_MAX_TOKENS)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    # A 64-bit integer, as OpenAI's own API takes: a larger one cannot be sent on (JSON
    # encoders and the engine stop at 64 bits) and was a 500.
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    user: str | None = None  # accepted and ignored: it does not change the answer
    # Hints (see the module docstring).
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if any(stop == "" for stop in stops):
            raise ValueError("stop sequences must not be empty strings")
        return value

    def stop_sequences(self) -> list[str] | None:
        return [self.stop] if isinstance(self.stop, str) else self.stop

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionBody(_Sampling):
    """`POST /v1/chat/completions` and `/v4/beta/chat/completions`."""

    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1, le=MAX_MAX_TOKENS)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    # Hints (see the module docstring), with the values OpenAI takes.
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    prediction: dict[str, Any] | None = None
    # The deprecated functions API (before tools): served as tools, answered in its own
    # shape (`message.function_call`, finish_reason "function_call"); see compat/openai.py.
    functions: Annotated[list[FunctionDefinition], Field(min_length=1)] | None = None
    function_call: Literal["none", "auto"] | FunctionName | None = None

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self) -> ChatCompletionBody:
        if self.top_logprobs is not None and self.logprobs is not True:
            raise ValueError("top_logprobs requires logprobs to be true")
        return self

    @model_validator(mode="after")
    def _functions_or_tools(self) -> ChatCompletionBody:
        if self.functions is not None and (self.tools is not None or self.tool_choice is not None):
            raise ValueError("functions and function_call are the deprecated form of tools and tool_choice: send one")
        if self.function_call is not None and self.functions is None:
            raise ValueError("function_call needs functions")
        return self

    @property
    def legacy_functions(self) -> bool:
        """Whether the caller speaks the deprecated functions API (and is answered in it)."""
        return self.functions is not None


class TextCompletionBody(_Sampling):
    """`POST /v1/completions` and `/v4/beta/completions`: a prompt, or several (strings or
    token-id lists), each answered with `n` choices (the best `n` of `best_of`), indexed
    prompt-major as OpenAI does (api/several.py)."""

    prompt: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=MAX_CHOICES)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_CHOICES)]
    )
    # The legacy API's logprobs: how many alternatives per token (0 for just the token's own).
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    echo: bool | None = None  # the prompt is prepended to each choice's text
    best_of: Annotated[int, Field(ge=1, le=MAX_CHOICES)] | None = None
    suffix: None = None

    @model_validator(mode="after")
    def _choices_within_bounds(self) -> TextCompletionBody:
        n, best_of = self.n or 1, self.best_of or self.n or 1
        if best_of < n:
            raise ValueError("best_of must be at least n")
        if best_of > n and self.stream:
            raise ValueError("best_of larger than n cannot be streamed: the best are known only at the end")
        if len(self.prompts()) * best_of > MAX_CHOICES:
            raise ValueError(
                f"prompts times best_of (or n) is {len(self.prompts()) * best_of}; one request generates at most "
                f"{MAX_CHOICES} choices"
            )
        return self

    def prompts(self) -> list[str] | list[list[int]]:
        """Each prompt: texts, or token-id lists."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if all(isinstance(item, int) for item in self.prompt):
            return [[item for item in self.prompt if isinstance(item, int)]]
        if all(isinstance(item, str) for item in self.prompt):
            return [item for item in self.prompt if isinstance(item, str)]
        return [item for item in self.prompt if isinstance(item, list)]


# --- responses ------------------------------------------------------------------------


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class ResponseFunctionCall(BaseModel):
    name: str
    arguments: str


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ResponseFunctionCall


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ResponseToolCall] | None = None
    function_call: ResponseFunctionCall | None = None  # the deprecated functions API


# A call of the deprecated functions API ends with "function_call" where tools end with "tool_calls".
ChatFinishReason = FinishReason | Literal["function_call"]


class ChatChoice(BaseModel):
    index: int
    message: ResponseMessage
    finish_reason: ChatFinishReason
    logprobs: ChoiceLogprobs | None = None


class PromptTokensDetails(BaseModel):
    cached_tokens: int  # of prompt_tokens: read from the prompt cache


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    cost: float | None = None  # modelport's (OpenRouter's name): US dollars at the deployment's prices


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class DeltaFunctionCall(BaseModel):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall | None = None


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None
    function_call: DeltaFunctionCall | None = None  # the deprecated functions API


class ChunkChoice(BaseModel):
    index: int
    delta: ChunkDelta
    finish_reason: ChatFinishReason | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class TextLogprobs(BaseModel):
    """The legacy completions API's logprobs: parallel lists, one entry per token (with
    `echo`, the prompt's first: null, nothing comes before it)."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None] | None
    text_offset: list[int]


class TextChoice(BaseModel):
    index: int
    text: str
    # null until a stream's last chunk, and written so (api/routes/openai_compat.py): OpenAI does.
    finish_reason: TextFinishReason | None
    logprobs: TextLogprobs | None = None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage | None = None


# --- embeddings ------------------------------------------------------------------------


class EmbeddingsBody(_Strict):
    model: Annotated[str, StringConstraints(min_length=1)]
    # A text, texts, one input as token ids, or several: token ids are the model's own
    # (passed through to OpenAI-compatible upstreams, embedded as they are by the engine).
    input: (
        Annotated[str, StringConstraints(min_length=1)]
        | Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1, max_length=MAX_TEXTS)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_TEXTS)]
    )
    # The openai SDK asks for base64 unless told otherwise: little-endian float32s.
    encoding_format: Literal["float", "base64"] = "float"
    # The width of the vectors, for models that can shorten theirs (a 400 where one cannot).
    dimensions: Annotated[int, Field(ge=1, le=MAX_DIMENSIONS)] | None = None
    user: str | None = None  # accepted and ignored, as the chat routes do

    @property
    def texts(self) -> list[str] | None:
        """The inputs as texts; None when they are token ids."""
        if isinstance(self.input, str):
            return [self.input]
        return [item for item in self.input if isinstance(item, str)] or None

    @property
    def token_ids(self) -> list[list[int]] | None:
        """The inputs as token-id lists; None when they are texts."""
        if isinstance(self.input, str) or isinstance(self.input[0], str):
            return None
        if isinstance(self.input[0], int):
            return [[item for item in self.input if isinstance(item, int)]]
        return [item for item in self.input if isinstance(item, list)]


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    cost: float | None = None  # modelport's (OpenRouter's name): US dollars at the deployment's prices


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
