"""Liveness and readiness, for load balancers and the CLI (no key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Request

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(request: Request) -> dict[str, object]:
    pool = request.app.state.engine_pool
    # A count, not file paths: this route needs no key, so it says nothing about the disk.
    return {"status": "ok", "embedded_models_loaded": len(pool.loaded()) if pool is not None else 0}
