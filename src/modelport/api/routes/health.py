"""Liveness and readiness, for load balancers, Kubernetes probes and the CLI (no key
needed).

- `/health/live`: the process answers (a liveness probe: restart it when this fails).
- `/health/ready`: the database answers and every embedded engine is ready, and the
  server is not shutting down; 503 with the reasons otherwise (a readiness probe: send
  it no traffic meanwhile).
- `/health`: always 200 while the gateway answers, with the engines' state (kept for
  the scripts and monitors that read it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from modelport.observability.shutdown import gate
from modelport.store import db

router = APIRouter(tags=["health"])

DATABASE_TIMEOUT_SECONDS = 2.0


@router.get("/health")
async def health(request: Request) -> dict[str, object]:
    """Always 200 while the gateway answers; `status` is "degraded" when an embedded
    engine is restarting or has failed, and `embedded_engines` says which and why."""
    engines = await _engines(request)
    return {
        "status": "ok" if all(engine["state"] == "ready" for engine in engines) else "degraded",
        "embedded_models_loaded": sum(1 for engine in engines if engine["state"] == "ready"),
        "embedded_engines": engines,
    }


@router.get("/health/live")
async def live() -> dict[str, str]:
    """200 while the process serves requests."""
    return {"status": "ok"}


@router.get("/health/ready", responses={503: {"description": "Not ready; `reasons` says why"}})
async def ready(request: Request) -> JSONResponse:
    """200 when the database answers and every embedded engine is ready; else 503."""
    reasons: list[str] = []
    if gate.draining:
        reasons.append("the server is shutting down")
    try:
        await asyncio.wait_for(db.read_generation(request.app.state.db_engine), DATABASE_TIMEOUT_SECONDS)
    except TimeoutError:
        reasons.append(f"the database did not answer within {DATABASE_TIMEOUT_SECONDS:g} s")
    except Exception as exc:  # any driver error means the same thing here: not ready
        reasons.append(f"the database cannot be reached: {type(exc).__name__}")
    engines = await _engines(request)
    for engine in engines:
        if engine["state"] != "ready":
            why = f": {engine['reason']}" if engine.get("reason") else ""
            reasons.append(f"embedded engine {engine['model'] or '?'} is {engine['state']}{why}")
    body: dict[str, Any] = {"status": "ready" if not reasons else "not ready", "reasons": reasons}
    return JSONResponse(body, status_code=200 if not reasons else 503)


async def _engines(request: Request) -> list[dict[str, Any]]:
    pool = request.app.state.engine_pool
    return await pool.health() if pool is not None else []
