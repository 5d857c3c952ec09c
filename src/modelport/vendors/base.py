"""The contract every vendor adapter fulfils.

An adapter turns a `GenerationCall` into the vendor's wire call and the vendor's
answer into `GenerationChunk`s. It does not apply defaults, clamp, or filter stop
sequences: the service does that once for every vendor. What a vendor can do is data
(`Capabilities`), not branches in the service.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from modelport.generation import GenerationCall, GenerationChunk, TokenLogprob, join_tool_calls
from modelport.schemas.inference import MAX_STOP_SEQUENCES
from modelport.vendors.settings import CommonSettings

_Item = TypeVar("_Item")  # what `in_batches` splits: texts, or token-id lists

# Every optional request parameter a vendor may or may not honour.
OPTIONAL_PARAMETERS = frozenset(
    {
        "top_p",
        "top_k",
        "frequency_penalty",
        "presence_penalty",
        "logprobs",
        "top_logprobs",
        "chat_template",
        "chat_template_kwargs",
        "stop_sequences",
        # GenerationCall-level (OpenAI-compatible surfaces only; see params.call_parameters)
        "tools",
        "tool_choice",
        "response_format",
        "seed",
        "logit_bias",
        "n",
    }
)

# Hints: parameters that ask a vendor to spend or cache or label its work, never change
# what may be sampled (SPEC 3.7, "Constraints and hints"). A vendor that honours one
# lists it in `Capabilities.parameters` and gets it (Sampling.reasoning_effort, or
# GenerationCall.hints in OpenAI's names); for any other vendor it is left out, never a
# 400, and named in the x-modelport-dropped header (inference/params.py).
HINT_PARAMETERS = frozenset(
    {
        "reasoning_effort",
        "verbosity",
        "prompt_cache_key",
        "safety_identifier",
        "service_tier",
        "store",
        "metadata",
        "parallel_tool_calls",
        "prediction",
    }
)


# Content a surface passes through to a vendor of its own family only, by kind: Anthropic's
# `document` blocks (PDF, URL or custom sources), `search_result` blocks, images inside a
# `tool_result`, server tools (`web_search_*`, `code_execution_*`, `bash_*`, ...),
# `mcp_servers` and `container`; OpenAI's `file` (PDF) and `input_audio` parts, and a
# legacy completion's prompt as token ids (`TOKEN_PROMPT`), and its `echo` with `logprobs`
# (`PROMPT_LOGPROBS`: the prompt's own log-probabilities, which only the vendor can compute).
# A vendor lists those it takes in `Capabilities.content_kinds`.
ANTHROPIC_CONTENT = frozenset(
    {"document", "search_result", "tool_result_image", "server_tools", "mcp_servers", "container"}
)
OPENAI_CONTENT = frozenset({"file", "input_audio"})
TOKEN_PROMPT = "token_prompt"
PROMPT_LOGPROBS = "prompt_logprobs"
CONTENT_KINDS = ANTHROPIC_CONTENT | OPENAI_CONTENT | {TOKEN_PROMPT, PROMPT_LOGPROBS}


@dataclass(frozen=True, slots=True)
class Capabilities:
    vendor: str
    # The optional parameters this vendor honours; any other one is refused (or dropped).
    parameters: frozenset[str]
    max_temperature: float = 2.0
    # max_tokens when the request gives none; None: the vendor's own default (the service
    # decides what is sent and reserved: inference/calls.py `max_tokens_for`).
    default_max_tokens: int | None = None
    # Whether `default_max_tokens` is only the SGP platform's default for the v4 routes
    # (LLM Engine's 100, SPEC 3.1) rather than a number the vendor needs: a request on
    # an OpenAI-compatible surface then gets what the window leaves, as OpenAI's does.
    platform_default: bool = False
    # Whether a request without max_tokens must be sent what the window leaves: OpenAI's
    # legacy completions stop at 16 tokens otherwise.
    fills_window: bool = False
    accepts_images: bool = False
    # Whether the vendor itself stops at a stop sequence. If not, the service cancels
    # the generation once it sees one.
    stops_at_stop_sequences: bool = True
    # The most stop sequences it takes: OpenAI's API and the SGP v4 contract take 4; the
    # embedded engine, Anthropic and OpenAI-compatible servers as many as a compatible
    # surface lets through (MAX_SURFACE_STOP_SEQUENCES, the bound).
    max_stop_sequences: int = MAX_STOP_SEQUENCES
    # The content beyond text and images it takes as its own surface sends it (CONTENT_KINDS):
    # a call that carries another kind is refused with a 400 naming it (inference/calls.py).
    content_kinds: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Target:
    """Where a deployment's requests go: everything an adapter needs to call it."""

    deployment_id: str
    model_type: str
    model_vendor: str
    # The registry's name of the model deployed (for metrics labels; names come from the
    # registry, so they are as few as its models).
    model_name: str = ""
    # The account that owns the deployment: the embedded engine caps each account's
    # running sequences (engine/model.py).
    account_id: str | None = None
    # The model's creation parameters with the deployment's overrides applied, checked:
    # as a plain dict, and typed (what adapters read).
    parameters: dict[str, Any] = field(default_factory=dict)
    vendor_configuration: dict[str, Any] = field(default_factory=dict)
    context_window: int | None = None
    # The registered adapter that serves it, and for the embedded engine its GGUF file
    # (both decided once, by modelport.catalogue.deployment_settings.target_of).
    adapter: str = ""
    checkpoint: str | None = None
    settings: CommonSettings = field(default_factory=CommonSettings)
    # A credential resolved from an account secret (`api_key_secret`); kept out of
    # `parameters` and of repr() so it cannot leak into a response or a log line.
    api_key: str | None = field(default=None, repr=False)


# What `Vendor.stream` returns: an async generator of chunks, so a caller that stops
# early (the client went away, a stop sequence was cut) ends the vendor's work with
# `await stream.aclose()`, typed, with no probing for the method.
ChunkStream = AsyncGenerator[GenerationChunk, None]


@runtime_checkable
class ResponsesRelay(Protocol):
    """A vendor whose upstream may serve OpenAI's Responses API itself: `/v1/responses`
    is passed to it whole rather than translated onto a chat call (the service decides,
    `InferenceService.relay_responses`)."""

    def relays_responses(self, target: Target) -> bool: ...

    async def relay_whole(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        """The upstream's response object."""
        ...

    async def relay_stream(self, target: Target, body: dict[str, Any]) -> RelayedEvents:
        """The upstream's events, (name, data) as sent; errors known before the first
        event are raised here."""
        ...


RelayedEvents = AsyncGenerator[tuple[str, dict[str, Any]], None]


class Vendor(Protocol):
    def capabilities(self, target: Target) -> Capabilities: ...

    async def complete(self, target: Target, call: GenerationCall) -> GenerationChunk:
        """The whole answer as one chunk that carries the finish reason and counts."""
        ...

    async def stream(self, target: Target, call: GenerationCall) -> ChunkStream:
        """Check the call and start it; the stream then yields chunks, the last one
        with the finish reason. Errors that can be known before the first chunk are
        raised here, so the caller can still answer with a status code. A caller that
        stops reading early closes the stream (`aclose`)."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Embeddings:
    """One vector per input text, in the order given, and the tokens the vendor read."""

    vectors: list[list[float]]
    tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Scores:
    """One relevance score per chunk, in the order the chunks were given."""

    scores: list[float]
    tokens: int | None = None


@runtime_checkable
class Embedder(Protocol):
    """A vendor that embeds texts (optional: a vendor without it answers 400)."""

    async def embed(self, target: Target, texts: list[str]) -> Embeddings: ...


@dataclass(frozen=True, slots=True)
class EmbeddingInput:
    """What an embeddings call reads beyond plain texts (OpenAI's `/v1/embeddings`):
    inputs as the model's own token ids, and the width of the vectors asked for."""

    texts: list[str] | None = None
    token_ids: list[list[int]] | None = None
    dimensions: int | None = None


@runtime_checkable
class InputEmbedder(Protocol):
    """An embedder that also takes token ids and `dimensions` (optional, like `Embedder`:
    a vendor without it answers 400 for either). It answers 400 naming `dimensions`
    where the deployment's model cannot shorten its vectors."""

    async def embed_input(self, target: Target, given: EmbeddingInput) -> Embeddings: ...


@runtime_checkable
class Reranker(Protocol):
    """A vendor that scores chunks against a query (optional, like `Embedder`)."""

    async def rerank(self, target: Target, query: str, chunks: list[str], instruction: str | None) -> Scores: ...


def in_batches(items: list[_Item], size: int) -> list[list[_Item]]:
    """Split an input that is larger than a vendor's batch; answers join back in order."""
    return [items[start : start + size] for start in range(0, len(items), size)]


async def collect(chunks: ChunkStream) -> GenerationChunk:
    """Join a stream of chunks into one (for adapters whose only mode is streaming); the
    stream is closed however the joining ends."""
    result = GenerationChunk(text="")
    texts: list[str] = []
    logprobs: list[TokenLogprob] = []
    tool_calls: list[dict[str, Any]] = []
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            texts.append(chunk.text)
            if chunk.logprobs:
                logprobs.extend(chunk.logprobs)
            if chunk.tool_calls:
                join_tool_calls(tool_calls, chunk.tool_calls)
            if chunk.finish_reason is not None:
                result.finish_reason = chunk.finish_reason
            if chunk.prompt_tokens is not None:
                result.prompt_tokens = chunk.prompt_tokens
            if chunk.response_tokens is not None:
                result.response_tokens = chunk.response_tokens
            if chunk.cached_prompt_tokens is not None:
                result.cached_prompt_tokens = chunk.cached_prompt_tokens
            if chunk.cache_creation_tokens is not None:
                result.cache_creation_tokens = chunk.cache_creation_tokens
    result.text = "".join(texts)
    result.logprobs = logprobs or None
    result.tool_calls = tool_calls or None
    return result
