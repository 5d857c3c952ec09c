"""A deployment's status, as the one place that decides it records it: a load that
works or fails, a server without the engine, the supervisor's crash-loop reports and
an operator's reset, on SQLite and on PostgreSQL (the pool is a stand-in: loading a
real file is tests/engine's)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.engine.protocol import ModelLoadError
from modelport.inference.loader import DeploymentLoader, reset_deployment, status_recorders
from modelport.principal import IdentityType, Role
from modelport.schemas.catalogue import DeploymentStatus
from modelport.store import accounts, db, repo
from modelport.store.tables import Deployment
from tests.conftest import own_database

GOOD = "good.gguf"


class StandInPool:
    """Loads GOOD; any other file is one the engine cannot serve."""

    def __init__(self) -> None:
        self.attached: dict[str, str] = {}

    async def attach(self, deployment_id: str, checkpoint_path: str, *, retry: bool = False) -> None:
        if checkpoint_path != GOOD:
            raise ModelLoadError(f"{checkpoint_path}: not a GGUF file")
        self.attached[deployment_id] = checkpoint_path

    async def detach(self, deployment_id: str) -> None:
        self.attached.pop(deployment_id, None)


@pytest.fixture
async def own_database_url(database_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """A database of this test's own, of the leg's kind. Not the session's shared one:
    the session's app watches that one for PENDING deployments and would load these
    with its real engine pool, racing the loader under test."""
    kind = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    async with own_database(kind, tmp_path, "modelport_loader") as url:
        yield url


@pytest.fixture
async def sessions(own_database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = db.make_engine(own_database_url)
    await db.upgrade(engine)
    yield db.make_sessions(engine)
    await engine.dispose()


async def _deployment(
    sessions: async_sessionmaker[AsyncSession], *, vendor: str = "LLMENGINE", checkpoint: str | None = GOOD
) -> str:
    async with sessions() as session, session.begin():
        account = await accounts.create_account(session, name=f"loader-{uuid.uuid4().hex[:8]}")
        identity = await accounts.create_identity(
            session, name="admin", identity_type=IdentityType.USER, default_account_id=account.id
        )
        await accounts.add_membership(session, identity_id=identity.id, account_id=account.id, role=Role.ADMIN)
        creator: dict[str, Any] = {"created_by_user_id": identity.id, "created_by_identity_type": IdentityType.USER}
        model = await repo.create_model(
            session, account_id=account.id, name="m", model_type="CHAT_COMPLETION", model_vendor=vendor, **creator
        )
        deployment = await repo.create_deployment(
            session,
            account_id=account.id,
            model_id=model.id,
            name="d",
            status=DeploymentStatus.PENDING,
            vendor_configuration={"checkpoint_path": checkpoint} if checkpoint else {},
            **creator,
        )
        return deployment.id


async def _status(sessions: async_sessionmaker[AsyncSession], deployment_id: str) -> tuple[str, str | None]:
    async with sessions() as session:
        deployment = await session.get(Deployment, deployment_id)
        assert deployment is not None
        return deployment.status, deployment.status_reason


async def test_a_load_records_ready_or_failed_with_the_reason(sessions: async_sessionmaker[AsyncSession]) -> None:
    pool = StandInPool()
    loader = DeploymentLoader(sessions, pool)  # type: ignore[arg-type]
    loads, fails = await _deployment(sessions), await _deployment(sessions, checkpoint="broken.gguf")
    await loader.load(loads, GOOD, wait=True)
    await loader.load(fails, "broken.gguf", wait=True)
    assert await _status(sessions, loads) == (DeploymentStatus.READY, None)
    assert await _status(sessions, fails) == (DeploymentStatus.FAILED, "broken.gguf: not a GGUF file")
    assert pool.attached == {loads: GOOD}
    await loader.unload(loads)
    assert pool.attached == {}


async def test_the_start_up_load_tries_failed_deployments_again(sessions: async_sessionmaker[AsyncSession]) -> None:
    deployment_id = await _deployment(sessions)
    async with sessions() as session, session.begin():
        await repo.set_deployment_status(
            session, deployment_id=deployment_id, status=DeploymentStatus.FAILED, reason="a crash"
        )
    await DeploymentLoader(sessions, StandInPool()).load_at_start()  # type: ignore[arg-type]
    assert await _status(sessions, deployment_id) == (DeploymentStatus.READY, None)


async def test_without_the_engine_an_embedded_deployment_fails_saying_why(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    deployment_id = await _deployment(sessions)
    await DeploymentLoader(sessions, None).load(deployment_id, GOOD, wait=True)
    status, reason = await _status(sessions, deployment_id)
    assert status == DeploymentStatus.FAILED
    assert reason is not None and "MODELPORT_EMBEDDED_ENGINE" in reason


async def test_a_recovered_engine_brings_back_failed_deployments_only(
    sessions: async_sessionmaker[AsyncSession], own_database_url: str
) -> None:
    crashed, changing = await _deployment(sessions), await _deployment(sessions)
    failed, recovered = status_recorders(own_database_url)
    await failed([crashed, changing], "the engine keeps crashing")
    assert await _status(sessions, crashed) == (DeploymentStatus.FAILED, "the engine keeps crashing")
    async with sessions() as session, session.begin():  # an admin gives it a new file meanwhile
        await repo.set_deployment_status(session, deployment_id=changing, status=DeploymentStatus.PENDING)
    await recovered([crashed, changing])
    assert await _status(sessions, crashed) == (DeploymentStatus.READY, None)
    assert (await _status(sessions, changing))[0] == DeploymentStatus.PENDING


async def test_a_reset_makes_an_embedded_deployment_pending_and_an_upstream_one_ready(
    sessions: async_sessionmaker[AsyncSession], own_database_url: str
) -> None:
    embedded, upstream = await _deployment(sessions), await _deployment(sessions, vendor="OPENAI", checkpoint=None)
    failed, _ = status_recorders(own_database_url)
    await failed([embedded, upstream], "down")
    assert (await reset_deployment(sessions, embedded)) is not None
    assert (await reset_deployment(sessions, upstream)) is not None
    assert await _status(sessions, embedded) == (DeploymentStatus.PENDING, None)
    assert await _status(sessions, upstream) == (DeploymentStatus.READY, None)
    assert await reset_deployment(sessions, "no-such-deployment") is None
