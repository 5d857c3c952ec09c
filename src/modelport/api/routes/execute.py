"""POST /v4/models/{model_instance_id}/deployments/{deployment_id}/execute (the SGP SDK's
`models.deployments.execute`): a GENERIC model's deployment run by forwarding the JSON
body to its upstream (`InferenceService.execute`) and answering the upstream's JSON."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body
from fastapi.responses import Response

from modelport.api.answers import cost_header
from modelport.api.deps import CatalogueDep, CurrentPrincipal, Service
from modelport.errors import InvalidRequest
from modelport.schemas.json_value import JsonObject

router = APIRouter(tags=["inference"])


@router.post("/v4/models/{model_instance_id}/deployments/{deployment_id}/execute", response_model=Any)
async def execute_deployment(
    model_instance_id: str,
    deployment_id: str,
    body: Annotated[JsonObject, Body()],
    principal: CurrentPrincipal,
    catalogue: CatalogueDep,
    service: Service,
) -> Response:
    # The deployment must be the named model's (404 otherwise, as its GET answers).
    await catalogue.deployments.get(principal, model_instance_id, deployment_id)
    if body.get("stream") is True:
        # The upstream's answer is read whole, as JSON: a stream could not be passed on.
        raise InvalidRequest("execute answers whole: stream must be false or absent", param="stream")
    answer = await service.execute(principal, deployment_id, body)
    return Response(orjson.dumps(answer.answer), media_type="application/json", headers=cost_header(answer.cost))
