"""The embedded engines as one gateway process sees them: a client per GGUF file.

Loading happens in the engine processes that the supervisor runs; this keeps, for
this process, which deployments use which file and the connection to each engine.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from modelport.engine.client import EngineClient, EngineInfo
from modelport.engine.model import ModelLoadError
from modelport.engine.supervisor import SupervisorClient

log = logging.getLogger(__name__)


PACKAGE_SCHEME = "pkg://"


def resolve_checkpoint(checkpoint_path: str) -> Path:
    """A GGUF path on disk, or `pkg://<python package>/<file>` for a model file that a
    Python package ships (so the path survives moving or rebuilding the venv)."""
    if checkpoint_path.startswith(PACKAGE_SCHEME):
        package, _, filename = checkpoint_path[len(PACKAGE_SCHEME) :].partition("/")
        try:
            module = importlib.import_module(package)
        except ImportError as exc:
            raise ModelLoadError(f"package {package!r} is not installed: {exc}") from exc
        if module.__file__ is None:
            raise ModelLoadError(f"package {package!r} has no files on disk")
        return Path(module.__file__).parent / filename
    return Path(checkpoint_path).expanduser().resolve()


class EnginePool:
    # Loading a large GGUF file takes a while; the supervisor answers once it is loaded.
    ATTACH_TIMEOUT_SECONDS = 900.0

    def __init__(self, supervisor: SupervisorClient) -> None:
        self._supervisor = supervisor
        self._clients: dict[Path, EngineClient] = {}
        self._users: dict[str, Path] = {}

    def get(self, checkpoint_path: str) -> EngineClient | None:
        try:
            return self._clients.get(resolve_checkpoint(checkpoint_path))
        except ModelLoadError:
            return None

    def client(self, path: str) -> EngineClient | None:
        """This process's client of the engine for a resolved file path."""
        return self._clients.get(Path(path))

    def loaded(self) -> list[str]:
        return [str(path) for path in self._clients]

    def users(self) -> set[str]:
        return set(self._users)

    async def attach(self, deployment_id: str, checkpoint_path: str, *, retry: bool = False) -> EngineClient:
        """Have the supervisor load `checkpoint_path` (once, for every worker) and note
        that this deployment uses it. Raises ModelLoadError when it cannot be served.
        `retry`: start an engine that has failed again (an admin asked for it)."""
        path = resolve_checkpoint(checkpoint_path)
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
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
            client = EngineClient(path.name, Path(reply["socket"]), EngineInfo.from_wire(reply["info"]))
            self._clients[path] = client
        self._users[deployment_id] = path
        return client

    async def detach(self, deployment_id: str) -> None:
        """Forget a deployment here and at the supervisor, which stops an engine that
        no deployment uses any more."""
        path = self._users.pop(deployment_id, None)
        if path is not None and path not in self._users.values():
            client = self._clients.pop(path, None)
            if client is not None:
                await client.close()
        try:
            await self._supervisor.call({"op": "detach", "deployment_id": deployment_id}, answer_within=30)
        except (OSError, TimeoutError) as exc:
            log.warning("the engine supervisor did not answer a detach for %s: %s", deployment_id, exc)

    async def status(self) -> list[dict[str, Any]]:
        """Every engine the supervisor runs: state, reason, pid, restarts."""
        reply = await self._supervisor.call({"op": "status"}, answer_within=5)
        engines: list[dict[str, Any]] = reply.get("engines", [])
        return engines

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        self._users.clear()
