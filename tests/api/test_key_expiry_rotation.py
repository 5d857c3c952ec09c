"""Keys that expire and keys that are rotated (issue 24, item 2), through the real
application on SQLite and PostgreSQL, with an OpenAI-compatible upstream answered
in-process so that keys have limits to count and spend to keep.

Times are real: an expiry or a grace is set a few seconds ahead and the test polls to a
generous deadline, so a busy machine makes it slower, never wrong."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from modelport.api.app import create_app
from modelport.config import Settings
from tests.conftest import ADMIN_KEY

IN_PRICE, OUT_PRICE = 0.001, 0.002
COST_PER_CALL = 10 * IN_PRICE + 5 * OUT_PRICE  # the upstream reports 10 prompt and 5 completion tokens
DEADLINE_SECONDS = 60.0  # for what must happen "after a few seconds": slow only on a machine that is


def _answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        },
    )


def _settings(database_url: str, **overrides: Any) -> Settings:
    given: dict[str, Any] = {
        "database_url": database_url,
        "api_key": ADMIN_KEY,
        "embedded_engine": False,
        "upstream_attempts": 1,
        "usage_flush_seconds": 60,  # flushed by the tests, when they need the records
        # These tests send retired and expired keys on purpose; the throttle on wrong
        # keys has its own tests (tests/api/test_auth_throttle.py).
        "auth_failures_per_minute": 0,
        # Longer than any test: a key that stops on time was stopped by the check made on
        # every request, not by its cache entry running out.
        "cache_ttl_seconds": 3600,
    }
    return Settings(**{**given, **overrides})


@asynccontextmanager
async def _serving(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    application = create_app(settings, upstream_transport=httpx.MockTransport(_answer))
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://modelport.test",
            headers={"x-api-key": ADMIN_KEY},
        ) as client,
    ):
        yield application, client


@pytest.fixture(scope="module")
async def served(database_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with _serving(_settings(database_url)) as pair:
        yield pair


@pytest.fixture(scope="module")
async def deployment(served: tuple[FastAPI, httpx.AsyncClient]) -> str:
    _, client = served
    model = await client.post(
        "/v4/models",
        json={
            "name": f"priced-{uuid.uuid4().hex[:8]}",
            "model_type": "CHAT_COMPLETION",
            "model_vendor": "OPENAI",
            "model_creation_parameters": {
                "base_url": "http://upstream.test/v1",
                "model": "m",
                "input_cost_per_token": IN_PRICE,
                "output_cost_per_token": OUT_PRICE,
            },
        },
    )
    assert model.status_code == 200, model.text
    made = await client.post(f"/v4/models/{model.json()['id']}/deployments", json={"name": "d"})
    assert made.status_code == 200, made.text
    return str(made.json()["id"])


def _in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def _key(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    created = await client.post("/v4/api-keys", json={"role": "member", "name": "team-x", **fields})
    assert created.status_code == 201, created.text
    return dict(created.json())


async def _call(client: httpx.AsyncClient, key: str) -> httpx.Response:
    return await client.get("/v4/models", headers={"x-api-key": key})


async def _chat(client: httpx.AsyncClient, deployment: str, key: str) -> httpx.Response:
    return await client.post(
        f"/v4/models/{deployment}/chat-completions",
        json={"chat_history": [], "prompt": "hi", "max_tokens": 5},
        headers={"x-api-key": key},
    )


async def _refused_within(client: httpx.AsyncClient, key: str, seconds: float = DEADLINE_SECONDS) -> httpx.Response:
    """The first 401 `key` gets, polling until `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while True:
        answer = await _call(client, key)
        if answer.status_code != 200 or time.monotonic() > deadline:
            assert answer.status_code == 401, answer.text
            return answer
        await asyncio.sleep(0.1)


async def _listed(client: httpx.AsyncClient, key_id: str) -> dict[str, Any]:
    listing = await client.get("/v4/api-keys")
    assert listing.status_code == 200, listing.text
    [found] = [key for key in listing.json() if key["id"] == key_id]
    return dict(found)


async def _spend(app: FastAPI, client: httpx.AsyncClient, key_id: str) -> float:
    await app.state.limits.drain()
    await app.state.usage.flush()
    return float((await _listed(client, key_id))["spend"])


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- expiry -------------------------------------------------------------------------------


async def test_a_key_works_until_it_expires_then_answers_401_expired_and_null_clears_it(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = served
    in_an_hour = datetime.now(UTC) + timedelta(hours=1)
    # Any offset is taken, and kept as the same moment.
    created = await _key(client, expires_at=in_an_hour.astimezone(timezone(timedelta(hours=-5))).isoformat())
    assert _moment(created["expires_at"]) == in_an_hour
    assert (await _call(client, created["key"])).status_code == 200
    assert _moment((await _listed(client, created["id"]))["expires_at"]) == in_an_hour

    soon = await client.patch(f"/v4/api-keys/{created['id']}", json={"expires_at": _in(4)})
    assert soon.status_code == 200, soon.text
    expired = await _refused_within(client, created["key"])
    assert expired.json()["detail"] == "API key expired"
    # A wrong key still gets the one answer that says nothing about which keys exist.
    assert (await _call(client, "mp_" + "x" * 43)).json()["detail"] == "invalid API key"

    cleared = await client.patch(f"/v4/api-keys/{created['id']}", json={"expires_at": None})
    assert cleared.status_code == 200 and cleared.json()["expires_at"] is None
    assert (await _call(client, created["key"])).status_code == 200
    assert (await _listed(client, created["id"]))["expires_at"] is None


async def test_an_expiry_that_is_past_or_has_no_timezone_is_422_naming_the_field(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = served
    key = await _key(client)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    refused = [
        await client.post("/v4/api-keys", json={"role": "member", "expires_at": yesterday}),
        await client.patch(f"/v4/api-keys/{key['id']}", json={"expires_at": yesterday}),
        await client.patch(f"/v4/api-keys/{key['id']}", json={"expires_at": "2030-01-01T00:00:00"}),
        await client.patch(f"/v4/api-keys/{key['id']}", json={"expires_at": "next week"}),
        await client.patch(f"/v4/api-keys/{key['id']}", json={"expires_at": "9999-12-31T23:59:59-14:00"}),
    ]
    for answer in refused:
        assert answer.status_code == 422, answer.text
        assert [error["loc"] for error in answer.json()["errors"]] == [["body", "expires_at"]], answer.text
    assert "in the past" in refused[0].json()["detail"]
    # Nothing was changed by the refused updates.
    assert (await _listed(client, key["id"]))["expires_at"] is None
    assert (await _call(client, key["key"])).status_code == 200


# --- rotation -----------------------------------------------------------------------------


async def test_rotation_gives_the_same_key_a_new_secret_and_keeps_its_limits_and_spend(
    served: tuple[FastAPI, httpx.AsyncClient], deployment: str
) -> None:
    app, client = served
    key = await _key(client, rpm_limit=2, max_budget=100)
    assert (await _chat(client, deployment, key["key"])).status_code == 200
    spend_before = await _spend(app, client, key["id"])
    assert spend_before == pytest.approx(COST_PER_CALL)

    rotated = await client.post(f"/v4/api-keys/{key['id']}/rotate")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["key"] != key["key"] and new["display_prefix"] == new["key"][:10]
    kept = ("id", "name", "role", "identity_id", "created_at", "rpm_limit", "max_budget")
    assert {field: new[field] for field in kept} == {field: key[field] for field in kept}
    assert new["spend"] == pytest.approx(spend_before)

    # Without a grace the old secret stops at once, with the answer any wrong key gets.
    old = await _call(client, key["key"])
    assert (old.status_code, old.json()["detail"]) == (401, "invalid API key")
    # The new secret is the same key: its minute's second request is its last.
    assert (await _chat(client, deployment, new["key"])).status_code == 200
    over = await _chat(client, deployment, new["key"])
    assert over.status_code == 429 and "rpm_limit" in over.json()["detail"]
    assert await _spend(app, client, key["id"]) == pytest.approx(2 * COST_PER_CALL)
    listed = await _listed(client, key["id"])  # one key, not two
    assert (listed["display_prefix"], listed["spend"]) == (new["display_prefix"], pytest.approx(2 * COST_PER_CALL))
    assert "key" not in listed


async def test_with_a_grace_both_secrets_work_until_the_old_one_stops(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = served
    key = await _key(client)
    before = datetime.now(UTC)
    rotated = await client.post(f"/v4/api-keys/{key['id']}/rotate", json={"grace_seconds": 5})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    retired_at = _moment(new["previous_key_retired_at"])
    assert before + timedelta(seconds=5) <= retired_at <= datetime.now(UTC) + timedelta(seconds=5)
    assert (await _call(client, key["key"])).status_code == 200
    assert (await _call(client, new["key"])).status_code == 200

    old = await _refused_within(client, key["key"])
    assert old.json()["detail"] == "invalid API key"
    assert datetime.now(UTC) >= retired_at  # not before its grace was over
    assert (await _call(client, new["key"])).status_code == 200


async def test_a_second_rotation_ends_the_first_ones_grace(served: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = served
    key = await _key(client)
    first = (await client.post(f"/v4/api-keys/{key['id']}/rotate", json={"grace_seconds": 3600})).json()
    assert (await _call(client, key["key"])).status_code == 200
    second = (await client.post(f"/v4/api-keys/{key['id']}/rotate", json={"grace_seconds": 3600})).json()
    # Only the secret just replaced keeps a grace: the one before it stops now.
    assert [(await _call(client, secret)).status_code for secret in (key["key"], first["key"], second["key"])] == [
        401,
        200,
        200,
    ]


async def test_a_grace_out_of_bounds_is_422_naming_it(served: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = served
    key = await _key(client)
    for grace in (-1, 30 * 86400 + 1, "soon"):
        refused = await client.post(f"/v4/api-keys/{key['id']}/rotate", json={"grace_seconds": grace})
        assert refused.status_code == 422, refused.text
        assert [error["loc"] for error in refused.json()["errors"]] == [["body", "grace_seconds"]]
    assert (await _call(client, key["key"])).status_code == 200  # still its only secret


async def test_who_may_rotate_is_who_may_revoke(served: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = served
    member = await _key(client)
    other = await _key(client)
    by_member = await client.post(f"/v4/api-keys/{other['id']}/rotate", headers={"x-api-key": member["key"]})
    assert by_member.status_code == 403 and "admin" in by_member.json()["detail"]
    own = await client.post(f"/v4/api-keys/{member['id']}/rotate", headers={"x-api-key": member["key"]})
    assert own.status_code == 403  # as with revoking: keys are managed by admins

    # An admin of another account sees this account's keys as missing ones.
    account = await client.post("/accounts", json={"account_name": f"rotate-b-{uuid.uuid4().hex[:8]}"})
    in_b = {"x-selected-account-id": account.json()["account_id"]}
    b_admin = (await client.post("/v4/api-keys", json={"role": "admin"}, headers=in_b)).json()
    across = await client.post(f"/v4/api-keys/{other['id']}/rotate", headers={"x-api-key": b_admin["key"]})
    assert across.status_code == 404 and "not found" in across.json()["detail"]
    unknown = await client.post("/v4/api-keys/no-such-key/rotate")
    assert unknown.status_code == 404 and "not found" in unknown.json()["detail"]
    for secret in (member["key"], other["key"]):
        assert (await _call(client, secret)).status_code == 200  # nothing was rotated

    assert (await client.delete(f"/v4/api-keys/{other['id']}")).status_code == 200
    revoked = await client.post(f"/v4/api-keys/{other['id']}/rotate")
    assert revoked.status_code == 409 and "revoked" in revoked.json()["detail"]


# --- across processes ------------------------------------------------------------------------


async def test_a_secret_rotated_through_one_replica_stops_on_the_other(database_url: str) -> None:
    """Two applications on one database, as two replicas: the other one's cache holds the
    old secret until it sees the catalogue change (MODELPORT_CACHE_REFRESH_SECONDS)."""
    async with (
        _serving(_settings(database_url)) as (_, one),
        _serving(_settings(database_url, bootstrap=False)) as (_, other),
    ):
        key = await _key(one)
        assert (await _call(other, key["key"])).status_code == 200  # now in the other's cache
        rotated = await one.post(f"/v4/api-keys/{key['id']}/rotate")
        assert rotated.status_code == 200, rotated.text
        old = await _refused_within(other, key["key"], seconds=15)
        assert old.json()["detail"] == "invalid API key"
        assert (await _call(other, rotated.json()["key"])).status_code == 200

        # An expiry set through one replica holds on the other as well.
        soon = await one.patch(f"/v4/api-keys/{key['id']}", json={"expires_at": _in(4)})
        assert soon.status_code == 200, soon.text
        expired = await _refused_within(other, rotated.json()["key"])
        assert expired.json()["detail"] == "API key expired"


async def test_the_rotate_route_and_the_new_fields_are_in_the_openapi_document(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = served
    document = (await client.get("/openapi.json")).json()
    rotate = document["paths"]["/v4/api-keys/{key_id}/rotate"]["post"]
    assert rotate["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/KeyCreated")
    schemas = document["components"]["schemas"]
    assert {"expires_at", "previous_key_retired_at"} <= set(schemas["KeyOut"]["properties"])
    assert "expires_at" in schemas["KeyCreate"]["properties"] and "expires_at" in schemas["KeyUpdate"]["properties"]
    assert schemas["KeyRotate"]["properties"]["grace_seconds"]["maximum"] == 30 * 86400
