"""`python -m modelport.cli.prepare`, the one-off step a multi-replica deployment runs before
its gateways start: it migrates and sets up an empty database once, and is safe to rerun.
Each test runs on SQLite and on PostgreSQL (what a multi-replica deployment uses)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelport.catalogue.keys import hash_key
from modelport.store import accounts, db
from tests.conftest import fresh_database

KEY = "mp_prepared_admin_key_0123456789"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new database nothing has migrated yet."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


def run_prepare(database_url: str) -> str:
    env = {
        **os.environ,
        "MODELPORT_DATABASE_URL": database_url,
        "MODELPORT_API_KEY": KEY,
        # What the gateways are given; prepare migrates and bootstraps regardless.
        "MODELPORT_MIGRATE_ON_START": "false",
        "MODELPORT_BOOTSTRAP": "false",
    }
    done = subprocess.run(
        [sys.executable, "-m", "modelport.cli.prepare"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


async def test_prepare_migrates_sets_up_once_and_can_run_again(empty_database: str) -> None:
    url = empty_database
    first = run_prepare(url)
    second = run_prepare(url)
    engine = db.make_engine(url)
    try:
        revision = await db.current_revision(engine)
        async with db.make_sessions(engine)() as session:
            assert await accounts.count_accounts(session) == 1
            owner = await accounts.find_key_owner(session, key_hash=hash_key(KEY))
    finally:
        await engine.dispose()
    assert owner is not None and owner.is_operator
    assert revision is not None and f"at revision {revision}" in first and f"at revision {revision}" in second


def wait_for_prepared(database_url: str, patience: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MODELPORT_DATABASE_URL": database_url}
    command = [sys.executable, "-m", "modelport.cli.prepare", "--wait", "--timeout", str(patience)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_wait_holds_a_gateway_back_until_the_database_is_prepared(empty_database: str) -> None:
    url = empty_database
    waited = wait_for_prepared(url, patience=1)
    assert waited.returncode == 1 and "not " in waited.stderr  # nothing migrated: not ready
    run_prepare(url)
    assert wait_for_prepared(url, patience=1).returncode == 0
