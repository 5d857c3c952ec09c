"""A deployment's load and status: the one place that moves it PENDING -> READY or FAILED.

An embedded deployment (a GGUF file run by the engine) is PENDING until its file is
loaded, then READY, or FAILED with the reason. It is loaded at the server's start, when
an admin creates it or gives it a new file, and when an operator resets it (`modelport
deployments reset` only writes PENDING to the database; `watch_resets` sees it). The
engine supervisor reports an engine in a crash loop (FAILED) and its recovery (READY
again). A deployment of an upstream vendor has nothing to load: it is READY at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.catalogue.deployment_settings import embedded_checkpoint
from modelport.engine.pool import EnginePool
from modelport.engine.protocol import ModelLoadError
from modelport.engine.supervisor import FailureCallback, RecoveryCallback
from modelport.schemas.catalogue import DeploymentStatus
from modelport.store import db, repo
from modelport.store.tables import Deployment, Model

log = logging.getLogger(__name__)

ENGINE_DISABLED = "the embedded engine is disabled on this server (MODELPORT_EMBEDDED_ENGINE)"

Outcome = tuple[DeploymentStatus, str | None]


class DeploymentLoader:
    """Loads embedded deployments into the engine pool (None: the engine is disabled on
    this server) and records what came of it. The catalogue's `DeploymentLoads`."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], pool: EnginePool | None) -> None:
        self._sessions = sessions
        self._pool = pool
        self._loads: set[asyncio.Task[None]] = set()

    def initial_status(self, checkpoint: str | None) -> DeploymentStatus:
        return DeploymentStatus.at_creation(checkpoint)

    async def load(self, deployment_id: str, checkpoint: str, *, wait: bool) -> None:
        """Load a deployment's file and record READY, or FAILED with the reason; with
        `wait=False` in a task of its own (the caller answers at once, PENDING)."""

        async def load() -> None:
            status, reason = await self._attach(deployment_id, checkpoint, retry=True)
            async with self._sessions() as session, session.begin():
                await repo.set_deployment_status(session, deployment_id=deployment_id, status=status, reason=reason)

        if wait:
            await load()
        else:
            task = asyncio.create_task(load(), name=f"load:{deployment_id}")
            self._loads.add(task)
            task.add_done_callback(self._loads.discard)

    async def unload(self, deployment_id: str) -> None:
        if self._pool is not None:
            await self._pool.detach(deployment_id)

    async def load_at_start(self, around_load: Callable[[str], AbstractContextManager[object]] = nullcontext) -> None:
        """The server's start: every embedded deployment is loaded, FAILED ones too (a
        crash one request caused must not keep a model down for good), one after the
        other, each inside `around_load(checkpoint)` (what the terminal shows)."""
        if self._pool is None:
            return
        async with self._sessions() as session:
            live = [
                (deployment.id, embedded_checkpoint(model_vendor, deployment.vendor_configuration))
                for deployment, model_vendor in await repo.live_deployments(session)
            ]
        # No transaction is held while a model loads (seconds, minutes on a busy machine):
        # each status is written on its own, so another worker starting beside this one,
        # or a request, never waits on it.
        for deployment_id, checkpoint in live:
            if checkpoint is None:
                continue
            with around_load(checkpoint):
                status, reason = await self._attach(deployment_id, checkpoint, retry=False)
            async with self._sessions() as session, session.begin():
                await repo.set_deployment_status(session, deployment_id=deployment_id, status=status, reason=reason)

    async def watch_resets(self, read_generation: Callable[[], Awaitable[int]], every: float) -> None:
        """Run until cancelled: each time the catalogue changes, load the embedded
        deployments that are PENDING and not being loaded here, such as one an operator
        reset (`reset_deployment`, which only writes the database)."""
        if self._pool is None:
            return
        seen: int | None = None
        while True:
            try:
                generation = await read_generation()
                if generation != seen:
                    seen = generation
                    await self._load_pending()
            except Exception as exc:  # the database is down: try again at the next turn
                log.warning("could not look for deployments to load (%s)", exc)
            await asyncio.sleep(every)

    async def _load_pending(self) -> None:
        loading = {task.get_name() for task in self._loads}
        async with self._sessions() as session:
            pending = await repo.live_deployments(session, (DeploymentStatus.PENDING,))
        for deployment, model_vendor in pending:
            checkpoint = embedded_checkpoint(model_vendor, deployment.vendor_configuration)
            if checkpoint and f"load:{deployment.id}" not in loading:
                log.info("loading deployment %s (PENDING)", deployment.id)
                await self.load(deployment.id, checkpoint, wait=False)

    async def _attach(self, deployment_id: str, checkpoint: str, *, retry: bool) -> Outcome:
        if self._pool is None:
            return DeploymentStatus.FAILED, ENGINE_DISABLED
        try:
            await self._pool.attach(deployment_id, checkpoint, retry=retry)
        except ModelLoadError as exc:
            log.error("deployment %s failed to load: %s", deployment_id, exc)
            return DeploymentStatus.FAILED, str(exc)
        return DeploymentStatus.READY, None


def status_recorders(database_url: str) -> tuple[FailureCallback, RecoveryCallback]:
    """For the engine supervisor: one marks FAILED, with the reason, the deployments of
    an engine in a crash loop (or that cannot load its file), the other marks them READY
    again once it runs. They open their own database connection on first use, on the
    supervisor's event loop."""
    sessions: async_sessionmaker[AsyncSession] | None = None

    def opened() -> async_sessionmaker[AsyncSession]:
        nonlocal sessions
        if sessions is None:
            sessions = db.make_sessions(db.make_engine(database_url))
        return sessions

    async def failed(deployment_ids: list[str], reason: str) -> None:
        async with opened()() as session, session.begin():
            for deployment_id in deployment_ids:
                await repo.set_deployment_status(
                    session, deployment_id=deployment_id, status=DeploymentStatus.FAILED, reason=reason
                )

    async def recovered(deployment_ids: list[str]) -> None:
        async with opened()() as session, session.begin():
            for deployment_id in deployment_ids:
                deployment = await session.get(Deployment, deployment_id)
                # Not one an admin is changing (PENDING): its own load decides.
                if deployment is not None and deployment.status == DeploymentStatus.FAILED:
                    deployment.status, deployment.status_reason = DeploymentStatus.READY, None

    return failed, recovered


async def reset_deployment(sessions: async_sessionmaker[AsyncSession], deployment_id: str) -> Deployment | None:
    """An operator's reset (`modelport deployments reset`): the deployment is PENDING
    again, without a reason, and a running server loads it within a moment
    (`DeploymentLoader.watch_resets`; an engine in its crash-loop backoff is started at
    once), a stopped one at its next start. A deployment of an upstream vendor has
    nothing to load: it is READY at once. None when there is no such deployment."""
    async with sessions() as session, session.begin():
        deployment = await session.get(Deployment, deployment_id)
        if deployment is None:
            return None
        model = await session.get(Model, deployment.model_id)
        checkpoint = embedded_checkpoint(model.model_vendor, deployment.vendor_configuration) if model else None
        deployment.status, deployment.status_reason = DeploymentStatus.at_creation(checkpoint), None
        return deployment
