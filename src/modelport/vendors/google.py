"""Google Gemini: `generateContent` and `streamGenerateContent?alt=sse`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from modelport.errors import UpstreamError
from modelport.generation import FinishReason, GenerationCall, GenerationChunk
from modelport.vendors.base import Capabilities, Embeddings, Target, in_batches
from modelport.vendors.turns import conversation
from modelport.vendors.upstream import (
    HttpVendor,
    api_key_for,
    configured_headers,
    join_url,
    json_request,
    read_json,
    sse_json,
    upstream_model,
)

GEMINI_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
EMBED_BATCH = 100  # batchEmbedContents takes at most 100 requests

CAPABILITIES = Capabilities(
    vendor="GOOGLE",
    parameters=frozenset({"top_p", "top_k", "stop_sequences", "frequency_penalty", "presence_penalty"}),
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

    def _request(self, target: Target, call: GenerationCall, *, stream: bool) -> tuple[httpx.Request, str | None]:
        model = upstream_model(target)
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
        }
        config.update({name: value for name, value in optional.items() if value is not None})
        body: dict[str, Any] = {
            "contents": [
                {"role": "model" if turn.role == "assistant" else "user", "parts": [_part(part) for part in turn.parts]}
                for turn in turns
            ],
            "generationConfig": config,
        }
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        body.update(target.parameters.get("extra_body") or {})
        api_key = api_key_for(target, "GOOGLE")
        headers = configured_headers(target)
        if api_key:
            headers["x-goog-api-key"] = api_key
        base_url = str(target.parameters.get("base_url") or GEMINI_BASE_URL)
        method = "streamGenerateContent" if stream else "generateContent"
        url = join_url(base_url, f"models/{model}:{method}")
        params = {"alt": "sse"} if stream else None
        return json_request(self._client, url, body, headers=headers, params=params), api_key

    async def complete(self, target: Target, call: GenerationCall) -> GenerationChunk:
        request, api_key = self._request(target, call, stream=False)
        response = await self._send(request, api_key)
        frame = _Frame(await read_json(response, vendor=self.vendor))
        return GenerationChunk(
            text=frame.text,
            finish_reason=frame.finish or "stop",
            prompt_tokens=frame.prompt_tokens,
            response_tokens=frame.response_tokens,
        )

    async def stream(self, target: Target, call: GenerationCall) -> AsyncIterator[GenerationChunk]:
        request, api_key = self._request(target, call, stream=True)
        response = await self._send(request, api_key)
        return self._chunks(response)

    async def _chunks(self, response: httpx.Response) -> AsyncIterator[GenerationChunk]:
        finish: FinishReason = "stop"
        prompt_tokens = response_tokens = None
        async for _event, payload in sse_json(response, vendor=self.vendor):
            if payload.get("error"):
                raise UpstreamError(f"GOOGLE failed mid-stream: {payload['error'].get('message', payload['error'])}")
            frame = _Frame(payload)
            if frame.text:
                yield GenerationChunk(text=frame.text)
            finish = frame.finish or finish
            prompt_tokens = frame.prompt_tokens if frame.prompt_tokens is not None else prompt_tokens
            response_tokens = frame.response_tokens if frame.response_tokens is not None else response_tokens
        yield GenerationChunk(finish_reason=finish, prompt_tokens=prompt_tokens, response_tokens=response_tokens)

    async def embed(self, target: Target, texts: list[str]) -> Embeddings:
        """`batchEmbedContents`, 100 texts a call; Gemini reports no token count."""
        model = upstream_model(target)
        api_key = api_key_for(target, "GOOGLE")
        headers = configured_headers(target)
        if api_key:
            headers["x-goog-api-key"] = api_key
        url = join_url(str(target.parameters.get("base_url") or GEMINI_BASE_URL), f"models/{model}:batchEmbedContents")
        vectors: list[list[float]] = []
        for batch in in_batches(texts, EMBED_BATCH):
            parts = [{"model": f"models/{model}", "content": {"parts": [{"text": text}]}} for text in batch]
            body = {"requests": parts}
            request = json_request(self._client, url, body, headers=headers)
            payload = await read_json(await self._send(request, api_key), vendor=self.vendor)
            found = payload.get("embeddings") or []
            if len(found) != len(batch) or not all(isinstance(item.get("values"), list) for item in found):
                raise UpstreamError(f"GOOGLE answered {len(found)} embeddings for {len(batch)} texts")
            vectors += [item["values"] for item in found]
        return Embeddings(vectors=vectors)


class _Frame:
    """One GenerateContentResponse: the text, finish reason and usage it carries."""

    def __init__(self, payload: dict[str, Any]) -> None:
        candidates = payload.get("candidates") or []
        self.finish: FinishReason | None = None
        self.text = ""
        if not candidates and (payload.get("promptFeedback") or {}).get("blockReason"):
            self.finish = "content_filter"  # the prompt itself was blocked: no candidates
        elif candidates:
            candidate = candidates[0]
            parts = (candidate.get("content") or {}).get("parts") or []
            # "thought" parts are the model's reasoning, not its answer.
            self.text = "".join(part.get("text", "") for part in parts if not part.get("thought"))
            reason = candidate.get("finishReason")
            if reason:
                self.finish = FINISH_REASONS.get(str(reason), "stop")
        usage = payload.get("usageMetadata") or {}
        self.prompt_tokens: int | None = usage.get("promptTokenCount")
        candidates_tokens = usage.get("candidatesTokenCount")
        thoughts = usage.get("thoughtsTokenCount") or 0
        self.response_tokens: int | None = None if candidates_tokens is None else candidates_tokens + thoughts


def _part(part: dict[str, Any]) -> dict[str, Any]:
    if part.get("type") == "image_data":
        image = part["image_data"]
        return {"inlineData": {"mimeType": image["media_type"], "data": image["data"]}}
    if part.get("type") == "image_url":
        return {"fileData": {"fileUri": part["image_url"]["url"]}}
    return {"text": part["text"]}
