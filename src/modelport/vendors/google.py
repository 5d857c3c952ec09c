"""Google Gemini: `generateContent` and `streamGenerateContent?alt=sse`.

Function calling: OpenAI `tools` become one `functionDeclarations` tool, `tool_choice`
becomes `toolConfig.functionCallingConfig` (AUTO / ANY / NONE, or ANY limited to the
named function), the answer's `functionCall` parts come back as OpenAI tool calls
(whole, even when streamed: Gemini sends each call in one piece) with finish reason
`tool_calls`, and a tool turn goes back as a `functionResponse` part. Gemini gives a
call no id unless it has one of its own, so modelport makes one up (`call_...`).

`response_format` json_object / json_schema become `responseMimeType:
application/json` and `responseSchema`. Gemini's Schema is a subset of JSON Schema
(OpenAPI 3.0's): keywords it does not know, such as `additionalProperties` that
OpenAI strict schemas carry, are left out (Gemini sends only the declared properties
anyway), and `$ref` is refused with 400. Tool parameters are translated the same way.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from modelport.errors import InvalidRequest, UpstreamError
from modelport.generation import FinishReason, GenerationCall, GenerationChunk
from modelport.vendors.base import Capabilities, Embeddings, Target, in_batches
from modelport.vendors.http_vendor import EventParser, HttpVendor, Outgoing
from modelport.vendors.turns import conversation
from modelport.vendors.upstream import join_url, upstream_model

GEMINI_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
EMBED_BATCH = 100  # batchEmbedContents takes at most 100 requests

CAPABILITIES = Capabilities(
    vendor="GOOGLE",
    parameters=frozenset(
        {
            "top_p",
            "top_k",
            "stop_sequences",
            "frequency_penalty",
            "presence_penalty",
            "tools",
            "tool_choice",
            "response_format",
            "seed",
        }
    ),
    max_temperature=2.0,
    accepts_images=True,
)

# STOP covers a natural end and a stop sequence; the safety family is a content filter.
FINISH_REASONS: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "LANGUAGE": "content_filter",
}


class GoogleVendor(HttpVendor):
    vendor = "GOOGLE"

    def capabilities(self, target: Target) -> Capabilities:
        return CAPABILITIES

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-goog-api-key": api_key}

    async def build_request(self, target: Target, call: GenerationCall, *, stream: bool) -> Outgoing:
        model = upstream_model(target)
        base_url = target.settings.base_url or GEMINI_BASE_URL
        method = "streamGenerateContent" if stream else "generateContent"
        url = join_url(base_url, f"models/{model}:{method}")
        return self.post(target, url, gemini_body(target, call), params={"alt": "sse"} if stream else None)

    def parse_answer(self, payload: Any, call: GenerationCall, sent: Outgoing) -> GenerationChunk:
        return gemini_answer(payload)

    def event_parser(self, call: GenerationCall, sent: Outgoing) -> EventParser:
        return _Events(self.vendor)

    async def embed(self, target: Target, texts: list[str]) -> Embeddings:
        """`batchEmbedContents`, 100 texts a call; Gemini reports no token count."""
        model = upstream_model(target)
        url = join_url(target.settings.base_url or GEMINI_BASE_URL, f"models/{model}:batchEmbedContents")
        vectors: list[list[float]] = []
        for batch in in_batches(texts, EMBED_BATCH):
            parts = [{"model": f"models/{model}", "content": {"parts": [{"text": text}]}} for text in batch]
            payload = await self.answer_of(self.post(target, url, {"requests": parts}))
            found = payload.get("embeddings") or []
            if len(found) != len(batch) or not all(isinstance(item.get("values"), list) for item in found):
                raise UpstreamError(f"GOOGLE answered {len(found)} embeddings for {len(batch)} texts")
            vectors += [item["values"] for item in found]
        return Embeddings(vectors=vectors)


def gemini_body(target: Target, call: GenerationCall) -> dict[str, Any]:
    """A call as a GenerateContentRequest body (the Gemini API's and Vertex AI's alike)."""
    system, turns = conversation(call)
    sampling = call.sampling
    config: dict[str, Any] = {"candidateCount": 1, "temperature": sampling.temperature}
    optional = {
        "topP": sampling.top_p,
        "topK": sampling.top_k,
        "maxOutputTokens": sampling.max_tokens,
        "stopSequences": list(sampling.stop_sequences) or None,
        "frequencyPenalty": sampling.frequency_penalty,
        "presencePenalty": sampling.presence_penalty,
        "seed": call.seed,
    }
    config.update({name: value for name, value in optional.items() if value is not None})
    config.update(_response_format(call.response_format))
    body: dict[str, Any] = {
        "contents": [
            {"role": "model" if turn.role == "assistant" else "user", "parts": [_part(part) for part in turn.parts]}
            for turn in turns
        ],
        "generationConfig": config,
    }
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    if call.tools is not None:
        body["tools"] = [{"functionDeclarations": [_declaration(tool) for tool in call.tools]}]
    if call.tool_choice is not None:
        body["toolConfig"] = {"functionCallingConfig": _calling_config(call.tool_choice)}
    body.update(target.settings.extra_body or {})
    return body


def gemini_answer(payload: Any) -> GenerationChunk:
    """A whole GenerateContentResponse as one chunk with the finish reason and counts."""
    frame = _Frame(payload)
    return GenerationChunk(
        text=frame.text,
        tool_calls=frame.tool_calls(0),
        finish_reason=frame.finish or "stop",
        prompt_tokens=frame.prompt_tokens,
        response_tokens=frame.response_tokens,
        cached_prompt_tokens=frame.cached_tokens,
    )


class _Events(EventParser):
    def __init__(self, vendor: str) -> None:
        super().__init__()
        self._vendor = vendor  # who failed, in a mid-stream error (GOOGLE or VERTEX_AI)
        self._calls = 0  # function calls so far: the next one's index

    def parse(self, name: str, payload: Any) -> Iterator[GenerationChunk]:
        if payload.get("error"):
            error = payload["error"]
            raise UpstreamError(f"{self._vendor} failed mid-stream: {error.get('message', error)}")
        frame = _Frame(payload)
        tool_calls = frame.tool_calls(self._calls)
        if frame.text or tool_calls:
            yield GenerationChunk(text=frame.text, tool_calls=tool_calls)
        self._calls += len(frame.calls)
        self.finish = frame.finish or self.finish
        if frame.prompt_tokens is not None:
            self.prompt_tokens = frame.prompt_tokens
        if frame.response_tokens is not None:
            self.response_tokens = frame.response_tokens
        if frame.cached_tokens is not None:
            self.cached_prompt_tokens = frame.cached_tokens


class _Frame:
    """One GenerateContentResponse: the text, finish reason and usage it carries."""

    def __init__(self, payload: dict[str, Any]) -> None:
        candidates = payload.get("candidates") or []
        self.finish: FinishReason | None = None
        self.text = ""
        self.calls: list[dict[str, Any]] = []  # the functionCall parts
        if not candidates and (payload.get("promptFeedback") or {}).get("blockReason"):
            self.finish = "content_filter"  # the prompt itself was blocked: no candidates
        elif candidates:
            candidate = candidates[0]
            parts = (candidate.get("content") or {}).get("parts") or []
            # "thought" parts are the model's reasoning, not its answer.
            self.text = "".join(part.get("text", "") for part in parts if not part.get("thought"))
            self.calls = [part["functionCall"] for part in parts if isinstance(part.get("functionCall"), dict)]
            reason = candidate.get("finishReason")
            if reason:
                self.finish = FINISH_REASONS.get(str(reason), "stop")
                # Gemini ends a turn that calls functions with STOP; OpenAI says tool_calls.
                if self.finish == "stop" and self.calls:
                    self.finish = "tool_calls"
        usage = payload.get("usageMetadata") or {}
        self.prompt_tokens: int | None = usage.get("promptTokenCount")
        # Part of promptTokenCount: read from a cached content (explicit or implicit caching).
        self.cached_tokens: int | None = usage.get("cachedContentTokenCount")
        candidates_tokens = usage.get("candidatesTokenCount")
        thoughts = usage.get("thoughtsTokenCount") or 0
        self.response_tokens: int | None = None if candidates_tokens is None else candidates_tokens + thoughts

    def tool_calls(self, first_index: int) -> list[dict[str, Any]] | None:
        """This frame's function calls as whole OpenAI tool calls, numbered from `first_index`."""
        if not self.calls:
            return None
        return [
            {
                "index": first_index + offset,
                "id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": call.get("name"), "arguments": json.dumps(call.get("args") or {})},
            }
            for offset, call in enumerate(self.calls)
        ]


# The keywords of Gemini's Schema object (generativelanguage v1beta); others are left out.
_SCHEMA_KEYWORDS = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
        "propertyOrdering",
        "default",
        "items",
        "minimum",
        "maximum",
    }
)


def gemini_schema(schema: Any, *, what: str) -> Any:
    """A JSON schema in the subset Gemini's Schema takes (see the module docstring)."""
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        raise InvalidRequest(f"{what}: Gemini takes no $ref in a schema; inline the definition", param=what)
    result: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in _SCHEMA_KEYWORDS:
            continue
        if key == "type" and isinstance(value, list):
            # ["string", "null"]: Gemini says nullable instead of a list of types.
            kinds = [kind for kind in value if kind != "null"]
            if len(kinds) != 1:
                raise InvalidRequest(f"{what}: Gemini takes one type per schema, not {value}", param=what)
            result["type"], result["nullable"] = kinds[0], "null" in value
        elif key == "properties" and isinstance(value, dict):
            result[key] = {name: gemini_schema(inner, what=what) for name, inner in value.items()}
        elif key == "items":
            result[key] = gemini_schema(value, what=what)
        elif key == "anyOf" and isinstance(value, list):
            result[key] = [gemini_schema(inner, what=what) for inner in value]
        else:
            result[key] = value
    return result


def _response_format(response_format: dict[str, Any] | None) -> dict[str, Any]:
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        spec = (response_format or {}).get("json_schema") or {}
        config: dict[str, Any] = {"responseMimeType": "application/json"}
        if spec.get("schema"):
            config["responseSchema"] = gemini_schema(spec["schema"], what="response_format")
        return config
    raise InvalidRequest(f"response_format type {kind!r} is not supported", param="response_format")


def _declaration(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type", "function") != "function" or not isinstance(tool.get("function"), dict):
        raise InvalidRequest("Gemini takes function tools only ({'type': 'function', 'function': {...}})")
    function = tool["function"]
    declaration: dict[str, Any] = {"name": function.get("name")}
    if function.get("description"):
        declaration["description"] = function["description"]
    parameters = function.get("parameters")
    # A function without parameters declares none (Gemini refuses an empty object schema).
    if parameters and parameters.get("properties"):
        declaration["parameters"] = gemini_schema(parameters, what="tools")
    return declaration


def _calling_config(choice: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if not name:
            raise InvalidRequest("tool_choice names no function: give {'type': 'function', 'function': {'name': ...}}")
        return {"mode": "ANY", "allowedFunctionNames": [name]}
    mode = {"auto": "AUTO", "required": "ANY", "none": "NONE"}.get(choice)
    if mode is None:
        raise InvalidRequest(f"tool_choice {choice!r} is not one of auto, required, none or a function")
    return {"mode": mode}


def _function_response(content: str) -> dict[str, Any]:
    """A tool's answer as the object Gemini wants: the JSON object itself, else wrapped."""
    try:
        parsed = json.loads(content)
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"content": content}


def _part(part: dict[str, Any]) -> dict[str, Any]:
    if part.get("type") == "tool_call":
        return {"functionCall": {"name": part["name"], "args": part["arguments"]}}
    if part.get("type") == "tool_result":
        if not part.get("name"):
            raise InvalidRequest(
                f"the tool turn answers call {part['id']!r}, which no earlier assistant turn made; "
                "Gemini needs the function's name",
                param="messages",
            )
        return {"functionResponse": {"name": part["name"], "response": _function_response(part["content"])}}
    if part.get("type") == "image_data":
        image = part["image_data"]
        return {"inlineData": {"mimeType": image["media_type"], "data": image["data"]}}
    if part.get("type") == "image_url":
        return {"fileData": {"fileUri": part["image_url"]["url"]}}
    return {"text": part["text"]}
