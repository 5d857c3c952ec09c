"""GET /metrics: Prometheus metrics of the whole server (every worker), no key needed,
like the health checks: scrape it from inside the cluster, do not publish it."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from modelport.observability import metrics

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    pool = request.app.state.engine_pool
    if pool is not None:
        metrics.engines_seen(await pool.health())
    # Reading every worker's files is disk work: off the event loop.
    body, content_type = await asyncio.to_thread(metrics.exposition)
    return Response(body, media_type=content_type)
