"""The GGUF models loaded in this process, shared by the deployments that use them."""

from __future__ import annotations

import asyncio
import importlib
import logging
from pathlib import Path

from modelport.engine.model import EmbeddedModel, ModelLoadError

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
    def __init__(self, *, n_ctx: int, max_queue: int, max_sequences: int = 16, kv_tokens: int = 0) -> None:
        self._n_ctx = n_ctx
        self._max_queue = max_queue
        self._max_sequences = max_sequences
        self._kv_tokens = kv_tokens
        self._models: dict[Path, EmbeddedModel] = {}
        self._users: dict[Path, set[str]] = {}
        self._lock = asyncio.Lock()

    def get(self, checkpoint_path: str) -> EmbeddedModel | None:
        try:
            return self._models.get(resolve_checkpoint(checkpoint_path))
        except ModelLoadError:
            return None

    def loaded(self) -> list[str]:
        return [str(path) for path in self._models]

    async def attach(self, deployment_id: str, checkpoint_path: str) -> EmbeddedModel:
        """Make sure the model at `checkpoint_path` is loaded (once) and note who uses
        it. Raises ModelLoadError when the file cannot be loaded."""
        key = resolve_checkpoint(checkpoint_path)
        async with self._lock:
            model = self._models.get(key)
            if model is None:
                # Loading takes seconds: off the event loop.
                model = await asyncio.to_thread(
                    EmbeddedModel,
                    key,
                    n_ctx=self._n_ctx,
                    max_queue=self._max_queue,
                    max_sequences=self._max_sequences,
                    kv_tokens=self._kv_tokens,
                )
                self._models[key] = model
            self._users.setdefault(key, set()).add(deployment_id)
            return model

    async def detach(self, deployment_id: str) -> None:
        """Forget a deployment; unload models no deployment uses any more."""
        async with self._lock:
            for key, users in list(self._users.items()):
                users.discard(deployment_id)
                if not users:
                    del self._users[key]
                    model = self._models.pop(key, None)
                    if model is not None:
                        log.info("unloading %s", key)
                        await asyncio.to_thread(model.close)

    async def close(self) -> None:
        async with self._lock:
            for model in self._models.values():
                await asyncio.to_thread(model.close)
            self._models.clear()
            self._users.clear()
