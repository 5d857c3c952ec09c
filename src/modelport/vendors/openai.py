"""OpenAI's Chat Completions and legacy Completions APIs, and every server that speaks
them (vLLM, LLM Engine v2, llama.cpp's server) through `model_creation_parameters.base_url`.

Written on modelport's own client rather than the `openai` SDK: the SDK's own retries, timeouts and
error types would sit on top of modelport's (which must follow SPEC's rules), and
vLLM's extra fields (`top_k`, `chat_template`) would go through `extra_body` anyway.
"""

from __future__ import annotations

import codecs
import contextlib
import re
from dataclasses import dataclass, replace
from typing import Any

from modelport.errors import InvalidRequest, UpstreamError
from modelport.generation import FinishReason, GenerationCall, GenerationChunk, TokenAlternative, TokenLogprob
from modelport.limits.token_estimate import estimate_prompt_tokens
from modelport.schemas.inference import MAX_SURFACE_STOP_SEQUENCES
from modelport.vendors.base import (
    OPENAI_CONTENT,
    PROMPT_LOGPROBS,
    TOKEN_PROMPT,
    Capabilities,
    RelayedEvents,
    Target,
)
from modelport.vendors.client import UpstreamClient
from modelport.vendors.http_vendor import EventParser, Outgoing
from modelport.vendors.retrieval_wire import OpenAIRetrieval
from modelport.vendors.settings import OpenAISettings
from modelport.vendors.upstream import RetryPolicy, join_url, sse_json, upstream_model, without_credential
from modelport.vendors.wire import Inbound

OPENAI_BASE_URL = "https://api.openai.com/v1"

_SAMPLING = frozenset({"top_p", "frequency_penalty", "presence_penalty", "stop_sequences"})
# Passed through as they are: the wire format is OpenAI's own. `n` is in none of these:
# a GenerationChunk carries one choice, so n > 1 is refused (400) rather than answered
# with one choice where the caller asked for several.
_TOOLS = frozenset({"tools", "tool_choice", "response_format"})
_DRAW = frozenset({"seed", "logit_bias"})

# The hints (vendors/base.py HINT_PARAMETERS) OpenAI's chat takes, passed in its body
# as the caller sent them (`GenerationCall.hints`); only its reasoning models take a
# reasoning effort and a verbosity, and only the others a predicted output.
_OPENAI_HINTS = frozenset(
    {"prompt_cache_key", "safety_identifier", "service_tier", "store", "metadata", "parallel_tool_calls"}
)

# What each family honours. LLM Engine / vLLM servers take vLLM's extras too (vLLM and
# llama.cpp's server both take tools, response_format, seed and logit_bias on chat).
OPENAI_CHAT = Capabilities(
    vendor="OPENAI",
    parameters=_SAMPLING | _TOOLS | _DRAW | _OPENAI_HINTS | {"logprobs", "top_logprobs", "prediction"},
    accepts_images=True,
    content_kinds=OPENAI_CONTENT,  # `file` and `input_audio` parts travel as the caller sent them
)
# Reasoning models refuse logit_bias (and sampling settings) but call tools.
OPENAI_REASONING = Capabilities(
    vendor="OPENAI",
    parameters=_TOOLS | _OPENAI_HINTS | {"reasoning_effort", "verbosity", "stop_sequences", "seed"},
    accepts_images=True,
    content_kinds=OPENAI_CONTENT,
)
# Legacy completions take a prompt as token ids, passed through (OpenAI's, vLLM's), and
# return log-probabilities in their own shape (`logprobs: k`), the prompt's too with
# `echo` (OpenAI, vLLM, llama.cpp's server: `PROMPT_LOGPROBS`).
_LEGACY_LOGPROBS = frozenset({"logprobs", "top_logprobs"})
_LEGACY_CONTENT = frozenset({TOKEN_PROMPT, PROMPT_LOGPROBS})
OPENAI_COMPLETIONS = Capabilities(
    vendor="OPENAI", parameters=_SAMPLING | _DRAW | _LEGACY_LOGPROBS, fills_window=True, content_kinds=_LEGACY_CONTENT
)
LLMENGINE_OPENAI = Capabilities(
    vendor="LLMENGINE",
    parameters=_SAMPLING
    | _TOOLS
    | _DRAW
    | {"top_k", "logprobs", "top_logprobs", "chat_template", "chat_template_kwargs"},
    default_max_tokens=100,
    platform_default=True,  # a vLLM server fills the window itself
    max_stop_sequences=MAX_SURFACE_STOP_SEQUENCES,
)
LLMENGINE_OPENAI_COMPLETIONS = Capabilities(
    vendor="LLMENGINE",
    parameters=_SAMPLING | _DRAW | _LEGACY_LOGPROBS | {"top_k"},
    default_max_tokens=100,
    max_stop_sequences=MAX_SURFACE_STOP_SEQUENCES,
    content_kinds=_LEGACY_CONTENT,
)

# o1, o3, o4-mini, gpt-5...: they take max_completion_tokens and reject temperature.
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "stop",  # the deprecated single-function form, never asked for here
}


@dataclass(frozen=True, slots=True)
class Flavour:
    """How one vendor uses the OpenAI wire format."""

    vendor: str
    chat: Capabilities
    completions: Capabilities
    default_base_url: str | None
    knows_reasoning_models: bool


# What an event type of the Responses API looks like (`response.output_text.delta`).
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_.]{1,100}")

OPENAI = Flavour("OPENAI", OPENAI_CHAT, OPENAI_COMPLETIONS, OPENAI_BASE_URL, knows_reasoning_models=True)
# FIREWORKS_AI and OTHER: OpenAI's wire format at the model's own base_url (required).
# A server that speaks OpenAI's format (vLLM, Fireworks, llama.cpp's) takes a reasoning
# effort for the models that think, but not necessarily OpenAI's other hints.
COMPATIBLE = Flavour(
    "OPENAI-compatible",
    replace(
        OPENAI_CHAT,
        vendor="OPENAI-compatible",
        parameters=(OPENAI_CHAT.parameters - _OPENAI_HINTS - {"prediction"}) | {"reasoning_effort"},
        # Whether a server takes files or audio depends on its model: not assumed.
        content_kinds=frozenset(),
        max_stop_sequences=MAX_SURFACE_STOP_SEQUENCES,
    ),
    replace(OPENAI_COMPLETIONS, vendor="OPENAI-compatible", max_stop_sequences=MAX_SURFACE_STOP_SEQUENCES),
    None,
    knows_reasoning_models=False,
)
LLMENGINE = Flavour("LLMENGINE", LLMENGINE_OPENAI, LLMENGINE_OPENAI_COMPLETIONS, None, knows_reasoning_models=False)


class OpenAICompatible(OpenAIRetrieval):
    def __init__(self, client: UpstreamClient, flavour: Flavour, policy: RetryPolicy) -> None:
        super().__init__(client, policy)
        self._flavour = flavour
        self.vendor = flavour.vendor

    def _is_reasoning(self, target: Target) -> bool:
        if not self._flavour.knows_reasoning_models:
            return False
        flag = target.settings.reasoning_model if isinstance(target.settings, OpenAISettings) else None
        if flag is not None:
            return flag
        return bool(_REASONING_MODEL.match(target.settings.model or ""))

    def capabilities(self, target: Target) -> Capabilities:
        if target.model_type == "COMPLETION":
            return self._flavour.completions
        return OPENAI_REASONING if self._is_reasoning(target) else self._flavour.chat

    def _base_url(self, target: Target) -> str:
        base_url = target.settings.base_url or self._flavour.default_base_url
        if not base_url:
            raise InvalidRequest(f"deployment {target.deployment_id} has no base_url in its model_creation_parameters")
        return str(base_url)

    async def build_request(self, target: Target, call: GenerationCall, *, stream: bool) -> Outgoing:
        base_url = self._base_url(target)
        model = upstream_model(target)
        sampling = call.sampling
        reasoning = self._is_reasoning(target)
        body: dict[str, Any] = {"model": model, "stream": stream}
        if call.messages is not None:
            path = "chat/completions"
            body["messages"] = [_message(message) for message in call.messages]
        else:
            path = "completions"
            body["prompt"] = list(call.prompt_token_ids) if call.prompt_token_ids else (call.prompt or "")
        if not reasoning:
            body["temperature"] = sampling.temperature
        if sampling.max_tokens is not None:  # decided by the service (inference/calls.py)
            body["max_completion_tokens" if reasoning else "max_tokens"] = sampling.max_tokens
        optional = {
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,
            "frequency_penalty": sampling.frequency_penalty,
            "presence_penalty": sampling.presence_penalty,
            "stop": list(sampling.stop_sequences) or None,
            "reasoning_effort": sampling.reasoning_effort,
            "chat_template": call.chat_template,
            "chat_template_kwargs": call.chat_template_kwargs,
            "tools": list(call.tools) if call.tools is not None else None,
            "tool_choice": call.tool_choice,
            "response_format": call.response_format,
            "seed": call.seed,
            "logit_bias": call.logit_bias,
        }
        body.update({name: value for name, value in optional.items() if value is not None})
        body.update(call.hints or {})  # only those this vendor takes (inference/params.py)
        if sampling.logprobs and call.messages is None:  # the legacy shape: how many alternatives
            body["logprobs"] = sampling.top_logprobs
        elif sampling.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = sampling.top_logprobs
        if call.echo:  # the upstream's answer is returned as it is: prompt first, its logprobs too
            body["echo"] = True
        if stream:
            body["stream_options"] = {"include_usage": True}
        body.update(target.settings.extra_body or {})
        return self.post(target, join_url(str(base_url), path), body)

    def parse_answer(self, payload: Any, call: GenerationCall, sent: Outgoing) -> GenerationChunk:
        choice = (payload.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        text = message.get("content") if "message" in choice else choice.get("text")
        finish = _FINISH.get(str(choice.get("finish_reason")), "stop")
        if message.get("refusal"):
            text, finish = "", "content_filter"
        usage = payload.get("usage") or {}
        return GenerationChunk(
            text=text or "",
            logprobs=_logprobs(choice.get("logprobs")),
            tool_calls=_whole_tool_calls(message.get("tool_calls")),
            finish_reason=finish,
            prompt_tokens=usage.get("prompt_tokens"),
            response_tokens=usage.get("completion_tokens"),
            cached_prompt_tokens=cached_tokens(usage),
        )

    def event_parser(self, call: GenerationCall, sent: Outgoing) -> EventParser:
        return _Events(self.vendor, call)

    # --- the Responses API, passed through (vendors.base.ResponsesRelay) ----------------

    def relays_responses(self, target: Target) -> bool:
        """OpenAI serves it; another server when its settings say so (vLLM does)."""
        if self.vendor == "OPENAI":
            return True
        return bool(getattr(target.settings, "serves_responses", False))

    def _responses_request(self, target: Target, body: dict[str, Any], *, stream: bool) -> Outgoing:
        # The upstream's own model name; the deployment's extra_body applies, as to chats.
        sent = {**body, "model": upstream_model(target), "stream": stream, **(target.settings.extra_body or {})}
        return self.post(target, join_url(self._base_url(target), "responses"), sent)

    # What is relayed goes to the caller as the upstream wrote it, but for the credential
    # modelport sent it, which an upstream may echo anywhere (`without_credential`).

    async def relay_whole(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        sent = self._responses_request(target, body, stream=False)
        answer = without_credential(await self.answer_of(sent), sent.api_key)
        if not isinstance(answer, dict):
            raise UpstreamError(f"{self.vendor} answered /responses with something other than a response object")
        return answer

    async def relay_stream(self, target: Target, body: dict[str, Any]) -> RelayedEvents:
        sent = self._responses_request(target, body, stream=True)
        response = await self._send(sent)
        return self._relayed(response, sent.api_key)

    async def _relayed(self, response: Inbound, api_key: str | None) -> RelayedEvents:
        events = sse_json(response, vendor=self.vendor)
        async with contextlib.aclosing(events):
            async for name, payload in events:
                payload = without_credential(payload, api_key)
                if isinstance(payload, dict):
                    kind = payload.get("type")
                    # The name goes on an `event:` line of the client's stream: only a
                    # plain event type, never a line break an upstream slipped in.
                    named = kind if isinstance(kind, str) and _EVENT_TYPE.fullmatch(kind) else name
                    yield (named if _EVENT_TYPE.fullmatch(named) else "message"), payload


class _Events(EventParser):
    def __init__(self, vendor: str, call: GenerationCall) -> None:
        super().__init__()
        self._vendor = vendor
        self._call = call
        self._deltas = 0  # deltas that carried text: one token each on llama.cpp and vLLM

    def parse(self, name: str, payload: Any) -> list[GenerationChunk]:
        # A list, not a generator: an event most often carries one chunk, and a generator
        # would be made and resumed twice for it, once an event.
        if payload.get("error"):
            raise UpstreamError(f"{self._vendor} failed mid-stream: {payload['error']}")
        usage = payload.get("usage")
        if usage:
            self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
            self.response_tokens = usage.get("completion_tokens", self.response_tokens)
            cached = cached_tokens(usage)
            if cached is not None:
                self.cached_prompt_tokens = cached
        chunks: list[GenerationChunk] = []
        for choice in payload.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content") if "delta" in choice else choice.get("text")
            if delta.get("refusal"):
                self.finish = "content_filter"
            block = choice.get("logprobs")
            logprobs = None if block is None else _logprobs(block)
            deltas = delta.get("tool_calls")
            tool_calls = None if deltas is None else _tool_call_deltas(deltas)
            if text or logprobs:
                self._deltas += 1
            if text or logprobs or tool_calls:
                chunks.append(GenerationChunk(text=text or "", logprobs=logprobs, tool_calls=tool_calls))
            if choice.get("finish_reason"):
                self.finish = _FINISH.get(str(choice["finish_reason"]), "stop")
        return chunks

    def last(self) -> GenerationChunk:
        # Counts are never missing (SPEC 3.7): a server that sent no usage gets modelport's.
        prompt_tokens, response_tokens = self.prompt_tokens, self.response_tokens
        estimated = prompt_tokens is None or response_tokens is None
        if response_tokens is None:
            response_tokens = self._deltas
        if prompt_tokens is None:
            prompt_tokens = estimate_prompt_tokens(self._call)
        return GenerationChunk(
            finish_reason=self.finish,
            prompt_tokens=prompt_tokens,
            response_tokens=response_tokens,
            estimated=estimated,
            cached_prompt_tokens=self.cached_prompt_tokens,
        )


def cached_tokens(usage: dict[str, Any]) -> int | None:
    """OpenAI's `usage.prompt_tokens_details.cached_tokens` (part of `prompt_tokens`);
    vLLM reports it too, with prefix caching on."""
    details = usage.get("prompt_tokens_details")
    value = details.get("cached_tokens") if isinstance(details, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


# An assistant turn's tool calls, and a tool turn's answer, travel as OpenAI sends them.
_TURN_FIELDS = ("name", "tool_calls", "tool_call_id")


def _message(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, list):
        parts = []
        for part in content:
            if part.get("type") == "image_data":
                image = part["image_data"]
                url = {"url": f"data:{image['media_type']};base64,{image['data']}"}
                if image.get("detail"):
                    url["detail"] = image["detail"]
                parts.append({"type": "image_url", "image_url": url})
            else:
                parts.append({key: value for key, value in part.items() if value is not None})
        content = parts
    turn = {"role": message["role"], "content": content}
    turn.update({name: message[name] for name in _TURN_FIELDS if message.get(name) is not None})
    return turn


def _whole_tool_calls(calls: Any) -> list[dict[str, Any]] | None:
    """A non-streamed answer's tool calls, each with its index (the delta shape, whole)."""
    if not isinstance(calls, list) or not calls:
        return None
    return [
        {
            "index": index,
            "id": call.get("id"),
            "type": call.get("type") or "function",
            "function": {
                "name": (call.get("function") or {}).get("name"),
                "arguments": (call.get("function") or {}).get("arguments") or "",
            },
        }
        for index, call in enumerate(calls)
    ]


def _tool_call_deltas(deltas: Any) -> list[dict[str, Any]] | None:
    """A streamed delta's tool calls, with the fields the vendor left out (or sent as
    null) dropped, as OpenAI streams them: only the first delta of a call names it."""
    if not isinstance(deltas, list) or not deltas:
        return None
    cleaned: list[dict[str, Any]] = []
    for position, delta in enumerate(deltas):
        entry: dict[str, Any] = {"index": int(delta.get("index", position))}
        if delta.get("id"):
            entry["id"] = delta["id"]
        if delta.get("type"):
            entry["type"] = delta["type"]
        function = delta.get("function") or {}
        entry["function"] = {"arguments": function.get("arguments") or ""}
        if function.get("name"):
            entry["function"]["name"] = function["name"]
        cleaned.append(entry)
    return cleaned


def _logprobs(block: Any) -> list[TokenLogprob] | None:
    if isinstance(block, dict) and isinstance(block.get("tokens"), list):
        return _legacy_logprobs(block)
    if not isinstance(block, dict) or not isinstance(block.get("content"), list):
        return None
    # A token that splits a character arrives as escaped text ("\\xf0\\x9f"); its text
    # is rebuilt from its bytes, so that the tokens join to the answer's text.
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    return [
        TokenLogprob(
            token=decoder.decode(bytes(entry["bytes"])) if entry.get("bytes") is not None else entry["token"],
            logprob=float(entry["logprob"]),
            bytes=entry.get("bytes") if entry.get("bytes") is not None else list(entry["token"].encode("utf-8")),
            top_logprobs=[
                TokenAlternative(
                    token=alt["token"],
                    logprob=float(alt["logprob"]),
                    bytes=alt.get("bytes") if alt.get("bytes") is not None else list(alt["token"].encode("utf-8")),
                )
                for alt in entry.get("top_logprobs") or []
            ],
        )
        for entry in block["content"]
    ]


def _legacy_logprobs(block: dict[str, Any]) -> list[TokenLogprob]:
    """The legacy completions' parallel lists, one entry a token. An echoed prompt's first
    token has no log-probability nor alternatives (null): kept as None."""
    tokens = [str(token) for token in block["tokens"]]
    values = block.get("token_logprobs") or [None] * len(tokens)
    alternatives = block.get("top_logprobs") or [None] * len(tokens)
    return [
        TokenLogprob(
            token=token,
            logprob=None if value is None else float(value),
            bytes=list(token.encode("utf-8")),
            top_logprobs=[
                TokenAlternative(token=str(alt), logprob=float(alt_value), bytes=list(str(alt).encode("utf-8")))
                for alt, alt_value in (alts or {}).items()
            ],
        )
        for token, value, alts in zip(tokens, values, alternatives, strict=False)
    ]
