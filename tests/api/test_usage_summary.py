"""GET /v4/usage-summary: requests, failures, tokens, spend and latency percentiles per
deployment and per key, on SQLite and PostgreSQL, read back against the stored records."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from modelport.api.app import create_app
from modelport.config import Settings
from modelport.generation import UsageEvent
from modelport.store.tables import UsageRecord
from tests.conftest import ADMIN_KEY, own_database

PRICE_IN = 0.001
PRICE_OUT = 0.002


def _upstream(request: httpx.Request) -> httpx.Response:
    """An OpenAI-compatible server; under /broken/ it fails every call."""
    if "/broken/" in request.url.path:
        return httpx.Response(500, json={"error": {"message": "upstream is down"}})
    body = json.loads(request.content)
    prompt_tokens = 3 + len(body["messages"][-1]["content"])  # differs per request
    return httpx.Response(
        200,
        json={
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 2, "total_tokens": prompt_tokens + 2},
        },
    )


@pytest.fixture(scope="module")
async def served(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    # A database of the module's own: the tests count the operator key's usage exactly,
    # which other modules' requests on the session's shared database would add to.
    kind = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    async with own_database(kind, tmp_path_factory.mktemp("usage-summary"), "modelport_usage") as url:
        settings = Settings(database_url=url, api_key=ADMIN_KEY, embedded_engine=False, upstream_attempts=1)
        application = create_app(settings, upstream_transport=httpx.MockTransport(_upstream))
        async with (
            application.router.lifespan_context(application),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=application),
                base_url="http://modelport.test",
                headers={"x-api-key": ADMIN_KEY},
            ) as client,
        ):
            yield application, client


def _around_now() -> dict[str, str]:
    now = datetime.now(UTC)
    return {"start_date": (now - timedelta(hours=1)).isoformat(), "end_date": (now + timedelta(hours=1)).isoformat()}


async def _deployment(client: httpx.AsyncClient, base_url: str) -> str:
    model = await client.post(
        "/v4/models",
        json={
            "name": f"summarised-{uuid.uuid4().hex[:8]}",
            "model_type": "CHAT_COMPLETION",
            "model_vendor": "OPENAI",
            "model_creation_parameters": {
                "base_url": base_url,
                "model": "m",
                "input_cost_per_token": PRICE_IN,
                "output_cost_per_token": PRICE_OUT,
            },
        },
    )
    assert model.status_code == 200, model.text
    deployment = await client.post(f"/v4/models/{model.json()['id']}/deployments", json={"name": "d"})
    assert deployment.status_code == 200, deployment.text
    return str(deployment.json()["id"])


async def _key(client: httpx.AsyncClient, role: str) -> tuple[str, str]:
    created = await client.post("/v4/api-keys", json={"name": f"{role}-{uuid.uuid4().hex[:6]}", "role": role})
    assert created.status_code == 201, created.text
    return str(created.json()["id"]), str(created.json()["key"])


def _nearest_rank(latencies: list[int], percentile: int) -> int:
    ordered = sorted(latencies)
    return ordered[math.ceil(percentile * len(ordered) / 100) - 1]


def _expected(records: list[UsageRecord]) -> dict[str, Any]:
    """What the summary must say of these records, computed here in Python."""
    succeeded = [record.latency_ms for record in records if record.status < 400]
    return {
        "requests": len(records),
        "failures": sum(1 for record in records if record.status >= 400),
        "prompt_tokens": sum(record.prompt_tokens for record in records),
        "response_tokens": sum(record.response_tokens for record in records),
        "spend": pytest.approx(sum(record.cost for record in records)),
        "latency_ms": {f"p{p}": _nearest_rank(succeeded, p) for p in (50, 95, 99)} if succeeded else None,
    }


async def test_real_requests_are_summed_per_deployment_and_key_as_they_were_stored(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = served
    working = await _deployment(client, "http://upstream.test/v1")
    broken = await _deployment(client, "http://upstream.test/broken/v1")
    admin_id, admin_key = await _key(client, "admin")
    member_id, member_key = await _key(client, "member")
    calls = [(admin_key, working)] * 4 + [(member_key, working)] * 3 + [(member_key, broken)] * 2
    statuses = []
    for index, (key, deployment) in enumerate(calls):
        answer = await client.post(
            f"/v4/models/{deployment}/chat-completions",
            headers={"x-api-key": key},
            json={"prompt": "x" * index, "chat_history": []},
        )
        statuses.append(answer.status_code)
    assert statuses[:7] == [200] * 7 and all(status >= 500 for status in statuses[7:]), statuses

    summary = await client.get("/v4/usage-summary", params=_around_now())  # the operator's: every key
    assert summary.status_code == 200, summary.text
    report = summary.json()
    async with app.state.sessions() as session:
        stored = list(
            await session.scalars(select(UsageRecord).where(UsageRecord.deployment_id.in_([working, broken])))
        )
    assert len(stored) == len(calls)
    for deployment in (working, broken):
        assert report["by_deployment"][deployment] == _expected([r for r in stored if r.deployment_id == deployment])
    for key_id in (admin_id, member_id):
        assert report["by_key"][key_id] == _expected([r for r in stored if r.key_id == key_id])
    assert report["by_deployment"][working]["failures"] == 0
    assert report["by_deployment"][working]["spend"] > 0
    assert report["by_deployment"][broken]["failures"] == 2
    assert report["by_deployment"][broken]["latency_ms"] is None  # nothing succeeded there


async def test_latency_percentiles_are_nearest_rank_over_the_successful_requests(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = served
    _, key = await _key(client, "member")
    principal = await app.state.catalogue.access.principal(key, None)
    busy, quiet = str(uuid.uuid4()), str(uuid.uuid4())
    latencies = list(range(1, 101))
    random.Random(7).shuffle(latencies)
    for latency in latencies:
        app.state.usage.record(UsageEvent(principal, busy, 2, 3, 200, latency + 0.4, cost=0.5))
    for status in (500, 499, 429):  # failures: counted, but their latency is no answer's
        app.state.usage.record(UsageEvent(principal, busy, 2, 0, status, 60_000))
    for latency in (9, 7):
        app.state.usage.record(UsageEvent(principal, quiet, 1, 1, 200, latency))

    report = (await client.get("/v4/usage-summary", params=_around_now())).json()

    assert report["by_deployment"][busy] == {
        "requests": 103,
        "failures": 3,
        "prompt_tokens": 206,
        "response_tokens": 300,
        "spend": 50.0,
        "latency_ms": {"p50": 50, "p95": 95, "p99": 99},
    }
    # Two answers: the median is the faster one, p95 and p99 the slower.
    assert report["by_deployment"][quiet]["latency_ms"] == {"p50": 7, "p95": 9, "p99": 9}
    assert report["by_key"][principal.key_id]["requests"] == 105


async def test_an_admin_sees_the_keys_it_may_list_and_the_rest_summed(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = served
    admin_id, admin_key = await _key(client, "admin")  # a service account: not an operator
    _, member_key = await _key(client, "member")
    operator = await app.state.catalogue.access.principal(ADMIN_KEY, None)
    member = await app.state.catalogue.access.principal(member_key, None)
    deployment = str(uuid.uuid4())
    app.state.usage.record(UsageEvent(operator, deployment, 5, 5, 200, 40, cost=1.0))
    app.state.usage.record(UsageEvent(operator, deployment, 5, 5, 200, 80, cost=1.0))
    app.state.usage.record(UsageEvent(member, deployment, 1, 1, 200, 10, cost=0.25))
    elsewhere = dataclasses.replace(member, account_id=str(uuid.uuid4()))
    app.state.usage.record(UsageEvent(elsewhere, deployment, 100, 100, 200, 5, cost=99.0))  # another account's

    refused = await client.get("/v4/usage-summary", params=_around_now(), headers={"x-api-key": member_key})
    assert refused.status_code == 403

    seen = await client.get("/v4/usage-summary", params=_around_now(), headers={"x-api-key": admin_key})
    assert seen.status_code == 200, seen.text
    report = seen.json()
    assert report["by_deployment"][deployment]["requests"] == 3  # not the other account's record
    assert report["by_deployment"][deployment]["spend"] == pytest.approx(2.25)
    assert member.key_id in report["by_key"]
    assert operator.key_id not in report["by_key"]  # the operator's key is not this admin's to list
    # Only this test calls with the operator's key: its two requests, summed anonymously.
    others = report["by_key"]["other keys"]
    assert others == {
        "requests": 2,
        "failures": 0,
        "prompt_tokens": 10,
        "response_tokens": 10,
        "spend": 2.0,
        "latency_ms": {"p50": 40, "p95": 80, "p99": 80},
    }
    assert admin_id not in report["by_key"]  # it made no requests
    for field in ("requests", "failures", "prompt_tokens", "response_tokens"):
        assert sum(group[field] for group in report["by_key"].values()) == sum(
            group[field] for group in report["by_deployment"].values()
        )
    assert sum(group["spend"] for group in report["by_key"].values()) == pytest.approx(
        sum(group["spend"] for group in report["by_deployment"].values())
    )


async def test_the_period_bounds_the_summary(served: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = served
    _, key = await _key(client, "member")
    principal = await app.state.catalogue.access.principal(key, None)
    deployment = str(uuid.uuid4())
    app.state.usage.record(UsageEvent(principal, deployment, 1, 1, 200, 3))
    now = datetime.now(UTC)
    earlier = {"start_date": (now - timedelta(days=2)).isoformat(), "end_date": (now - timedelta(days=1)).isoformat()}
    assert deployment not in (await client.get("/v4/usage-summary", params=earlier)).json()["by_deployment"]
    assert deployment in (await client.get("/v4/usage-summary", params=_around_now())).json()["by_deployment"]
    backwards = {"start_date": earlier["end_date"], "end_date": earlier["start_date"]}
    assert (await client.get("/v4/usage-summary", params=backwards)).status_code == 422
    assert (await client.get("/v4/usage-summary", params={"end_date": now.isoformat()})).status_code == 422
