"""Embeddings and rerankings on the OpenAI-compatible wire (SPEC 3.5, 3.6).

`POST {base_url}/embeddings` is OpenAI's own shape, which vLLM, llama.cpp and LLM
Engine (`protocol: openai`) speak too; `POST {base_url}/rerank` is the
`{model, query, documents, top_n}` -> `{results: [{index, relevance_score}]}` shape
that vLLM, llama.cpp's server, Jina and Cohere's v1 share.

Answers are put back in the caller's order by each item's `index`, never by
position: a server may answer in any order, and rerankers answer best first.
"""

from __future__ import annotations

import math
from typing import Any

from modelport.errors import InvalidRequest, UpstreamError
from modelport.vendors.base import EmbeddingInput, Embeddings, Scores, Target, in_batches
from modelport.vendors.http_vendor import HttpVendor
from modelport.vendors.upstream import join_url, upstream_model

# OpenAI takes at most 2,048 inputs per embeddings request.
OPENAI_EMBED_BATCH = 2048


def mean_pooled(vectors: list[list[float]]) -> list[float]:
    """One unit vector for a text from one vector per token.

    llama.cpp's server, started with `--embedding` on a model that declares no pooling
    (a decoder such as SmolLM2), answers a vector for every token of every input.
    modelport averages them and scales the mean to length 1, the way sentence
    embedding models pool (and what the embedded engine does with such a model), so
    that a caller always gets one vector per text.
    """
    if not vectors:
        raise UpstreamError("the upstream answered an empty list of token vectors for a text")
    width = len(vectors[0])
    mean = [sum(vector[i] for vector in vectors) / len(vectors) for i in range(width)]
    return unit(mean)


def unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(value * value for value in vector))
    return [value / norm for value in vector] if norm > 0 else vector


def ordered(items: list[dict[str, Any]], count: int, *, vendor: str, what: str) -> list[Any]:
    """Items put at their `index`; every index from 0 to count - 1 exactly once."""
    placed: list[Any] = [None] * count
    for item in items:
        index = item.get("index")
        if not isinstance(index, int) or not 0 <= index < count or placed[index] is not None:
            raise UpstreamError(f"{vendor} answered {what} with an index out of place: {index!r}")
        placed[index] = item
    if any(item is None for item in placed):
        raise UpstreamError(f"{vendor} answered {sum(i is None for i in placed)} {what} short of the {count} asked")
    return placed


def query_with_instruction(query: str, instruction: str | None) -> str:
    """For a rerank API with no field for it (Cohere's): the instruction goes before the
    query, on a line of its own, which is how instruction-aware rerankers read it."""
    return f"{instruction}\n{query}" if instruction else query


class OpenAIRetrieval(HttpVendor):
    """`embed` and `rerank` for the OpenAI adapter (mixed into `OpenAICompatible`)."""

    def _base_url(self, target: Target) -> str:
        raise NotImplementedError

    async def embed(self, target: Target, texts: list[str]) -> Embeddings:
        return await self._embed_all(target, [*texts], None)

    async def embed_input(self, target: Target, given: EmbeddingInput) -> Embeddings:
        """Token-id inputs pass through as OpenAI takes them (the upstream model's own
        ids); `dimensions` to OpenAI, and to a compatible server whose settings say it
        takes it (`embedding_dimensions`), else 400."""
        if given.dimensions is not None and not (
            self.vendor == "OPENAI" or getattr(target.settings, "embedding_dimensions", None)
        ):
            raise InvalidRequest(
                f"{self.vendor} deployment {target.deployment_id} takes no `dimensions`; set the model's "
                "`embedding_dimensions` if its server shortens vectors",
                param="dimensions",
            )
        inputs: list[str | list[int]] = [*given.token_ids] if given.token_ids is not None else [*(given.texts or [])]
        return await self._embed_all(target, inputs, given.dimensions)

    async def _embed_all(self, target: Target, inputs: list[str | list[int]], dimensions: int | None) -> Embeddings:
        vectors: list[list[float]] = []
        tokens: int | None = None
        for batch in in_batches(inputs, OPENAI_EMBED_BATCH):
            batch_vectors, batch_tokens = await self._embed_batch(target, batch, dimensions)
            vectors += batch_vectors
            if batch_tokens is not None:
                tokens = (tokens or 0) + batch_tokens
        return Embeddings(vectors=vectors, tokens=tokens)

    async def _embed_batch(
        self, target: Target, texts: list[str | list[int]], dimensions: int | None = None
    ) -> tuple[list[list[float]], int | None]:
        body: dict[str, Any] = {"model": upstream_model(target), "input": texts, "encoding_format": "float"}
        if dimensions is not None:
            body["dimensions"] = dimensions
        payload = await self.answer_of(self.post(target, join_url(self._base_url(target), "embeddings"), body))
        items = ordered(list(payload.get("data") or []), len(texts), vendor=self.vendor, what="embeddings")
        embeddings = [item.get("embedding") for item in items]
        if not all(isinstance(embedding, list) and embedding for embedding in embeddings):
            raise UpstreamError(f"{self.vendor} answered an embedding that is not a list of numbers")
        per_token = isinstance(embeddings[0][0], list)
        if per_token and len(texts) > 1:
            # llama-cpp-python's server places the token vectors of every input after the
            # first wrongly in a batched per-token answer (it offsets by tokens, not by
            # floats), so each text is asked again on its own.
            vectors: list[list[float]] = []
            tokens: int | None = None
            for text in texts:
                [vector], used = await self._embed_batch(target, [text], dimensions)
                vectors.append(vector)
                tokens = tokens if used is None else (tokens or 0) + used
            return vectors, tokens
        vectors = [mean_pooled(embedding) if per_token else embedding for embedding in embeddings]
        usage = payload.get("usage") or {}
        return vectors, usage.get("prompt_tokens", usage.get("total_tokens"))

    async def rerank(self, target: Target, query: str, chunks: list[str], instruction: str | None) -> Scores:
        body: dict[str, Any] = {"model": upstream_model(target), "query": query, "documents": chunks,
                                "top_n": len(chunks)}  # fmt: skip
        if instruction:
            # vLLM's instruction-aware rerankers (Qwen3-Reranker) read it; others ignore it.
            body["instruction"] = instruction
        payload = await self.answer_of(self.post(target, join_url(self._base_url(target), "rerank"), body))
        return rerank_scores(payload, len(chunks), vendor=self.vendor)


def rerank_scores(payload: dict[str, Any], count: int, *, vendor: str) -> Scores:
    """`{results: [{index, relevance_score}], usage?}` -> scores in the chunks' order."""
    results = ordered(list(payload.get("results") or []), count, vendor=vendor, what="rerank results")
    scores = [float(result["relevance_score"]) for result in results]
    usage = payload.get("usage") or {}
    tokens = usage.get("prompt_tokens", usage.get("total_tokens"))
    return Scores(scores=scores, tokens=int(tokens) if isinstance(tokens, int) else None)
