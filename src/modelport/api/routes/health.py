"""Liveness and readiness, for load balancers and the CLI (no key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Request

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(request: Request) -> dict[str, object]:
    pool = request.app.state.engine_pool
    return {"status": "ok", "embedded_models": pool.loaded() if pool is not None else []}
