"""Anthropic's Messages API (`/v1/messages`), streaming and not.

Function calling maps onto Anthropic's tool use: OpenAI `tools` become `tools` with an
`input_schema`, `tool_choice` auto/required/none/{function} becomes auto/any/none/
{tool}, assistant tool calls and tool turns become `tool_use` and `tool_result`
blocks, and the answer's `tool_use` blocks (streamed as `input_json_delta`s) come back
as OpenAI tool calls with stop reason `tool_use` read as `tool_calls`.

`response_format` is refused (400): the Messages API version modelport speaks has no
JSON mode, and forcing a tool call in its place would answer in another shape than
the caller asked for. `seed`, `logit_bias` and `n` > 1 have no Anthropic equivalent.

A call from the Anthropic surface carries the request as its client sent it (a
`VendorPassthrough` of this family): its conversation, tools and Anthropic-only fields
(`thinking`, `context_management`, `cache_control`ed blocks, ...) replace this
adapter's rendering of them, and its `anthropic-beta` header goes along, under the
deployment's configured headers and the credential, which it cannot replace. The
sampling (max_tokens, temperature, ...) is still the call's, as the service decided
it, and the deployment's `extra_body` still has the last word. Thinking and redacted
thinking blocks come back, whole and streamed, as the chunks' `reasoning`.

`count_prompt` asks the upstream's own `/v1/messages/count_tokens`: no generation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from modelport.errors import InvalidRequest, UpstreamError
from modelport.generation import FinishReason, GenerationCall, GenerationChunk
from modelport.schemas.inference import MAX_SURFACE_STOP_SEQUENCES
from modelport.vendors.base import ANTHROPIC_CONTENT, Capabilities, Target
from modelport.vendors.http_vendor import EventParser, HttpVendor, Outgoing
from modelport.vendors.settings import AnthropicSettings
from modelport.vendors.turns import conversation
from modelport.vendors.upstream import join_url, upstream_model

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
# What a passed-through request may add to the headers: Anthropic's feature flags only.
PASSED_HEADERS = frozenset({"anthropic-beta"})
# The fields `/v1/messages/count_tokens` takes (the rest of a Messages body is refused there).
COUNTED_FIELDS = frozenset(
    {"model", "messages", "system", "tools", "tool_choice", "thinking", "context_management", "mcp_servers",
     "output_config"}
)  # fmt: skip

# OpenAI's `reasoning_effort` as Anthropic's extended thinking: a thinking budget in
# tokens (Anthropic takes at least 1,024, and less than max_tokens). "none" and
# "minimal" think not at all; an answer too short for the smallest budget neither.
THINKING_BUDGETS = {"low": 1024, "medium": 4096, "high": 16_384, "xhigh": 32_768}
MIN_THINKING_BUDGET = 1024
# The models that take `thinking` (Claude 3.7 Sonnet and the Claude 4 families); an
# older one refuses it with a 400, so there the effort is left out and named instead.
_THINKING_MODEL = re.compile(r"claude-(3-7-sonnet|(opus|sonnet|haiku)-[4-9])")

CAPABILITIES = Capabilities(
    vendor="ANTHROPIC",
    parameters=frozenset({"top_p", "top_k", "stop_sequences", "tools", "tool_choice", "reasoning_effort"}),
    max_temperature=1.0,  # Anthropic refuses more; SPEC clamps
    default_max_tokens=10_000,  # capped by the model's own limit (max_output_tokens)
    accepts_images=True,
    max_stop_sequences=MAX_SURFACE_STOP_SEQUENCES,
    content_kinds=ANTHROPIC_CONTENT,  # passed through as sent (the call's VendorPassthrough)
)

# As @ai-sdk/anthropic maps them (research notes); a refusal is a content filter.
STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}


class AnthropicVendor(HttpVendor):
    vendor = "ANTHROPIC"

    def capabilities(self, target: Target) -> Capabilities:
        found = CAPABILITIES
        if not _THINKING_MODEL.match(target.settings.model or ""):
            found = replace(found, parameters=found.parameters - {"reasoning_effort"})
        # The default max_tokens is capped at the model's own output limit, when set.
        ceiling = target.settings.max_output_tokens if isinstance(target.settings, AnthropicSettings) else None
        if ceiling and found.default_max_tokens and ceiling < found.default_max_tokens:
            return replace(found, default_max_tokens=ceiling)
        return found

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-api-key": api_key}

    async def build_request(self, target: Target, call: GenerationCall, *, stream: bool) -> Outgoing:
        base_url = target.settings.base_url or ANTHROPIC_BASE_URL
        body, headers = self._body(target, call, stream=stream)
        return self.post(target, join_url(base_url, "v1/messages"), body, headers=headers)

    async def count_prompt(self, target: Target, call: GenerationCall) -> int:
        """The prompt's input tokens, as the upstream counts them (nothing is generated)."""
        base_url = target.settings.base_url or ANTHROPIC_BASE_URL
        body, headers = self._body(target, call, stream=False)
        counted = {name: value for name, value in body.items() if name in COUNTED_FIELDS}
        url = join_url(base_url, "v1/messages/count_tokens")
        answer = await self.answer_of(self.post(target, url, counted, headers=headers))
        tokens = answer.get("input_tokens") if isinstance(answer, dict) else None
        if not isinstance(tokens, int):
            raise UpstreamError("ANTHROPIC answered count_tokens without input_tokens")
        return tokens

    def _body(self, target: Target, call: GenerationCall, *, stream: bool) -> tuple[dict[str, Any], dict[str, str]]:
        """The Messages body and the headers under the configured ones and the credential."""
        passthrough = call.passthrough if call.passthrough and call.passthrough.honoured_by(self.vendor) else None
        sampling = call.sampling
        body: dict[str, Any] = {
            "model": upstream_model(target),
            "max_tokens": sampling.max_tokens,  # decided by the service (inference/calls.py)
            "temperature": sampling.temperature,
            "stream": stream,
        }
        if passthrough is None or "messages" not in passthrough.body:  # else not worth rendering
            system, turns = conversation(call)
            body["messages"] = [{"role": turn.role, "content": [_part(part) for part in turn.parts]} for turn in turns]
            if system:
                body["system"] = system
        optional = {"top_p": sampling.top_p, "top_k": sampling.top_k, "stop_sequences": list(sampling.stop_sequences)}
        body.update({name: value for name, value in optional.items() if value})
        if call.tools is not None:
            body["tools"] = [_tool(tool) for tool in call.tools]
        if call.tool_choice is not None:
            body["tool_choice"] = _tool_choice(call.tool_choice)
        thinking = _thinking(sampling.reasoning_effort, sampling.max_tokens)
        if thinking is not None:
            # Anthropic thinks only at temperature 1 and without top_k.
            body.update(thinking=thinking, temperature=1.0)
            body.pop("top_k", None)
        headers = {"anthropic-version": API_VERSION}
        if passthrough is not None:
            body.update(passthrough.body)
            headers.update({name: value for name, value in passthrough.headers.items() if name in PASSED_HEADERS})
        body.update(target.settings.extra_body or {})
        return body, headers

    def parse_answer(self, payload: Any, call: GenerationCall, sent: Outgoing) -> GenerationChunk:
        finish = STOP_REASONS.get(str(payload.get("stop_reason")), "stop")
        blocks = payload.get("content") or []
        text = "".join(block.get("text", "") for block in blocks if block.get("type") == "text")
        uses = [block for block in blocks if block.get("type") == "tool_use"]
        tool_calls = [
            {
                "index": index,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": json.dumps(block.get("input") or {})},
            }
            for index, block in enumerate(uses)
        ]
        thinking = [block for block in blocks if block.get("type") in ("thinking", "redacted_thinking")]
        reasoning = [_reasoning(index, block) for index, block in enumerate(thinking)]
        usage = payload.get("usage") or {}
        return GenerationChunk(
            text="" if finish == "content_filter" else text,
            tool_calls=tool_calls or None,
            reasoning=reasoning or None,
            finish_reason=finish,
            prompt_tokens=_input_tokens(usage),
            response_tokens=usage.get("output_tokens"),
            cached_prompt_tokens=_count(usage, "cache_read_input_tokens"),
            cache_creation_tokens=_count(usage, "cache_creation_input_tokens"),
        )

    def event_parser(self, call: GenerationCall, sent: Outgoing) -> EventParser:
        return _Events()


class _Events(EventParser):
    def __init__(self) -> None:
        super().__init__()
        self._tool_index: dict[int, int] = {}  # content block index -> tool call index
        self._reasoning_index: dict[int, int] = {}  # content block index -> reasoning index

    def parse(self, name: str, payload: Any) -> Iterator[GenerationChunk]:
        kind = payload.get("type", name)
        if kind == "message_start":
            usage = (payload.get("message") or {}).get("usage") or {}
            self._read_usage(usage)
            self.response_tokens = usage.get("output_tokens", self.response_tokens)
            if self.prompt_tokens is not None:  # the input counts, known before the answer
                yield GenerationChunk(
                    prompt_tokens=self.prompt_tokens,
                    cached_prompt_tokens=self.cached_prompt_tokens,
                    cache_creation_tokens=self.cache_creation_tokens,
                )
        elif kind == "content_block_start":
            block = payload.get("content_block") or {}
            if block.get("type") in ("thinking", "redacted_thinking"):
                index = self._reasoning_index[int(payload.get("index", 0))] = len(self._reasoning_index)
                yield GenerationChunk(reasoning=[_reasoning(index, block)])
            elif block.get("type") == "tool_use":
                index = self._tool_index[int(payload.get("index", 0))] = len(self._tool_index)
                start = {"name": block.get("name"), "arguments": ""}
                yield GenerationChunk(
                    tool_calls=[{"index": index, "id": block.get("id"), "type": "function", "function": start}]
                )
        elif kind == "content_block_delta":
            delta = payload.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                yield GenerationChunk(text=delta["text"])
            elif delta.get("type") in ("thinking_delta", "signature_delta"):
                index = self._reasoning_index.get(int(payload.get("index", 0)), 0)
                name = "thinking" if delta["type"] == "thinking_delta" else "signature"
                if delta.get(name):
                    yield GenerationChunk(reasoning=[{"index": index, "type": "thinking", name: delta[name]}])
            elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                index = self._tool_index.get(int(payload.get("index", 0)), 0)
                arguments = {"arguments": delta["partial_json"]}
                yield GenerationChunk(tool_calls=[{"index": index, "function": arguments}])
        elif kind == "message_delta":
            reason = (payload.get("delta") or {}).get("stop_reason")
            if reason:
                self.finish = STOP_REASONS.get(str(reason), "stop")
            # output_tokens here is cumulative: the last one is the total.
            usage = payload.get("usage") or {}
            self.response_tokens = usage.get("output_tokens", self.response_tokens)
            # message_delta may repeat (or first give) the input counts, cache parts included.
            self._read_usage(usage)
        elif kind == "error":
            error = payload.get("error") or {}
            raise UpstreamError(f"ANTHROPIC failed mid-stream: {error.get('message', error)}")

    def _read_usage(self, usage: dict[str, Any]) -> None:
        """The input counts of a usage object, where it carries them."""
        total = _input_tokens(usage)
        if total is not None:
            self.prompt_tokens = total
        read, created = _count(usage, "cache_read_input_tokens"), _count(usage, "cache_creation_input_tokens")
        if read is not None:
            self.cached_prompt_tokens = read
        if created is not None:
            self.cache_creation_tokens = created


def _reasoning(index: int, block: dict[str, Any]) -> dict[str, Any]:
    """A thinking or redacted thinking block as a `reasoning` entry (what it holds so far)."""
    entry: dict[str, Any] = {"index": index, "type": block.get("type")}
    for name in ("thinking", "signature", "data"):
        if block.get(name):
            entry[name] = block[name]
    return entry


def _input_tokens(usage: dict[str, Any]) -> int | None:
    """Every input token: Anthropic's `input_tokens` is only the uncached part; the cache
    reads and writes are still prompt tokens the model used (reported apart by `_count`)."""
    if usage.get("input_tokens") is None:
        return None
    cached = int(usage.get("cache_creation_input_tokens") or 0) + int(usage.get("cache_read_input_tokens") or 0)
    return int(usage["input_tokens"]) + cached


def _count(usage: dict[str, Any], name: str) -> int | None:
    value = usage.get(name)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _thinking(effort: str | None, max_tokens: int | None) -> dict[str, Any] | None:
    """Anthropic's `thinking` for an OpenAI `reasoning_effort` (THINKING_BUDGETS), within
    the answer's max_tokens; None: no thinking."""
    budget = THINKING_BUDGETS.get(effort or "")
    if budget is None or max_tokens is None or max_tokens <= MIN_THINKING_BUDGET:
        return None
    return {"type": "enabled", "budget_tokens": min(budget, max_tokens - 1)}


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type", "function") != "function" or not isinstance(tool.get("function"), dict):
        raise InvalidRequest("Anthropic takes function tools only ({'type': 'function', 'function': {...}})")
    function = tool["function"]
    described = {"name": function.get("name"), "input_schema": function.get("parameters") or {"type": "object"}}
    if function.get("description"):
        described["description"] = function["description"]
    return described


def _tool_choice(choice: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if not name:
            raise InvalidRequest("tool_choice names no function: give {'type': 'function', 'function': {'name': ...}}")
        return {"type": "tool", "name": name}
    mapped = {"auto": "auto", "required": "any", "none": "none"}.get(choice)
    if mapped is None:
        raise InvalidRequest(f"tool_choice {choice!r} is not one of auto, required, none or a function")
    return {"type": mapped}


def _part(part: dict[str, Any]) -> dict[str, Any]:
    if part.get("type") == "tool_call":
        return {"type": "tool_use", "id": part["id"], "name": part["name"], "input": part["arguments"]}
    if part.get("type") == "tool_result":
        return {"type": "tool_result", "tool_use_id": part["id"], "content": part["content"]}
    if part.get("type") == "image_data":
        image = part["image_data"]
        return {"type": "image", "source": {"type": "base64", "media_type": image["media_type"], "data": image["data"]}}
    if part.get("type") == "image_url":
        return {"type": "image", "source": {"type": "url", "url": part["image_url"]["url"]}}
    return {"type": "text", "text": part["text"]}
