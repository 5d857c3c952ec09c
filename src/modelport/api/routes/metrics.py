"""GET /metrics: Prometheus metrics of the whole server (every worker).

No API key is needed, like the health checks, unless the operator sets
`MODELPORT_METRICS_KEY`: then a scrape must send it, as `Authorization: Bearer <key>`
(Prometheus' `authorization` setting) or `x-api-key`. The series carry no account or
model names: requests are labelled with the deployment's opaque id and the route
template, engines with their GGUF file. Still, they show every tenant's traffic: set a
key, or scrape from inside the cluster only."""

from __future__ import annotations

import asyncio
import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response

from modelport.errors import Unauthenticated
from modelport.observability import metrics

router = APIRouter(tags=["health"])


def _scrape_key(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("x-api-key")


def _require_metrics_key(request: Request) -> None:
    expected: str | None = request.app.state.settings.metrics_key
    if not expected:
        return
    given = _scrape_key(request)
    # compare_digest: the time taken does not tell how much of a guess was right.
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthenticated(
            "GET /metrics needs the metrics key (MODELPORT_METRICS_KEY) as a bearer token or x-api-key"
        )


@router.get("/metrics", response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    _require_metrics_key(request)
    pool = request.app.state.engine_pool
    if pool is not None:
        metrics.engines_seen(await pool.health())
    # Reading every worker's files is disk work: off the event loop.
    body, content_type = await asyncio.to_thread(metrics.exposition)
    return Response(body, media_type=content_type)
