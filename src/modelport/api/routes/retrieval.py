"""POST /v4/models/{model_deployment_id}/embeddings and /rerankings (SPEC 3.5, 3.6)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from modelport.api.answers import cost_header
from modelport.api.deps import CurrentPrincipal, Service, parse_body
from modelport.api.openapi_bodies import declared_body
from modelport.schemas.retrieval import EmbeddingRequest, EmbeddingResponse, RerankingRequest, RerankingResponse

router = APIRouter(tags=["inference"])

# The bodies are parsed by hand (`parse_body`, on the hot path: api/hot_path.py) and
# declared to OpenAPI under the names FastAPI gave them.


@router.post(
    "/v4/models/{model_deployment_id}/embeddings",
    response_model=EmbeddingResponse,
    openapi_extra=declared_body(EmbeddingRequest, ""),
)
async def embeddings(
    model_deployment_id: str, request: Request, principal: CurrentPrincipal, service: Service
) -> Response:
    body = await parse_body(request, EmbeddingRequest)
    read = await service.embed(principal, model_deployment_id, body)
    return Response(read.answer.model_dump_json(), media_type="application/json", headers=cost_header(read.cost))


@router.post(
    "/v4/models/{model_deployment_id}/rerankings",
    response_model=RerankingResponse,
    openapi_extra=declared_body(RerankingRequest, ""),
)
async def rerankings(
    model_deployment_id: str, request: Request, principal: CurrentPrincipal, service: Service
) -> Response:
    body = await parse_body(request, RerankingRequest)
    read = await service.rerank(principal, model_deployment_id, body)
    return Response(read.answer.model_dump_json(), media_type="application/json", headers=cost_header(read.cost))
