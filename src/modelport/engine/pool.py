"""The embedded engines as one gateway process sees them: a client per GGUF file.

Loading happens in the engine processes that the supervisor runs; this keeps, for
this process, which deployments use which file and the connection to each engine.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from modelport.engine.client import EngineClient, EngineInfo
from modelport.engine.protocol import ModelLoadError
from modelport.engine.supervisor import SupervisorClient
from modelport.errors import InvalidRequest, ModelportError
from modelport.policy import ServerPolicy

log = logging.getLogger(__name__)


def resolve_checkpoint(checkpoint_path: str, policy: ServerPolicy | None = None) -> Path:
    """The GGUF file a deployment names: a path under a model directory, or
    `pkg://<python package>/<file>` for a file an allowed package ships (so the path
    survives moving or rebuilding the venv). ModelLoadError when it is not allowed."""
    try:
        return (policy or ServerPolicy()).resolve_checkpoint(checkpoint_path)
    except InvalidRequest as exc:
        raise ModelLoadError(exc.detail) from exc


class EnginePool:
    # The supervisor answers once the file is loaded or has failed, which it bounds
    # itself: at most (restart_limit + 1) starts of load_timeout each, with defaults 4 times
    # 600 s. This is only a backstop for a supervisor that stopped answering at all.
    ATTACH_TIMEOUT_SECONDS = 3 * 3600.0

    def __init__(
        self, supervisor: SupervisorClient, policy: ServerPolicy | None = None, *, stall_seconds: float = 60.0
    ) -> None:
        self._supervisor = supervisor
        self._policy = policy or ServerPolicy()
        self._stall_seconds = stall_seconds
        self._clients: dict[Path, EngineClient] = {}
        self._users: dict[str, Path] = {}

    def get(self, checkpoint_path: str) -> EngineClient | None:
        try:
            return self._clients.get(resolve_checkpoint(checkpoint_path, self._policy))
        except ModelLoadError:
            return None

    def users(self) -> set[str]:
        return set(self._users)

    async def attach(self, deployment_id: str, checkpoint_path: str, *, retry: bool = False) -> EngineClient:
        """Have the supervisor load `checkpoint_path` (once, for every worker) and note
        that this deployment uses it. Raises ModelLoadError when it cannot be served.
        `retry`: start an engine that has failed again (an admin asked for it)."""
        path = resolve_checkpoint(checkpoint_path, self._policy)
        try:
            reply = await self._supervisor.call(
                {"op": "attach", "deployment_id": deployment_id, "path": str(path), "retry": retry},
                answer_within=self.ATTACH_TIMEOUT_SECONDS,
            )
        except (OSError, TimeoutError) as exc:
            raise ModelLoadError(f"the engine supervisor did not answer: {exc}") from exc
        if not reply.get("ok"):
            raise ModelLoadError(str(reply.get("error")))
        client = self._clients.get(path)
        if client is None:
            info = EngineInfo.from_wire(reply["info"])
            client = EngineClient(path.name, Path(reply["socket"]), info, stall_seconds=self._stall_seconds)
            self._clients[path] = client
        self._users[deployment_id] = path
        return client

    async def detach(self, deployment_id: str) -> None:
        """Forget a deployment here and at the supervisor, which stops an engine that
        no deployment uses any more. The client stays: other deployments of the file
        may use it here without this process having attached them, and once the engine
        stops its connection ends by itself."""
        self._users.pop(deployment_id, None)
        try:
            await self._supervisor.call({"op": "detach", "deployment_id": deployment_id}, answer_within=30)
        except (OSError, TimeoutError) as exc:
            log.warning("the engine supervisor did not answer a detach for %s: %s", deployment_id, exc)

    async def status(self) -> list[dict[str, Any]]:
        """Every engine the supervisor runs: state, reason, pid, restarts, deployments."""
        reply = await self._supervisor.call({"op": "status"}, answer_within=5)
        engines: list[dict[str, Any]] = reply.get("engines", [])
        return engines

    async def health(self) -> list[dict[str, Any]]:
        """What an unauthenticated health check may see of each engine: file names, not
        paths or deployments, and the engine's own counters (queue, running sequences,
        KV cells, gateway processes served)."""
        try:
            engines = await self.status()
        except (OSError, TimeoutError) as exc:
            return [{"model": "", "state": "unknown", "reason": f"the engine supervisor did not answer: {exc}"}]
        report = []
        for engine in engines:
            path = str(engine.get("model", ""))
            name = Path(path).name
            reason = engine.get("reason")
            entry: dict[str, Any] = {
                "model": name,
                "state": engine.get("state"),
                "pid": engine.get("pid"),
                "restarts": engine.get("restarts", 0),
                "reason": str(reason).replace(path, name) if reason else None,
            }
            client = self._clients.get(Path(path))
            if client is not None and engine.get("state") == "ready":
                # The engine answers between two steps of its model: while one runs long (a
                # long prompt, a first step, any step on a busy machine) /health waits up to
                # this second, then shows no counters. Not the event loop: /health/live is
                # the measure of that (issue 28 §3).
                with contextlib.suppress(ModelportError, TimeoutError):
                    entry["stats"] = await client.stats(answer_within=1.0)
            report.append(entry)
        return report

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        self._users.clear()
