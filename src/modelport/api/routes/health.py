"""Liveness and readiness, for load balancers, Kubernetes probes and the CLI (no key
needed).

- `/health/live`: the process answers (a liveness probe: restart it when this fails).
- `/health/ready`: the database answers, the server is not shutting down, and the
  embedded engines the operator marks required (`MODELPORT_READY_REQUIRES_ENGINES`:
  deployment ids or model names; none by default) are ready; 503 with the reasons
  otherwise (a readiness probe: send it no traffic meanwhile). Other engines never
  count: one tenant's broken or crashing model must not take every vendor route of
  the gateway out of a load balancer. `/health` shows them all.
  A Redis for the limits that cannot be reached is named under `warnings` (still 200:
  see `ready`).
- `/health`: always 200 while the gateway answers, with the engines' state (kept for
  the scripts and monitors that read it).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import or_, select

from modelport.observability.shutdown import gate
from modelport.store import db
from modelport.store.tables import Deployment, Model

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
    """200 when the database answers and the required embedded engines are ready; else 503."""
    reasons: list[str] = []
    if gate.draining:
        reasons.append("the server is shutting down")
    try:
        await asyncio.wait_for(db.read_generation(request.app.state.db_engine), DATABASE_TIMEOUT_SECONDS)
    except TimeoutError:
        reasons.append(f"the database did not answer within {DATABASE_TIMEOUT_SECONDS:g} s")
    except Exception as exc:  # any driver error means the same thing here: not ready
        reasons.append(f"the database cannot be reached: {type(exc).__name__}")
    else:
        required: list[str] = request.app.state.settings.ready_requires_engines
        if required:
            reasons += await _required_engines_not_ready(request, required)
    body: dict[str, Any] = {"status": "ready" if not reasons else "not ready", "reasons": reasons}
    limits = request.app.state.limits
    problem = await limits.problem() if limits is not None else None
    if problem:
        # Shown, not a reason: every replica shares the one Redis, so failing readiness
        # for it would take the whole gateway out of the load balancer, while requests
        # without a fail-closed limit are still served.
        body["warnings"] = [problem]
    return JSONResponse(body, status_code=200 if not reasons else 503)


async def _required_engines_not_ready(request: Request, required: list[str]) -> list[str]:
    """Why the engines of the required deployments (named by id or by model name) are not ready."""
    query = (
        select(Deployment.id, Model.name)
        .join(Model, Model.id == Deployment.model_id)
        .where(or_(Deployment.id.in_(required), Model.name.in_(required)))
    )
    async with request.app.state.sessions() as session:
        found = (await asyncio.wait_for(session.execute(query), DATABASE_TIMEOUT_SECONDS)).all()
    pool = request.app.state.engine_pool
    try:
        engines = await pool.status() if pool is not None else []
    except (OSError, TimeoutError) as exc:
        return [f"the engine supervisor did not answer: {exc}"]
    serving = {deployment: engine for engine in engines for deployment in engine.get("deployments", [])}
    reasons = []
    for reference in required:
        deployments = [deployment for deployment, model in found if reference in (deployment, model)]
        if not deployments:
            reasons.append(f"required engine {reference} (MODELPORT_READY_REQUIRES_ENGINES) names no deployment")
        for deployment in deployments:
            engine = serving.get(deployment)
            if engine is None:
                reasons.append(f"required deployment {deployment} has no embedded engine loaded")
            elif engine["state"] != "ready":
                path = str(engine.get("model", ""))
                why = f": {str(engine['reason']).replace(path, Path(path).name)}" if engine.get("reason") else ""
                reasons.append(f"required embedded engine {Path(path).name} is {engine['state']}{why}")
    return reasons


async def _engines(request: Request) -> list[dict[str, Any]]:
    pool = request.app.state.engine_pool
    return await pool.health() if pool is not None else []
