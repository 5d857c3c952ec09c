"""Liveness and readiness, for load balancers and the CLI (no key needed)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from fastapi import APIRouter, Request

from modelport.errors import ModelportError

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
            entry: dict[str, object] = {
                "model": name,
                "state": engine.get("state"),
                "pid": engine.get("pid"),
                "restarts": engine.get("restarts", 0),
                "reason": str(reason).replace(path, name) if reason else None,
            }
            client = pool.client(path)
            if client is not None and engine.get("state") == "ready":
                # Queue, running sequences, KV cells, and how many gateway processes it serves.
                with contextlib.suppress(ModelportError, TimeoutError):
                    entry["stats"] = await client.stats(answer_within=1.0)
            engines.append(entry)
    healthy = all(engine["state"] == "ready" for engine in engines)
    return {
        "status": "ok" if healthy else "degraded",
        "embedded_models_loaded": sum(1 for engine in engines if engine["state"] == "ready"),
        "embedded_engines": engines,
    }
