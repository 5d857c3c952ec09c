"""POST /v4/models/{model_deployment_id}/embeddings and /rerankings (SPEC 3.5, 3.6)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from modelport.api.answers import cost_header
from modelport.api.deps import CurrentPrincipal, Service
from modelport.schemas.retrieval import EmbeddingRequest, EmbeddingResponse, RerankingRequest, RerankingResponse

router = APIRouter(tags=["inference"])


@router.post("/v4/models/{model_deployment_id}/embeddings", response_model=EmbeddingResponse)
async def embeddings(
    model_deployment_id: str, body: EmbeddingRequest, principal: CurrentPrincipal, service: Service
) -> Response:
    read = await service.embed(principal, model_deployment_id, body)
    return Response(read.answer.model_dump_json(), media_type="application/json", headers=cost_header(read.cost))


@router.post("/v4/models/{model_deployment_id}/rerankings", response_model=RerankingResponse)
async def rerankings(
    model_deployment_id: str, body: RerankingRequest, principal: CurrentPrincipal, service: Service
) -> Response:
    read = await service.rerank(principal, model_deployment_id, body)
    return Response(read.answer.model_dump_json(), media_type="application/json", headers=cost_header(read.cost))
