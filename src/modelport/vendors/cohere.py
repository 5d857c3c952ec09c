"""Cohere's v2 API: `/v2/embed`, `/v2/rerank`, and `/v2/chat` (streaming and not).

Cohere is where most teams get reranking. Its rerank answers best first, each result
with the `index` of its document; embed answers `embeddings.float` in input order,
at most 96 texts a request, so larger inputs are split and joined back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from modelport.errors import InvalidRequest, UpstreamError
from modelport.generation import FinishReason, GenerationCall, GenerationChunk
from modelport.vendors.base import Capabilities, Embeddings, Scores, Target, in_batches
from modelport.vendors.retrieval_wire import ordered, refuse_instruction
from modelport.vendors.settings import CohereSettings
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

COHERE_BASE_URL = "https://api.cohere.com"
EMBED_BATCH = 96  # Cohere's documented maximum of texts per /v2/embed call
# v3 and later embedding models require an input type; documents are the common case.
DEFAULT_INPUT_TYPE = "search_document"

CAPABILITIES = Capabilities(
    vendor="COHERE",
    parameters=frozenset({"top_p", "top_k", "frequency_penalty", "presence_penalty", "stop_sequences"}),
    max_temperature=1.0,
)

FINISH_REASONS: dict[str, FinishReason] = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "TOOL_CALL": "stop",
    "MAX_TOKENS": "length",
}


def _settings(target: Target) -> tuple[str, str]:
    """(base URL, input type): what this adapter reads from the deployment's settings."""
    settings = target.settings
    base_url = settings.base_url or COHERE_BASE_URL
    input_type = (settings.input_type if isinstance(settings, CohereSettings) else None) or DEFAULT_INPUT_TYPE
    return base_url, input_type


class CohereVendor(HttpVendor):
    vendor = "COHERE"

    def capabilities(self, target: Target) -> Capabilities:
        return CAPABILITIES

    def _post(self, target: Target, path: str, body: dict[str, Any]) -> tuple[httpx.Request, str | None]:
        api_key = api_key_for(target, self.vendor)
        headers = configured_headers(target)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        base_url, _ = _settings(target)
        return json_request(self._client, join_url(base_url, path), body, headers=headers), api_key

    # --- embed and rerank ----------------------------------------------------------------

    async def embed(self, target: Target, texts: list[str]) -> Embeddings:
        _, input_type = _settings(target)
        vectors: list[list[float]] = []
        tokens: int | None = None
        for batch in in_batches(texts, EMBED_BATCH):
            body = {"model": upstream_model(target), "texts": batch, "input_type": input_type,
                    "embedding_types": ["float"]}  # fmt: skip
            request, api_key = self._post(target, "v2/embed", body)
            payload = await read_json(await self._send(request, api_key), vendor=self.vendor)
            found = (payload.get("embeddings") or {}).get("float")
            if not isinstance(found, list) or len(found) != len(batch):
                raise UpstreamError(f"COHERE answered {len(found or [])} float embeddings for {len(batch)} texts")
            vectors += found
            used = _input_tokens(payload.get("meta"))
            if used is not None:
                tokens = (tokens or 0) + used
        return Embeddings(vectors=vectors, tokens=tokens)

    async def rerank(self, target: Target, query: str, chunks: list[str], instruction: str | None) -> Scores:
        refuse_instruction(instruction, self.vendor)
        body = {"model": upstream_model(target), "query": query, "documents": chunks, "top_n": len(chunks)}
        request, api_key = self._post(target, "v2/rerank", body)
        payload = await read_json(await self._send(request, api_key), vendor=self.vendor)
        results = ordered(list(payload.get("results") or []), len(chunks), vendor=self.vendor, what="rerank results")
        return Scores(
            scores=[float(result["relevance_score"]) for result in results], tokens=_input_tokens(payload.get("meta"))
        )

    # --- chat ------------------------------------------------------------------------------

    def _chat(self, target: Target, call: GenerationCall, *, stream: bool) -> tuple[httpx.Request, str | None]:
        if target.model_type not in ("CHAT_COMPLETION", "COMPLETION"):
            raise InvalidRequest(f"a COHERE {target.model_type} model does not generate text")
        sampling = call.sampling
        messages = list(call.messages) if call.messages is not None else [{"role": "user", "content": call.prompt}]
        body: dict[str, Any] = {
            "model": upstream_model(target),
            "messages": [_message(message) for message in messages],
            "stream": stream,
            "temperature": sampling.temperature,
        }
        optional = {
            "max_tokens": sampling.max_tokens,
            "p": sampling.top_p,
            "k": sampling.top_k,
            "frequency_penalty": sampling.frequency_penalty,
            "presence_penalty": sampling.presence_penalty,
            "stop_sequences": list(sampling.stop_sequences) or None,
        }
        body.update({name: value for name, value in optional.items() if value is not None})
        body.update(target.settings.extra_body or {})
        return self._post(target, "v2/chat", body)

    async def complete(self, target: Target, call: GenerationCall) -> GenerationChunk:
        request, api_key = self._chat(target, call, stream=False)
        payload = await read_json(await self._send(request, api_key), vendor=self.vendor)
        content = (payload.get("message") or {}).get("content") or []
        prompt_tokens, response_tokens = _usage(payload.get("usage"))
        return GenerationChunk(
            text="".join(part.get("text", "") for part in content if part.get("type") == "text"),
            finish_reason=FINISH_REASONS.get(str(payload.get("finish_reason")), "stop"),
            prompt_tokens=prompt_tokens,
            response_tokens=response_tokens,
        )

    async def stream(self, target: Target, call: GenerationCall) -> AsyncIterator[GenerationChunk]:
        request, api_key = self._chat(target, call, stream=True)
        return self._chunks(await self._send(request, api_key))

    async def _chunks(self, response: httpx.Response) -> AsyncIterator[GenerationChunk]:
        finish: FinishReason = "stop"
        prompt_tokens = response_tokens = None
        async for _event, payload in sse_json(response, vendor=self.vendor):
            kind = payload.get("type")
            delta = payload.get("delta") or {}
            if kind == "content-delta":
                text = ((delta.get("message") or {}).get("content") or {}).get("text")
                if text:
                    yield GenerationChunk(text=text)
            elif kind == "message-end":
                reason = str(delta.get("finish_reason"))
                if reason in ("ERROR", "TIMEOUT"):
                    raise UpstreamError(f"COHERE ended the stream with {reason}: {delta.get('error', '')}")
                finish = FINISH_REASONS.get(reason, "stop")
                prompt_tokens, response_tokens = _usage(delta.get("usage"))
        yield GenerationChunk(finish_reason=finish, prompt_tokens=prompt_tokens, response_tokens=response_tokens)


def _message(message: dict[str, Any]) -> dict[str, Any]:
    content = message["content"]
    if isinstance(content, list):  # text parts only: the service refuses images for Cohere
        content = [{"type": "text", "text": part["text"]} for part in content if part.get("type") == "text"]
    return {"role": message["role"], "content": content}


def _usage(usage: Any) -> tuple[int | None, int | None]:
    """Cohere reports `tokens` (what the model read and wrote) and `billed_units`."""
    if not isinstance(usage, dict):
        return None, None
    tokens = usage.get("tokens") or usage.get("billed_units") or {}
    return tokens.get("input_tokens"), tokens.get("output_tokens")


def _input_tokens(meta: Any) -> int | None:
    if not isinstance(meta, dict):
        return None
    counted = (meta.get("tokens") or meta.get("billed_units") or {}).get("input_tokens")
    return int(counted) if isinstance(counted, int | float) else None
