"""Liveness and readiness, for load balancers and the CLI (no key needed)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(request: Request) -> dict[str, object]:
    """Always 200 while the gateway answers; `status` is "degraded" when an embedded
    engine is restarting or has failed, and `embedded_engines` says which and why."""
    pool = request.app.state.engine_pool
    engines: list[dict[str, object]] = []
    if pool is not None:
        try:
            reported = await pool.status()
        except (OSError, TimeoutError) as exc:
            reported = [{"model": "", "state": "unknown", "reason": f"the engine supervisor did not answer: {exc}"}]
        for engine in reported:
            # File names, not paths: this route needs no key, so it says nothing about the disk.
            path = str(engine.get("model", ""))
            name = Path(path).name
            reason = engine.get("reason")
            engines.append(
                {
                    "model": name,
                    "state": engine.get("state"),
                    "restarts": engine.get("restarts", 0),
                    "reason": str(reason).replace(path, name) if reason else None,
                }
            )
    healthy = all(engine["state"] == "ready" for engine in engines)
    return {
        "status": "ok" if healthy else "degraded",
        "embedded_models_loaded": sum(1 for engine in engines if engine["state"] == "ready"),
        "embedded_engines": engines,
    }
