"""Fixtures shared by the API and end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from modelport.api.app import create_app
from modelport.config import Settings

ADMIN_KEY = "mp_test_admin_key"


@pytest.fixture(scope="session")
def tmp_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("modelport")


@pytest.fixture(scope="session")
async def app(tmp_data: Path) -> AsyncIterator[FastAPI]:
    """The real application, on a fresh SQLite file, with the embedded model loaded."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_data / 'api.db'}",
        api_key=ADMIN_KEY,
        max_body_bytes=256 * 1024,
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
    [deployment] = listing["items"]
    assert deployment["status"] == "READY"
    return str(deployment["id"])
