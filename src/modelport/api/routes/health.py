"""Liveness and readiness, for load balancers and the CLI (no key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Request

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(request: Request) -> dict[str, object]:
    """Always 200 while the gateway answers; `status` is "degraded" when an embedded
    engine is restarting or has failed, and `embedded_engines` says which and why."""
    pool = request.app.state.engine_pool
    engines = await pool.health() if pool is not None else []
    return {
        "status": "ok" if all(engine["state"] == "ready" for engine in engines) else "degraded",
        "embedded_models_loaded": sum(1 for engine in engines if engine["state"] == "ready"),
        "embedded_engines": engines,
    }
