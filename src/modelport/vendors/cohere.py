"""Cohere's v2 API: `/v2/embed`, `/v2/rerank`, and `/v2/chat` (streaming and not).

Cohere is where most teams get reranking. Its rerank answers best first, each result
with the `index` of its document; embed answers `embeddings.float` in input order,
at most 96 texts a request, so larger inputs are split and joined back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from modelport.errors import InvalidRequest, UpstreamError
from modelport.generation import FinishReason, GenerationCall, GenerationChunk
from modelport.vendors.base import Capabilities, Embeddings, Scores, Target, in_batches
from modelport.vendors.http_vendor import EventParser, HttpVendor, Outgoing
from modelport.vendors.retrieval_wire import ordered, query_with_instruction
from modelport.vendors.settings import CohereSettings
from modelport.vendors.upstream import join_url, upstream_model

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

    def _post(self, target: Target, path: str, body: dict[str, Any]) -> Outgoing:
        base_url, _ = _settings(target)
        return self.post(target, join_url(base_url, path), body)

    # --- embed and rerank ----------------------------------------------------------------

    async def embed(self, target: Target, texts: list[str]) -> Embeddings:
        _, input_type = _settings(target)
        vectors: list[list[float]] = []
        tokens: int | None = None
        for batch in in_batches(texts, EMBED_BATCH):
            body = {"model": upstream_model(target), "texts": batch, "input_type": input_type,
                    "embedding_types": ["float"]}  # fmt: skip
            payload = await self.answer_of(self._post(target, "v2/embed", body))
            found = (payload.get("embeddings") or {}).get("float")
            if not isinstance(found, list) or len(found) != len(batch):
                raise UpstreamError(f"COHERE answered {len(found or [])} float embeddings for {len(batch)} texts")
            vectors += found
            used = _input_tokens(payload.get("meta"))
            if used is not None:
                tokens = (tokens or 0) + used
        return Embeddings(vectors=vectors, tokens=tokens)

    async def rerank(self, target: Target, query: str, chunks: list[str], instruction: str | None) -> Scores:
        body = {"model": upstream_model(target), "query": query_with_instruction(query, instruction),
                "documents": chunks, "top_n": len(chunks)}  # fmt: skip
        payload = await self.answer_of(self._post(target, "v2/rerank", body))
        results = ordered(list(payload.get("results") or []), len(chunks), vendor=self.vendor, what="rerank results")
        return Scores(
            scores=[float(result["relevance_score"]) for result in results], tokens=_input_tokens(payload.get("meta"))
        )

    # --- chat ------------------------------------------------------------------------------

    async def build_request(self, target: Target, call: GenerationCall, *, stream: bool) -> Outgoing:
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

    def parse_answer(self, payload: Any, call: GenerationCall, sent: Outgoing) -> GenerationChunk:
        content = (payload.get("message") or {}).get("content") or []
        prompt_tokens, response_tokens = _usage(payload.get("usage"))
        return GenerationChunk(
            text="".join(part.get("text", "") for part in content if part.get("type") == "text"),
            finish_reason=FINISH_REASONS.get(str(payload.get("finish_reason")), "stop"),
            prompt_tokens=prompt_tokens,
            response_tokens=response_tokens,
        )

    def event_parser(self, call: GenerationCall, sent: Outgoing) -> EventParser:
        return _Events()


class _Events(EventParser):
    def parse(self, name: str, payload: Any) -> Iterator[GenerationChunk]:
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
            self.finish = FINISH_REASONS.get(reason, "stop")
            self.prompt_tokens, self.response_tokens = _usage(delta.get("usage"))


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
