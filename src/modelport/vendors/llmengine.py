"""LLM Engine deployments served elsewhere (`model_creation_parameters.base_url`).

`protocol: "openai"` (the default) is the OpenAI-compatible API of vLLM and LLM
Engine v2, spoken by the OpenAI adapter with vLLM's extras passed through.
"""

from __future__ import annotations

from typing import Any

from modelport.errors import InvalidRequest
from modelport.generation import GenerationCall, GenerationChunk
from modelport.vendors.base import (
    Capabilities,
    ChunkStream,
    Embedder,
    EmbeddingInput,
    Embeddings,
    InputEmbedder,
    RelayedEvents,
    Reranker,
    ResponsesRelay,
    Scores,
    Target,
    Vendor,
)
from modelport.vendors.settings import LLMEngineSettings

PROTOCOLS = ("openai", "llmengine-v1")


class LLMEngineVendor:
    def __init__(self, by_protocol: dict[str, Vendor]) -> None:
        self._by_protocol = by_protocol

    def _for(self, target: Target) -> Vendor:
        protocol = target.settings.protocol if isinstance(target.settings, LLMEngineSettings) else "openai"
        vendor = self._by_protocol.get(protocol)
        if vendor is None:
            supported = ", ".join(sorted(self._by_protocol))
            raise InvalidRequest(
                f"deployment {target.deployment_id} asks for LLM Engine protocol {protocol!r}; "
                f"this server speaks {supported}"
            )
        return vendor

    def capabilities(self, target: Target) -> Capabilities:
        return self._for(target).capabilities(target)

    async def complete(self, target: Target, call: GenerationCall) -> GenerationChunk:
        return await self._for(target).complete(target, call)

    async def stream(self, target: Target, call: GenerationCall) -> ChunkStream:
        return await self._for(target).stream(target, call)

    async def embed(self, target: Target, texts: list[str]) -> Embeddings:
        vendor = self._for(target)
        if not isinstance(vendor, Embedder):
            raise InvalidRequest(f"LLM Engine protocol {target.parameters.get('protocol')!r} cannot embed texts")
        return await vendor.embed(target, texts)

    async def embed_input(self, target: Target, given: EmbeddingInput) -> Embeddings:
        vendor = self._for(target)
        if not isinstance(vendor, InputEmbedder):
            protocol = target.parameters.get("protocol")
            raise InvalidRequest(f"LLM Engine protocol {protocol!r} takes no token ids nor `dimensions`", param="input")
        return await vendor.embed_input(target, given)

    def relays_responses(self, target: Target) -> bool:
        vendor = self._for(target)
        return isinstance(vendor, ResponsesRelay) and vendor.relays_responses(target)

    async def relay_whole(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        vendor = self._for(target)
        assert isinstance(vendor, ResponsesRelay), "asked only when relays_responses said so"
        return await vendor.relay_whole(target, body)

    async def relay_stream(self, target: Target, body: dict[str, Any]) -> RelayedEvents:
        vendor = self._for(target)
        assert isinstance(vendor, ResponsesRelay), "asked only when relays_responses said so"
        return await vendor.relay_stream(target, body)

    async def rerank(self, target: Target, query: str, chunks: list[str], instruction: str | None) -> Scores:
        vendor = self._for(target)
        if not isinstance(vendor, Reranker):
            raise InvalidRequest(f"LLM Engine protocol {target.parameters.get('protocol')!r} cannot rerank")
        return await vendor.rerank(target, query, chunks, instruction)

    async def aclose(self) -> None:
        for vendor in self._by_protocol.values():
            await vendor.aclose()
