"""The vocabulary shared by the service, the vendor adapters and the embedded engine.

A `GenerationCall` is a request after validation and defaults: what to send. A vendor
answers with `GenerationChunk`s: raw text pieces (stop sequences may still be in
them; the service removes them), optional per-token logprobs, and at the end the
finish reason and token counts.

Beyond the SGP v4 request, a call may carry OpenAI's function-calling and structured
output parameters (`tools`, `tool_choice`, `response_format`, `seed`, `logit_bias`,
`n`), in OpenAI's own shapes: the OpenAI-compatible surfaces pass them through
unchanged and each adapter translates them to its vendor (or refuses them with 400,
see `params.check_supported`). A model that calls a tool answers with `tool_calls`
deltas in OpenAI's streaming shape and finish reason "tool_calls".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from modelport.principal import Principal

# Why a generation ended; the wire schemas use these too (schemas/openai.py,
# schemas/inference.py). "tool_calls": the model stopped to call tools (OpenAI's reason).
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]
# What a surface without tool calls reports (the SGP v4 response, OpenAI's legacy
# completions): a stop to call tools is reported there as "stop".
TextFinishReason = Literal["stop", "length", "content_filter"]


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling settings with every default already applied."""

    temperature: float
    # Decided by the service (inference/calls.py `max_tokens_for`), which adapters send as
    # is; None: the vendor's own default, which fills what the window leaves (OpenAI chat,
    # Gemini, Cohere), or a call made outside the service (the engine's tests, warm-up).
    max_tokens: int | None
    top_p: float | None = None
    top_k: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stop_sequences: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0
    reasoning_effort: str | None = None
    # For the embedded engine, which samples itself: its vendor fills these from the
    # call (`seed`, `logit_bias`, `response_format`); other vendors read the call's.
    seed: int | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias)
    grammar: str | None = None  # GBNF that constrains the output (engine/grammar.py)


@dataclass(frozen=True, slots=True)
class GenerationCall:
    """One inference request as a vendor adapter receives it."""

    sampling: Sampling
    # Chat requests carry messages (OpenAI-style dicts, prompt appended last); plain
    # completions carry raw `prompt` text and no messages.
    messages: tuple[dict[str, Any], ...] | None = None
    prompt: str | None = None
    # A plain completion's prompt as the model's own token ids (OpenAI's legacy
    # completions), for the vendors that take them (content_needs "token_prompt"); `prompt`
    # then holds them written out, which bounds their count for the limits.
    prompt_token_ids: tuple[int, ...] | None = None
    # OpenAI's legacy `echo` with `logprobs`, computed by the vendor (content_needs
    # "prompt_logprobs"): the answer's text starts with the prompt, and its logprobs
    # cover the prompt's tokens, then the generated ones. (Echo alone is modelport's own:
    # api/several.py puts the prompt before the answer, for any vendor.)
    echo: bool = False
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    # OpenAI shapes, passed through (see the module docstring). `messages` may then also
    # hold assistant turns with `tool_calls` and `{"role": "tool", "tool_call_id",
    # "content"}` turns.
    # [{"type": "function", "function": {"name", "description", "parameters"}}]
    tools: tuple[dict[str, Any], ...] | None = None
    # "none" | "auto" | "required" | {"type": "function", "function": {"name"}}
    tool_choice: str | dict[str, Any] | None = None
    # {"type": "text" | "json_object"} or
    # {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    # token id (a decimal string, as OpenAI sends it) -> bias added to its logit
    logit_bias: dict[str, float] | None = None
    n: int = 1
    # Hints a vendor may act on, in OpenAI's names and shapes (`verbosity`,
    # `prompt_cache_key`, `metadata`, ...: vendors/base.py HINT_PARAMETERS), only those the
    # deployment's vendor honours; the others were left out and named (params.py).
    hints: dict[str, Any] | None = None
    # The most tokens the answer can have, decided with max_tokens (`max_tokens_for`):
    # what the limits reserve for it. 0 for a call made outside the service.
    response_token_bound: int = 0
    # What a surface sends verbatim to a deployment of its own vendor family (see
    # `VendorPassthrough`); every other adapter ignores it.
    passthrough: VendorPassthrough | None = None
    # The content kinds beyond text and images the request carries (vendors/base.py
    # CONTENT_KINDS), each with what the caller sent, as an error names it (e.g.
    # {"server_tools": "tools of type web_search_20250305"}): a deployment whose vendor
    # takes one of them not is refused with a 400 (inference/calls.py `check_content`).
    content_needs: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class VendorPassthrough:
    """Fields a surface sends unchanged to a deployment of the same vendor family, e.g.
    Anthropic's `thinking`, `context_management` and `cache_control`ed blocks from
    `/v1/messages` to an ANTHROPIC deployment. Only the adapter of `vendor` reads it;
    for the others the surface translated what it could into the call's own fields and
    named the rest as dropped (`TextRequest.dropped`).

    `body`: top-level fields of the vendor's request body, sent as given (they replace
    the adapter's own rendering of the same field). `headers`: extra request headers the
    adapter sends under its own, so that neither a deployment's configured headers nor
    the credential can be replaced by them. `hints`: the names the surface reported as
    dropped for another family, which a deployment of `vendor` does honour."""

    vendor: str
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    hints: tuple[str, ...] = ()

    def honoured_by(self, vendor: str) -> bool:
        return vendor == self.vendor


@dataclass(frozen=True, slots=True)
class PromptCounts:
    """A prompt's input tokens as the vendor reported them before its answer's end
    (Anthropic's message_start, the embedded engine's first token): all of them, and the
    parts read from and written to the prompt cache."""

    tokens: int
    cached: int = 0
    created: int = 0


@dataclass(frozen=True, slots=True)
class TokenAlternative:
    token: str
    logprob: float
    bytes: list[int] | None


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    # None: the vendor computed none; only an echoed prompt's first token (nothing comes
    # before it to predict it from), as OpenAI's legacy completions send it (null).
    logprob: float | None
    bytes: list[int] | None
    top_logprobs: list[TokenAlternative] = field(default_factory=list)


@dataclass(slots=True)
class GenerationChunk:
    text: str = ""
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    response_tokens: int | None = None
    # OpenAI's streaming delta shape: [{"index", "id"?, "type": "function"?,
    # "function": {"name"?, "arguments"}}]; a non-streamed answer carries each call
    # whole (id, type, name and all of its arguments) in one entry per index.
    tool_calls: list[dict[str, Any]] | None = None
    # The counts are modelport's estimate: the vendor reported none (token_estimate.py).
    estimated: bool = False
    # The model's reasoning, for a surface that shows it (Anthropic's thinking blocks),
    # in the delta shape of `tool_calls`: [{"index", "type": "thinking" |
    # "redacted_thinking", "thinking"?: text, "signature"?: str, "data"?: str}]; a whole
    # answer carries each block whole. Other surfaces ignore it.
    reasoning: list[dict[str, Any]] | None = None
    # Of `prompt_tokens` (all input tokens, cached or not): those read from the vendor's
    # prompt cache (the embedded engine: its reused prefix), and those written to it
    # (Anthropic's cache creation). None: the vendor said nothing about caching.
    cached_prompt_tokens: int | None = None
    cache_creation_tokens: int | None = None


def join_reasoning(joined: list[dict[str, Any]], deltas: list[dict[str, Any]]) -> None:
    """Fold streamed reasoning deltas into whole blocks (in place, by `index`): text and
    signatures are appended, a redacted block's `data` comes whole."""
    by_index = {int(entry["index"]): entry for entry in joined}
    for delta in deltas:
        index = int(delta.get("index", 0))
        entry = by_index.get(index)
        if entry is None:
            entry = by_index[index] = {"index": index, "type": delta.get("type") or "thinking"}
            joined.append(entry)
        for name in ("thinking", "signature", "data"):
            if delta.get(name):
                entry[name] = entry.get(name, "") + delta[name]
    joined.sort(key=lambda entry: int(entry["index"]))


def join_tool_calls(joined: list[dict[str, Any]], deltas: list[dict[str, Any]]) -> None:
    """Fold streamed tool-call deltas into whole calls (in place, by `index`).

    The first delta of a call names it (id, type, function name); later ones append
    to its arguments, as OpenAI streams them.
    """
    by_index = {int(entry["index"]): entry for entry in joined}
    for delta in deltas:
        index = int(delta.get("index", 0))
        function = delta.get("function") or {}
        entry = by_index.get(index)
        if entry is None:
            entry = {"index": index, "id": None, "type": "function", "function": {"name": None, "arguments": ""}}
            by_index[index] = entry
            joined.append(entry)
        if delta.get("id"):
            entry["id"] = delta["id"]
        if delta.get("type"):
            entry["type"] = delta["type"]
        if function.get("name"):
            entry["function"]["name"] = function["name"]
        entry["function"]["arguments"] += function.get("arguments") or ""
    joined.sort(key=lambda entry: int(entry["index"]))


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """What one finished inference request used: the service hands one to its usage sink
    however the request ended (answered, failed, abandoned by its client, cut off by a
    shutdown). `status` is the HTTP status or the service's final word (499: the client
    went away). `estimated`: the vendor reported no counts, so they are modelport's
    estimate. `cost` in US dollars. `cached_prompt_tokens` and `cache_creation_tokens`
    are the parts of `prompt_tokens` read from and written to the vendor's prompt cache,
    each priced at its own rate (`limits.pricing.cost_of`)."""

    principal: Principal
    deployment_id: str
    prompt_tokens: int
    response_tokens: int
    status: int
    latency_ms: float
    estimated: bool = False
    cost: float = 0.0
    request_id: str | None = None
    cached_prompt_tokens: int = 0
    cache_creation_tokens: int = 0


# Where usage goes (recording, metrics, the request's log line): called once per
# finished request, before anything is awaited (see `inference.metering`).
UsageSink = Callable[[UsageEvent], None]
