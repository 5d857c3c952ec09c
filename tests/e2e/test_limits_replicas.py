"""Limits that hold across replicas: two `modelport serve` processes on one PostgreSQL
database and one Redis (a server this module owns, stopped and started again at the
end), in front of a paced OpenAI-compatible upstream."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis

from tests.conftest import E2E_KEY, fresh_postgres_database
from tests.redis_server import OwnRedis
from tests.servers import free_port, running

IN_PRICE, OUT_PRICE = 0.001, 0.002
PLAIN_COST = 10 * IN_PRICE + 5 * OUT_PRICE  # the upstream's usage for a plain answer
# Reserved for {"prompt": "hi", "max_tokens": 5}: 2 bytes + 16 of template overhead, 5 out.
RESERVATION = 18 * IN_PRICE + 5 * OUT_PRICE


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with fresh_postgres_database("modelport_limits") as url:
        yield url


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replicas(
    postgres_url: str, own_redis: OwnRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[str], str]]:
    """Two servers (the base URLs) and the upstream's base URL."""
    data = tmp_path_factory.mktemp("replicas")
    upstream_port = free_port()
    env_common = {
        **os.environ,
        "MODELPORT_DATABASE_URL": postgres_url,
        "MODELPORT_API_KEY": E2E_KEY,
        "MODELPORT_REDIS_URL": own_redis.url,
        "MODELPORT_EMBEDDED_ENGINE": "false",
        "MODELPORT_USAGE_FLUSH_SECONDS": "0.2",
        "MODELPORT_CACHE_REFRESH_SECONDS": "0.2",
        "MODELPORT_LIMITS_REDIS_RETRY_SECONDS": "0.5",
        # What is tested here is the counting, not Redis's latency: on a busy machine a
        # script can take longer than the default 0.25 s deadline, and a fail-closed
        # budget then answers 503 as designed (tests/limits/test_limiters.py tests that).
        # A stopped Redis still fails at once: its connection is refused.
        "MODELPORT_LIMITS_REDIS_TIMEOUT_SECONDS": "5",
        # Revoked, rotated and expired keys are polled here until refused: not the failed-key
        # throttle's business (tests/api/test_auth_throttle.py), which would lock this address out.
        "MODELPORT_AUTH_FAILURES_PER_MINUTE": "0",
        "MODELPORT_UPSTREAM_ATTEMPTS": "1",
        "MODELPORT_LOG_LEVEL": "warning",
    }
    modelport = str(Path(sys.executable).parent / "modelport")
    with ExitStack() as stack:
        stack.enter_context(
            running(
                [sys.executable, "-m", "tests.paced_upstream", "--port", str(upstream_port)],
                ready_url=f"http://127.0.0.1:{upstream_port}/",
                log_path=data / "upstream.log",
            )
        )
        bases = []
        for name in ("a", "b"):  # one after the other: the first migrates and bootstraps
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            env = {**env_common, "MODELPORT_PORT": str(port)}
            stack.enter_context(
                running([modelport, "serve"], ready_url=f"{base}/health", log_path=data / f"{name}.log", env=env)
            )
            bases.append(base)
        yield bases, f"http://127.0.0.1:{upstream_port}/v1"


@pytest.fixture(scope="module")
def deployments(replicas: tuple[list[str], str]) -> dict[str, str]:
    """A priced deployment, a priced paced (streaming) one, and one with its own rpm_limit."""
    bases, upstream = replicas
    found = {}
    with httpx.Client(base_url=bases[0], headers={"x-api-key": E2E_KEY}, timeout=30) as client:
        for name, model, deployment_parameters in (
            ("plain", "paced-0", None),
            ("paced", "paced-0.2", None),
            ("guarded", "paced-0", {"rpm_limit": 3}),
        ):
            model_answer = client.post(
                "/v4/models",
                json={
                    "name": name,
                    "model_type": "CHAT_COMPLETION",
                    "model_vendor": "OPENAI",
                    "model_creation_parameters": {
                        "base_url": upstream,
                        "model": model,
                        "input_cost_per_token": IN_PRICE,
                        "output_cost_per_token": OUT_PRICE,
                    },
                },
            )
            assert model_answer.status_code == 200, model_answer.text
            deployment = client.post(
                f"/v4/models/{model_answer.json()['id']}/deployments",
                json={"name": name, "model_creation_parameters": deployment_parameters},
            )
            assert deployment.status_code == 200, deployment.text
            found[name] = deployment.json()["id"]
    return found


@pytest.fixture
async def clients(replicas: tuple[list[str], str]) -> AsyncIterator[list[httpx.AsyncClient]]:
    bases, _ = replicas
    async with (
        httpx.AsyncClient(base_url=bases[0], timeout=20) as a,
        httpx.AsyncClient(base_url=bases[1], timeout=20) as b,
    ):
        yield [a, b]


def new_key(bases: list[str], **limits: Any) -> tuple[str, str]:
    with httpx.Client(base_url=bases[0], headers={"x-api-key": E2E_KEY}, timeout=30) as client:
        created = client.post("/v4/api-keys", json={"role": "member", **limits})
        assert created.status_code == 201, created.text
        return created.json()["id"], created.json()["key"]


def chat(client: httpx.AsyncClient, deployment: str, key: str, **body: Any) -> Any:
    return client.post(
        f"/v4/models/{deployment}/chat-completions",
        json={"chat_history": [], "prompt": "hi", "max_tokens": 5, **body},
        headers={"x-api-key": key},
    )


def key_spend(bases: list[str], key_id: str) -> float:
    with httpx.Client(base_url=bases[1], headers={"x-api-key": E2E_KEY}, timeout=30) as client:
        return float(next(item["spend"] for item in client.get("/v4/api-keys").json() if item["id"] == key_id))


async def records_of(postgres_url: str, key_id: str) -> list[Any]:
    """The key's usage records, read straight from the database."""
    import asyncpg

    connection = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://", 1), timeout=5)
    try:
        return list(
            await connection.fetch("SELECT status, response_tokens, cost FROM usage_records WHERE key_id = $1", key_id)
        )
    finally:
        await connection.close()


async def written(postgres_url: str, key_id: str, count: int) -> list[Any]:
    """The key's records once `count` are written (replicas flush every 0.2 s)."""
    deadline = time.monotonic() + 20
    while len(records := await records_of(postgres_url, key_id)) < count and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    return records


async def test_rpm_limit_admits_exactly_five_across_both_replicas(
    replicas: tuple[list[str], str], deployments: dict[str, str], clients: list[httpx.AsyncClient]
) -> None:
    _, key = new_key(replicas[0], rpm_limit=5)
    answers = await asyncio.gather(*(chat(clients[i % 2], deployments["plain"], key) for i in range(12)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] * 5 + [429] * 7
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert "rpm_limit" in refused.json()["detail"] and int(refused.headers["retry-after"]) >= 1
    assert {answer.headers["x-ratelimit-remaining-requests"] for answer in answers if answer.status_code == 200} == {
        "0", "1", "2", "3", "4"
    }  # fmt: skip


async def test_deployment_rpm_limit_holds_across_replicas(
    replicas: tuple[list[str], str], deployments: dict[str, str], clients: list[httpx.AsyncClient]
) -> None:
    answers = await asyncio.gather(*(chat(clients[i % 2], deployments["guarded"], E2E_KEY) for i in range(8)))
    assert sorted(answer.status_code for answer in answers) == [200] * 3 + [429] * 5


async def test_budget_stops_within_the_bound_across_replicas(
    replicas: tuple[list[str], str], deployments: dict[str, str], clients: list[httpx.AsyncClient], postgres_url: str
) -> None:
    bases = replicas[0]
    budget = 0.1
    key_id, key = new_key(bases, max_budget=budget, budget_duration="30d")
    # A burst in parallel on both replicas, then one at a time until refused with
    # nothing in flight: the budget is then spent, and by no more than the bound.
    burst = await asyncio.gather(*(chat(clients[i % 2], deployments["plain"], key) for i in range(16)))
    assert {answer.status_code for answer in burst} <= {200, 429}
    served = sum(answer.status_code == 200 for answer in burst)
    refusals = 0
    while refusals < 2 and served < 40:  # refused twice, half a second apart: settled, spent
        answer = await chat(clients[served % 2], deployments["plain"], key)
        if answer.status_code == 429:
            assert "max_budget" in answer.json()["detail"]
            refusals += 1
            await asyncio.sleep(0.5)  # let the settlements of the burst land
        else:
            assert answer.status_code == 200
            served += 1
    assert refusals == 2
    records = await written(postgres_url, key_id, served)
    assert len(records) == served
    spend = key_spend(bases, key_id)
    assert spend == pytest.approx(served * PLAIN_COST)
    assert budget <= spend < budget + RESERVATION


async def _open_stream(client: httpx.AsyncClient, deployment: str, key: str, stack: Any) -> httpx.Response:
    response = await stack.enter_async_context(
        client.stream(
            "POST",
            f"/v4/models/{deployment}/chat-completions",
            json={"chat_history": [], "prompt": "hi", "max_tokens": 30, "stream": True},
            headers={"x-api-key": key},
        )
    )
    return response


async def test_parallel_limit_counts_streams_until_they_end_even_abandoned(
    replicas: tuple[list[str], str], deployments: dict[str, str], clients: list[httpx.AsyncClient]
) -> None:
    bases = replicas[0]
    _, key = new_key(bases, max_parallel_requests=2)
    async with AsyncExitStack() as kept, AsyncExitStack() as abandoned:
        finished = await _open_stream(clients[0], deployments["paced"], key, kept)
        gone = await _open_stream(clients[1], deployments["paced"], key, abandoned)
        assert (finished.status_code, gone.status_code) == (200, 200)
        refused = await chat(clients[1], deployments["plain"], key)
        assert refused.status_code == 429 and "max_parallel_requests" in refused.json()["detail"]
        await anext(gone.aiter_raw())  # a first event, then the client goes away
        await abandoned.aclose()
        # The abandoned stream's slot comes back once the server notices the client left
        # (at its next event), while the other stream still runs.
        for _ in range(50):
            answer = await chat(clients[0], deployments["plain"], key)
            if answer.status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert answer.status_code == 200
        assert (await chat(clients[1], deployments["plain"], key)).status_code == 200
        body = b"".join([chunk async for chunk in finished.aiter_raw()])
        assert body.count(b'"tok "') == 20 and b'"response_tokens":20' in body
    # Both streams over: both slots free.
    both = await asyncio.gather(*(_open_and_read(clients[i], deployments["plain"], key) for i in range(2)))
    assert both == [200, 200]


async def _open_and_read(client: httpx.AsyncClient, deployment: str, key: str) -> int:
    async with AsyncExitStack() as stack:
        response = await _open_stream(client, deployment, key, stack)
        await response.aread()
        return response.status_code


async def test_spend_equals_the_usage_records_after_a_burst_with_abandoned_streams(
    replicas: tuple[list[str], str],
    deployments: dict[str, str],
    clients: list[httpx.AsyncClient],
    postgres_url: str,
    own_redis: OwnRedis,
) -> None:
    bases = replicas[0]
    key_id, key = new_key(bases, max_budget=1000.0)

    async def abandon(client: httpx.AsyncClient) -> None:
        async with AsyncExitStack() as stack:
            response = await _open_stream(client, deployments["paced"], key, stack)
            chunks = 0
            async for _ in response.aiter_raw():
                chunks += 1
                if chunks == 3:
                    break

    async def full_stream(client: httpx.AsyncClient) -> None:
        async with AsyncExitStack() as stack:
            response = await _open_stream(client, deployments["paced"], key, stack)
            await response.aread()

    await asyncio.gather(
        *(chat(clients[i % 2], deployments["plain"], key) for i in range(6)),
        *(abandon(clients[i % 2]) for i in range(4)),
        *(full_stream(clients[i % 2]) for i in range(2)),
    )
    records = await written(postgres_url, key_id, 12)
    assert sorted(r["status"] for r in records) == [200] * 8 + [499] * 4
    # An abandoned stream is billed for what it generated.
    assert all(r["response_tokens"] > 0 and r["cost"] > 0 for r in records if r["status"] == 499)
    spend = key_spend(bases, key_id)
    assert spend == pytest.approx(sum(r["cost"] for r in records))
    # The budget count the replicas keep in Redis agrees with the records.
    redis = Redis.from_url(own_redis.url)
    try:
        [budget_key] = list(redis.scan_iter(f"modelport:limits:k:{key_id}:budget:*"))
        for _ in range(25):  # settlements run just after the records are queued
            if float(redis.get(budget_key) or 0) == pytest.approx(spend):
                break
            await asyncio.sleep(0.2)
        assert float(redis.get(budget_key) or 0) == pytest.approx(spend)
    finally:
        redis.close()


async def test_an_answer_cached_by_one_replica_is_a_hit_on_the_other(
    replicas: tuple[list[str], str], deployments: dict[str, str], clients: list[httpx.AsyncClient], postgres_url: str
) -> None:
    """The response cache lives in the Redis both replicas share (issue 24, item 8)."""
    key_id, key = new_key(replicas[0], cache_ttl_seconds=600)
    prompt = f"cached {uuid.uuid4().hex[:8]}"
    miss = await chat(clients[0], deployments["plain"], key, prompt=prompt, temperature=0)
    assert miss.status_code == 200 and miss.headers["x-modelport-cache"] == "miss", miss.text
    hit = await chat(clients[1], deployments["plain"], key, prompt=prompt, temperature=0)
    assert hit.status_code == 200 and hit.headers["x-modelport-cache"] == "hit", hit.text
    assert hit.json() == miss.json()
    streamed = await clients[0].post(
        f"/v4/models/{deployments['plain']}/chat-completions",
        json={"chat_history": [], "prompt": prompt, "max_tokens": 5, "temperature": 0, "stream": True},
        headers={"x-api-key": key},
    )
    assert streamed.headers["x-modelport-cache"] == "hit" and '"finish_reason":"stop"' in streamed.text.replace(" ", "")
    # The generation and the two hits: a hit has no tokens and (unpriced) costs nothing.
    records = await written(postgres_url, key_id, 3)
    assert sorted((row["response_tokens"], row["cost"]) for row in records) == [
        (0, 0.0),
        (0, 0.0),
        (5, pytest.approx(PLAIN_COST)),
    ]


async def test_redis_stopped_then_started_again(
    replicas: tuple[list[str], str],
    deployments: dict[str, str],
    clients: list[httpx.AsyncClient],
    own_redis: OwnRedis,
) -> None:
    """rpm_limit fails open, max_budget fails closed (the defaults), nothing hangs, and
    enforcement comes back by itself with Redis."""
    bases = replicas[0]
    _, rpm_key = new_key(bases, rpm_limit=2)
    _, budget_key = new_key(bases, max_budget=100.0)
    assert [(await chat(clients[i % 2], deployments["plain"], rpm_key)).status_code for i in range(3)] == [
        200,
        200,
        429,
    ]
    own_redis.stop()
    try:
        started = time.monotonic()
        open_answers = [(await chat(clients[i % 2], deployments["plain"], rpm_key)).status_code for i in range(4)]
        closed_answers = [await chat(clients[i % 2], deployments["plain"], budget_key) for i in range(2)]
        assert time.monotonic() - started < 10  # each call is bounded by a short timeout
        assert open_answers == [200] * 4
        assert [answer.status_code for answer in closed_answers] == [503, 503]
        assert "max_budget" in closed_answers[0].json()["detail"]
    finally:
        own_redis.start()
    # Back: counting resumes (a fresh Redis: the window starts empty) without a restart.
    deadline = time.monotonic() + 15
    statuses: list[int] = []
    while time.monotonic() < deadline and 429 not in statuses:
        statuses.append((await chat(clients[len(statuses) % 2], deployments["plain"], rpm_key)).status_code)
        await asyncio.sleep(0.1)
    assert 429 in statuses
    assert (await chat(clients[0], deployments["plain"], budget_key)).status_code == 200


def _priced_model(bases: list[str], parameters: dict[str, Any]) -> tuple[str, str]:
    """A new model and its deployment, made on replica a: their ids."""
    with httpx.Client(base_url=bases[0], headers={"x-api-key": E2E_KEY}, timeout=30) as admin:
        model = admin.post(
            "/v4/models",
            json={
                "name": f"repriced-{uuid.uuid4().hex[:8]}",
                "model_type": "CHAT_COMPLETION",
                "model_vendor": "OPENAI",
                "model_creation_parameters": parameters,
            },
        )
        assert model.status_code == 200, model.text
        deployment = admin.post(f"/v4/models/{model.json()['id']}/deployments", json={"name": "repriced"})
        assert deployment.status_code == 200, deployment.text
        return model.json()["id"], deployment.json()["id"]


def _reprice_then_revoke(bases: list[str], model_id: str, parameters: dict[str, Any], key_id: str) -> None:
    """On replica a: the model's prices changed, then a key revoked."""
    with httpx.Client(base_url=bases[0], headers={"x-api-key": E2E_KEY}, timeout=30) as admin:
        repriced = admin.patch(f"/v4/models/{model_id}", json={"model_creation_parameters": parameters})
        assert repriced.status_code == 200, repriced.text
        assert admin.delete(f"/v4/api-keys/{key_id}").status_code == 200


async def test_a_price_change_reaches_the_other_replica_with_a_revocation(
    replicas: tuple[list[str], str], clients: list[httpx.AsyncClient], postgres_url: str
) -> None:
    """A model's prices are catalogue data, like keys: a change on one replica bumps the
    catalogue generation that every replica watches, so the other bills the new price no
    later than it refuses a key revoked after the change."""
    bases, upstream = replicas
    parameters = {"base_url": upstream, "model": "paced-0", "input_cost_per_token": IN_PRICE}
    model_id, deployment = _priced_model(bases, {**parameters, "output_cost_per_token": OUT_PRICE})
    revoked_id, revoked = new_key(bases)
    # Replica b has the deployment, at the old price, and the key in its cache.
    assert (await chat(clients[1], deployment, revoked)).status_code == 200
    _reprice_then_revoke(bases, model_id, {**parameters, "output_cost_per_token": 10 * OUT_PRICE}, revoked_id)
    deadline = time.monotonic() + 20
    while (await chat(clients[1], deployment, revoked)).status_code != 401:
        assert time.monotonic() < deadline, "replica b never saw the revocation"
        await asyncio.sleep(0.1)
    key_id, key = new_key(bases)
    assert (await chat(clients[1], deployment, key)).status_code == 200
    [record] = await written(postgres_url, key_id, 1)
    assert record["cost"] == pytest.approx(10 * IN_PRICE + 5 * 10 * OUT_PRICE)


async def _becomes(client: httpx.AsyncClient, deployment: str, key: str, status: int, detail: str = "") -> None:
    """Poll replica `client` until `key` gets `status` (the replicas watch the catalogue
    every 0.2 s here), with `detail` in the answer where one is given."""
    deadline = time.monotonic() + 20
    while True:
        answer = await chat(client, deployment, key)
        if answer.status_code == status and detail in answer.text:
            return
        assert time.monotonic() < deadline, f"still {answer.status_code}: {answer.text}"
        await asyncio.sleep(0.1)


async def test_a_keys_list_rotation_and_expiry_made_on_one_replica_hold_on_the_other(
    replicas: tuple[list[str], str], deployments: dict[str, str], clients: list[httpx.AsyncClient]
) -> None:
    """Issue 24, items 1 and 2, across replicas: an allow-list, a rotation with a grace and
    one without, and an expiry, each made on replica a, hold on replica b (which had the
    key cached) within its catalogue refresh."""
    bases, upstream = replicas
    _, hidden = _priced_model(bases, {"base_url": upstream, "model": "paced-0"})
    listed = deployments["plain"]
    key_id, key = new_key(bases)
    for deployment in (listed, hidden):
        assert (await chat(clients[1], deployment, key)).status_code == 200
    async with httpx.AsyncClient(base_url=bases[0], headers={"x-api-key": E2E_KEY}, timeout=30) as admin:
        limited = await admin.patch(f"/v4/api-keys/{key_id}", json={"deployments": [listed]})
        assert limited.status_code == 200, limited.text
        await _becomes(clients[1], hidden, key, 404)
        assert (await chat(clients[1], listed, key)).status_code == 200

        graced = await admin.post(f"/v4/api-keys/{key_id}/rotate", json={"grace_seconds": 600})
        assert graced.status_code == 200, graced.text
        second = graced.json()["key"]
        assert (await chat(clients[1], listed, second)).status_code == 200
        assert (await chat(clients[1], listed, key)).status_code == 200  # within its grace
        assert (await chat(clients[1], hidden, second)).status_code == 404  # the list is the key's, kept

        abrupt = await admin.post(f"/v4/api-keys/{key_id}/rotate", json={"grace_seconds": 0})
        assert abrupt.status_code == 200, abrupt.text
        third = abrupt.json()["key"]
        await _becomes(clients[1], listed, second, 401)
        await _becomes(clients[1], listed, key, 401)
        assert (await chat(clients[1], listed, third)).status_code == 200

        soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
        expiring = await admin.patch(f"/v4/api-keys/{key_id}", json={"expires_at": soon})
        assert expiring.status_code == 200, expiring.text
        await _becomes(clients[1], listed, third, 401, "API key expired")


async def test_an_accounts_budget_holds_for_64_requests_from_4_keys_across_replicas(
    replicas: tuple[list[str], str], clients: list[httpx.AsyncClient]
) -> None:
    """An account's budget (issue 24, 3), shared by four keys of its own with no limits,
    met by 64 requests at once on both replicas: its spend ends within one request's
    reservation of the budget, and the refusals name the account's budget."""
    bases, upstream = replicas
    budget = 0.1
    async with httpx.AsyncClient(base_url=bases[0], headers={"x-api-key": E2E_KEY}, timeout=30) as operator:
        created = await operator.post("/accounts", json={"account_name": f"team-{uuid.uuid4().hex[:8]}"})
        account = created.json()["account_id"]
        operator.headers["x-selected-account-id"] = account
        model = await operator.post(
            "/v4/models",
            json={
                "name": "shared-budget",
                "model_type": "CHAT_COMPLETION",
                "model_vendor": "OPENAI",
                "model_creation_parameters": {
                    "base_url": upstream,
                    "model": "paced-0",
                    "input_cost_per_token": IN_PRICE,
                    "output_cost_per_token": OUT_PRICE,
                },
            },
        )
        assert model.status_code == 200, model.text
        deployment = (await operator.post(f"/v4/models/{model.json()['id']}/deployments", json={"name": "d"})).json()
        keys = []
        for _ in range(4):
            key = await operator.post("/v4/api-keys", json={"role": "member"})
            assert key.status_code == 201, key.text
            keys.append(key.json()["key"])
        limits = {"max_budget": budget, "budget_duration": "30d"}
        limited = await operator.patch(f"/v4/accounts/{account}/limits", json=limits)
        assert limited.status_code == 200, limited.text

    burst = await asyncio.gather(*(chat(clients[i % 2], deployment["id"], keys[i % 4]) for i in range(64)))
    assert {answer.status_code for answer in burst} == {200, 429}
    refused = [answer.json()["detail"] for answer in burst if answer.status_code == 429]
    assert all(detail.startswith("account max_budget exceeded") for detail in refused), refused[:3]
    served = sum(answer.status_code == 200 for answer in burst)
    refusals = 0
    while refusals < 2 and served < 40:  # refused twice, half a second apart: settled, spent
        answer = await chat(clients[served % 2], deployment["id"], keys[served % 4])
        if answer.status_code == 429:
            refusals += 1
            await asyncio.sleep(0.5)
        else:
            assert answer.status_code == 200
            served += 1
    assert refusals == 2
    reader = {"x-api-key": E2E_KEY, "x-selected-account-id": account}
    deadline = time.monotonic() + 20  # replicas flush their usage every 0.2 s
    while (spend := (await clients[1].get("/v4/spend", headers=reader)).json())["spend"] < served * PLAIN_COST - 1e-9:
        assert time.monotonic() < deadline, spend
        await asyncio.sleep(0.2)
    assert spend["spend"] == pytest.approx(served * PLAIN_COST)
    assert budget <= spend["spend"] < budget + RESERVATION
    assert spend["budget"]["spent"] == pytest.approx(spend["spend"])
