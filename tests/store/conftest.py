"""The migration tests' database: an empty one of each kind (SQLite, PostgreSQL), of the
test's own, to upgrade and downgrade."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.store import db
from tests.conftest import own_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with own_database(request.param, tmp_path, prefix="modelport_migration") as url:
        made = db.make_engine(url)
        try:
            yield made
        finally:
            await made.dispose()
