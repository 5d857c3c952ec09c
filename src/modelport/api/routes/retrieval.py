"""POST /v4/models/{model_deployment_id}/embeddings and /rerankings (SPEC 3.5, 3.6)."""

from __future__ import annotations

from fastapi import APIRouter

from modelport.api.deps import CurrentPrincipal, Service
from modelport.schemas.retrieval import EmbeddingRequest, EmbeddingResponse, RerankingRequest, RerankingResponse

router = APIRouter(tags=["inference"])


@router.post("/v4/models/{model_deployment_id}/embeddings", response_model=EmbeddingResponse)
async def embeddings(
    model_deployment_id: str, body: EmbeddingRequest, principal: CurrentPrincipal, service: Service
) -> EmbeddingResponse:
    return await service.embed(principal, model_deployment_id, body)


@router.post("/v4/models/{model_deployment_id}/rerankings", response_model=RerankingResponse)
async def rerankings(
    model_deployment_id: str, body: RerankingRequest, principal: CurrentPrincipal, service: Service
) -> RerankingResponse:
    return await service.rerank(principal, model_deployment_id, body)
