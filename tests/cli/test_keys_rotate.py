"""`modelport keys rotate`, `--expires-at` and the expiry in `keys list`, run as the
operator runs them: the `modelport` command in a process of its own, on the database
a running application (here in-process, on SQLite and PostgreSQL) serves from. What the
command changes reaches the application through the catalogue's generation counter."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from modelport.config import Settings
from tests.conftest import ADMIN_KEY, in_process

DEADLINE_SECONDS = 30.0


def modelport(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`modelport ARGS` in a process of its own, on `database_url`."""
    env = {**os.environ, "MODELPORT_DATABASE_URL": database_url, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "modelport.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=database_url, api_key=ADMIN_KEY, embedded_engine=False, auth_failures_per_minute=0)
    async with in_process(settings) as (_, http):
        yield http


async def _status(client: httpx.AsyncClient, key: str) -> int:
    return (await client.get("/v4/models", headers={"x-api-key": key})).status_code


async def _becomes(client: httpx.AsyncClient, key: str, status: int) -> bool:
    """Whether `key` is answered with `status` within the deadline (the app sees the
    command's change within its cache refresh, 0.5 s by default)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        if await _status(client, key) == status:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)


async def test_keys_rotate_gives_a_new_secret_and_the_old_one_stops_after_its_grace(
    client: httpx.AsyncClient, database_url: str
) -> None:
    name = f"ci-{uuid.uuid4().hex[:8]}"
    created = await client.post("/v4/api-keys", json={"role": "member", "name": name, "rpm_limit": 50})
    assert created.status_code == 201, created.text
    key_id, first = created.json()["id"], created.json()["key"]
    assert await _status(client, first) == 200

    graced = await asyncio.to_thread(modelport, database_url, "keys", "rotate", name, "--grace", "3600")
    assert graced.returncode == 0, graced.stderr
    second = graced.stdout.strip()
    assert second.startswith("mp_") and second != first
    assert f"rotated {key_id}" in graced.stderr and "3600 s" in graced.stderr
    assert [await _status(client, secret) for secret in (first, second)] == [200, 200]

    # By a unique start of its id, without a grace: the secret it replaces stops, and the
    # one still in its grace stops with it (only one old secret is kept).
    at_once = await asyncio.to_thread(modelport, database_url, "keys", "rotate", key_id[:13])
    assert at_once.returncode == 0, at_once.stderr
    third = at_once.stdout.strip()
    assert await _becomes(client, second, 401)
    assert [await _status(client, secret) for secret in (first, second, third)] == [401, 401, 200]

    listing = (await client.get("/v4/api-keys")).json()
    [key] = [item for item in listing if item["name"] == name]  # the same key, not a new one
    assert (key["id"], key["rpm_limit"], key["display_prefix"]) == (key_id, 50, third[:10])


async def test_keys_rotate_refuses_what_it_cannot_rotate(client: httpx.AsyncClient, database_url: str) -> None:
    unknown = await asyncio.to_thread(modelport, database_url, "keys", "rotate", f"no-such-{uuid.uuid4().hex[:8]}")
    assert unknown.returncode == 1 and "no key named" in unknown.stderr

    created = (await client.post("/v4/api-keys", json={"role": "member"})).json()
    too_long = await asyncio.to_thread(modelport, database_url, "keys", "rotate", created["id"], "--grace", "2592001")
    assert too_long.returncode == 2 and "--grace" in too_long.stderr
    assert await _status(client, created["key"]) == 200  # unchanged

    assert (await client.delete(f"/v4/api-keys/{created['id']}")).status_code == 200
    revoked = await asyncio.to_thread(modelport, database_url, "keys", "rotate", created["id"])
    assert revoked.returncode == 1 and "revoked" in revoked.stderr


async def test_expires_at_from_the_command_line_is_checked_listed_and_cleared(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = (await client.get("/user-info")).json()["access_profiles"][0]["account"]["id"]
    name = f"temp-{uuid.uuid4().hex[:8]}"
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(second=0, microsecond=0)
    created = await asyncio.to_thread(
        modelport, database_url, "keys", "create", "--account", account, "--name", name,
        "--expires-at", tomorrow.isoformat(),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert await _status(client, secret) == 200

    listed = await asyncio.to_thread(modelport, database_url, "keys", "list", "--account", account, "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = [row for row in json.loads(listed.stdout) if row["name"] == name]
    assert row["expires"] == f"{tomorrow:%Y-%m-%d %H:%M}Z"

    for refused in ("2020-01-01T00:00:00Z", "2030-01-01T00:00:00", "tomorrow"):
        answer = await asyncio.to_thread(modelport, database_url, "keys", "update", name, "--expires-at", refused)
        assert answer.returncode == 1 and "--expires-at" in answer.stderr, (refused, answer.stderr)

    # An expiry a few seconds ahead, set while the server runs, ends the key on time.
    soon = (datetime.now(UTC) + timedelta(seconds=10)).isoformat()
    updated = await asyncio.to_thread(modelport, database_url, "keys", "update", name, "--expires-at", soon)
    assert updated.returncode == 0, updated.stderr
    assert await _becomes(client, secret, 401)
    expired = await client.get("/v4/models", headers={"x-api-key": secret})
    assert expired.json()["detail"] == "API key expired"

    cleared = await asyncio.to_thread(modelport, database_url, "keys", "update", name, "--clear", "expires_at")
    assert cleared.returncode == 0, cleared.stderr
    assert await _becomes(client, secret, 200)
