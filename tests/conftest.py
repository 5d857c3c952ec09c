"""Fixtures shared by the API and end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from modelport.api.app import create_app
from modelport.config import Settings
from tests.prerequisites import unavailable
from tests.servers import modelport_serving

ADMIN_KEY = "mp_test_admin_key_0123456789"
E2E_KEY = "mp_e2e_admin_key_0123456789"
# The deployments a fresh install creates (modelport/catalogue/bootstrap.py).
CHAT_DEPLOYMENT = "smollm2-135m-instruct-embedded"
EMBEDDING_DEPLOYMENT = "all-minilm-l6-v2-embedded"
POSTGRES_SERVER = os.environ.get("MODELPORT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def sqlite_settings(data: Path, **overrides: object) -> Settings:
    """Settings for an in-process app on its own SQLite file under `data`, with the
    admin key the tests use and the embedded engine off unless `overrides` say otherwise."""
    given: dict[str, object] = {
        "database_url": f"sqlite+aiosqlite:///{data / 'modelport.db'}",
        "api_key": ADMIN_KEY,
        "embedded_engine": False,
    }
    return Settings(**{**given, **overrides})  # type: ignore[arg-type]


@asynccontextmanager
async def in_process(
    settings: Settings, *, upstream: httpx.AsyncBaseTransport | None = None, client_timeout: float = 60
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The real application started (its lifespan run) and a client that calls it
    in-process as the admin; `upstream` answers its vendor calls when given."""
    application = create_app(settings, upstream_transport=upstream)
    async with serving(application, client_timeout=client_timeout) as client:
        yield application, client


@asynccontextmanager
async def serving(application: FastAPI, *, client_timeout: float = 60) -> AsyncIterator[httpx.AsyncClient]:
    """`application` started (its lifespan run) and a client that calls it in-process
    as the admin."""
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://modelport.test",
            headers={"x-api-key": ADMIN_KEY},
            timeout=client_timeout,
        ) as client,
    ):
        yield client


def _postgres_url(name: str) -> str:
    return f"{POSTGRES_SERVER.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+asyncpg://', 1)}/{name}"


async def _admin(statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(POSTGRES_SERVER, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _create_postgres_database(prefix: str) -> str:
    """A new database's name; a skip without PostgreSQL, a failure where CI requires it
    (MODELPORT_TEST_REQUIRE_POSTGRES=1)."""
    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        await _admin(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable("POSTGRES", f"PostgreSQL leg not run: no server at {POSTGRES_SERVER} ({exc})")
    return name


@asynccontextmanager
async def own_postgres_database(prefix: str = "modelport_test") -> AsyncIterator[str]:
    """A new, empty PostgreSQL database (an asyncpg URL), dropped after."""
    name = await _create_postgres_database(prefix)
    try:
        yield _postgres_url(name)
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def own_database(kind: str, data: Path, prefix: str = "modelport_test") -> AsyncIterator[str]:
    """A new, empty database of `kind` ("sqlite": a file in `data`; "postgresql"), for a
    test or a module that must not share the session's (whose app loads what it finds)."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{data / 'modelport.db'}"
        return
    async with own_postgres_database(prefix) as url:
        yield url


@contextmanager
def fresh_postgres_database(prefix: str = "modelport_test") -> Iterator[str]:
    """`own_postgres_database` for code outside an event loop (servers in subprocesses)."""
    name = asyncio.run(_create_postgres_database(prefix))
    try:
        yield _postgres_url(name)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def fresh_database(kind: str, data: Path) -> Iterator[str]:
    """`own_database` for code outside an event loop."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{data / 'modelport.db'}"
        return
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """Each storage-backed test runs on SQLite and on a throw-away PostgreSQL database."""
    async with own_database(request.param, tmp_path_factory.mktemp("sqlite")) as url:
        yield url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`modelport serve` in a subprocess on a free loopback port, on a fresh SQLite file."""
    with modelport_serving(tmp_path_factory.mktemp("e2e"), api_key=E2E_KEY) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def tmp_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("modelport")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory the test app's operator allows GGUF files in."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
async def app(database_url: str, model_dir: Path) -> AsyncIterator[FastAPI]:
    """The real application, on a fresh database, with the embedded model loaded."""
    settings = Settings(
        model_dirs=[str(model_dir)],
        database_url=database_url,
        usage_flush_seconds=0.2,
        api_key=ADMIN_KEY,
        max_body_bytes=256 * 1024,
        # The tests sharing this app send wrong keys on purpose, from one address, many a
        # minute; the throttle on wrong keys is tested on its own (tests/api/test_auth_throttle.py).
        auth_failures_per_minute=0,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://modelport.test", headers={"x-api-key": ADMIN_KEY}, timeout=120
    ) as http:
        yield http


@pytest.fixture(scope="session")
async def deployment_id(client: httpx.AsyncClient) -> str:
    listing = (await client.get("/v4/model-deployments")).json()
    # A fresh install has a chat deployment and an embeddings deployment; this is the chat one.
    [deployment] = [item for item in listing["items"] if item["name"] == CHAT_DEPLOYMENT]
    assert deployment["status"] == "READY"
    return str(deployment["id"])
