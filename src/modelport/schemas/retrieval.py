"""Wire models of the embeddings and rerankings endpoints (SPEC.md 3.5, 3.6). No I/O here.

The responses mirror the SDK's `EmbeddingResponse` and `RerankingResponse` exactly.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from modelport.schemas.inference import ParameterBindings

MAX_TEXTS = 2048  # SPEC 3.5: 1 to 2,048 texts a request
MAX_CHUNKS = 10_000  # far above any reranker's own limit; bounds the work of one request

NonEmptyText = Annotated[str, StringConstraints(min_length=1)]
# One input as token ids of the model's own vocabulary (OpenAI's `input` may be these).
# Its length is bounded as a text's is: by the body's size (`max_body_bytes`) and the
# model's own limit per input.
TokenIds = Annotated[list[Annotated[int, Field(ge=0, le=2**31 - 1)]], Field(min_length=1)]
# The widest vector a caller may ask for; OpenAI's widest model has 3,072 dimensions.
MAX_DIMENSIONS = 65_536


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class EmbeddingRequest(_Strict):
    texts: list[NonEmptyText] = Field(min_length=1, max_length=MAX_TEXTS)
    model_request_parameters: ParameterBindings | None = None


class TokenEmbeddingRequest(_Strict):
    """Embeddings of token-id inputs, for `/v1/embeddings` only: the v4 body takes texts
    (SPEC 3.5). Read as the model's own token ids: passed through to OpenAI-compatible
    upstreams, embedded as they are by the embedded engine."""

    token_ids: list[TokenIds] = Field(min_length=1, max_length=MAX_TEXTS)
    model_request_parameters: ParameterBindings | None = None


class EmbeddingResponse(BaseModel):
    embeddings: list[list[float]]
    tokens_used: int | None = None


class RerankingRequest(_Strict):
    query: NonEmptyText
    chunks: list[NonEmptyText] = Field(min_length=1, max_length=MAX_CHUNKS)
    instruction: str | None = None
    model_request_parameters: ParameterBindings | None = None


class RerankingResponse(BaseModel):
    chunk_scores: list[float]
    tokens_used: int | None = None
