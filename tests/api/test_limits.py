"""Limits, budgets and spend through the real application (SQLite and PostgreSQL), with
an OpenAI-compatible upstream answered in-process and a test clock for budget windows."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from modelport.api.app import create_app
from modelport.config import Settings
from modelport.generation import UsageEvent
from modelport.principal import Principal
from modelport.store.tables import UsageRecord
from tests.conftest import ADMIN_KEY

IN_PRICE, OUT_PRICE = 0.001, 0.002
# The upstream reports 10 prompt and 5 completion tokens for every answer.
REAL_COST = 10 * IN_PRICE + 5 * OUT_PRICE


EMBEDDING_TOKENS = 7  # the upstream's usage for every embeddings call


# A chat template that writes 31,200 bytes of text around the messages: 7,800 tokens at
# the fake upstreams' four bytes a token (issue 21: a $0.001 budget spent $0.1248 so).
HEAVY_TEMPLATE = "{{ 'lorem ipsum ' * 2600 }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
HEAVY_PROMPT = "lorem ipsum " * 2600 + "hi"
HEAVY_PROMPT_TOKENS = len(HEAVY_PROMPT) // 4


def _answer(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    if request.url.path.endswith("/completions-sync"):  # LLM Engine v1: the gateway rendered the prompt
        output = {"text": "hello", "num_prompt_tokens": len(body["prompt"]) // 4, "num_completion_tokens": 5}
        return httpx.Response(200, json={"output": output})
    # A vLLM server renders a chat_template it is sent.
    prompt_tokens = HEAVY_PROMPT_TOKENS if body.get("chat_template") == HEAVY_TEMPLATE else 10
    if request.url.path.endswith("/embeddings"):
        vectors = [
            {"object": "embedding", "index": index, "embedding": [0.6, 0.8]} for index in range(len(body["input"]))
        ]
        usage = {"prompt_tokens": EMBEDDING_TOKENS, "total_tokens": EMBEDDING_TOKENS}
        return httpx.Response(200, json={"object": "list", "data": vectors, "model": "e", "usage": usage})
    if body.get("stream"):
        chunk = {"choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}]}
        last = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        usage = {"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
        events = [chunk] * 5 + [last, usage]
        stream = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream.encode())
    return httpx.Response(
        200,
        json={
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 5, "total_tokens": prompt_tokens + 5},
        },
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
async def limited(database_url: str, clock: FakeClock) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = Settings(
        database_url=database_url,
        api_key=ADMIN_KEY,
        embedded_engine=False,
        upstream_attempts=1,
        usage_flush_seconds=60,  # flushed by the tests, when they need the records
    )
    application = create_app(settings, upstream_transport=httpx.MockTransport(_answer), limits_clock=clock)
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://modelport.test",
            headers={"x-api-key": ADMIN_KEY},
        ) as client,
    ):
        yield application, client


async def _deployment(client: httpx.AsyncClient, **deployment_parameters: Any) -> str:
    model = await client.post(
        "/v4/models",
        json={
            # Model names are unique in an account (409): one model per deployment here.
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
    deployment = await client.post(
        f"/v4/models/{model.json()['id']}/deployments",
        json={"name": "d", "model_creation_parameters": deployment_parameters or None},
    )
    assert deployment.status_code == 200, deployment.text
    return str(deployment.json()["id"])


async def _key(client: httpx.AsyncClient, **limits: Any) -> tuple[str, str]:
    created = await client.post("/v4/api-keys", json={"role": "member", "name": "limited", **limits})
    assert created.status_code == 201, created.text
    for name, value in limits.items():
        assert created.json()[name] == value
    return created.json()["id"], created.json()["key"]


def _chat(client: httpx.AsyncClient, deployment: str, key: str, **body: Any) -> Any:
    return client.post(
        f"/v4/models/{deployment}/chat-completions",
        json={"chat_history": [], "prompt": "hi", "max_tokens": 5, **body},
        headers={"x-api-key": key},
    )


async def _settled(app: FastAPI) -> None:
    await app.state.limits.drain()
    await app.state.usage.flush()


async def test_rpm_answers_429_naming_the_limit_with_retry_after(limited: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = limited
    deployment = await _deployment(client)
    _, key = await _key(client, rpm_limit=3)
    remaining = []
    for _ in range(3):
        answer = await _chat(client, deployment, key)
        assert answer.status_code == 200, answer.text
        remaining.append(answer.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["2", "1", "0"]
    refused = await _chat(client, deployment, key)
    assert refused.status_code == 429
    assert "rpm_limit" in refused.json()["detail"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # A key without limits is not counted and gets no x-ratelimit headers.
    free = await _chat(client, deployment, ADMIN_KEY)
    assert free.status_code == 200 and "x-ratelimit-remaining-requests" not in free.headers


async def test_tpm_and_its_header(limited: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = limited
    deployment = await _deployment(client)
    _, key = await _key(client, tpm_limit=100)
    first = await _chat(client, deployment, key, max_tokens=40)
    assert first.status_code == 200
    # Reserved: 2 prompt bytes + 16 per message of overhead + 40 max_tokens = 58.
    assert first.headers["x-ratelimit-remaining-tokens"] == "42"
    await _settled(app)  # really 15 tokens
    second = await _chat(client, deployment, key, max_tokens=100)
    assert second.headers["x-ratelimit-remaining-tokens"] == "0"  # 15 + 116 reserved
    refused = await _chat(client, deployment, key)
    assert refused.status_code == 429 and "tpm_limit" in refused.json()["detail"]


async def test_deployment_rpm_limit_protects_the_upstream(limited: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = limited
    deployment = await _deployment(client, rpm_limit=2)
    _, one = await _key(client)
    _, other = await _key(client)
    assert (await _chat(client, deployment, one)).status_code == 200
    assert (await _chat(client, deployment, other)).status_code == 200
    refused = await _chat(client, deployment, ADMIN_KEY)
    assert refused.status_code == 429
    assert refused.json()["detail"].startswith("deployment rpm_limit exceeded")


async def test_budget_stops_the_key_then_resets_after_its_duration(
    limited: tuple[FastAPI, httpx.AsyncClient], clock: FakeClock
) -> None:
    app, client = limited
    deployment = await _deployment(client)
    budget = 0.05
    _, key = await _key(client, max_budget=budget, budget_duration="1h")
    clock.now = time.time()  # the key's budget windows count from its creation
    served = 0
    while True:
        answer = await _chat(client, deployment, key)
        if answer.status_code != 200:
            break
        served += 1
        await _settled(app)
    assert answer.status_code == 429 and "max_budget" in answer.json()["detail"]
    # Admitted while spend < budget: 0, 0.02, 0.04 -> three requests, spend 0.06, under
    # the bound (budget + one request's reservation).
    assert served == 3
    clock.now += 1800
    assert (await _chat(client, deployment, key)).status_code == 429
    clock.now += 1800
    assert (await _chat(client, deployment, key)).status_code == 200


async def test_keys_take_limits_on_patch_and_show_spend(limited: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = limited
    deployment = await _deployment(client)
    key_id, key = await _key(client)
    for stream in (False, True):
        answer = await _chat(client, deployment, key, stream=stream)
        assert answer.status_code == 200
    patched = await client.patch(f"/v4/api-keys/{key_id}", json={"rpm_limit": 1, "max_budget": 5})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["rpm_limit"], patched.json()["max_budget"]) == (1, 5)
    assert (await _chat(client, deployment, key)).status_code == 200
    assert (await _chat(client, deployment, key)).status_code == 429
    cleared = await client.patch(f"/v4/api-keys/{key_id}", json={"rpm_limit": None})
    assert cleared.json()["rpm_limit"] is None and cleared.json()["max_budget"] == 5
    bad = await client.patch(f"/v4/api-keys/{key_id}", json={"budget_duration": "soon"})
    assert bad.status_code == 422 and "budget_duration" in bad.text
    assert (await client.patch(f"/v4/api-keys/{key_id}", json={"rpm_limit": -1})).status_code == 422
    assert (await client.patch("/v4/api-keys/no-such-key", json={"rpm_limit": 1})).status_code == 404

    await _settled(app)
    async with app.state.sessions() as session:
        records = (await session.execute(select(UsageRecord).where(UsageRecord.key_id == key_id))).scalars().all()
    # Three served (one streamed); a refused request never reached a vendor: no record.
    assert [record.status for record in records] == [200, 200, 200]
    assert sum(record.cost for record in records) == pytest.approx(3 * REAL_COST)
    listed = {item["id"]: item for item in (await client.get("/v4/api-keys")).json()}
    assert listed[key_id]["spend"] == pytest.approx(3 * REAL_COST)
    report = (await client.get("/v4/spend")).json()
    assert report["by_key"][key_id] == pytest.approx(3 * REAL_COST)
    assert report["by_deployment"][deployment] == pytest.approx(3 * REAL_COST)
    assert report["spend"] == pytest.approx(sum(report["by_deployment"].values()))
    member = await client.get("/v4/spend", headers={"x-api-key": key})
    assert member.status_code == 403


async def test_a_retried_flush_never_counts_twice(limited: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, _ = limited
    usage = app.state.usage
    principal = Principal(identity_id="i", identity_type="user", account_id="a", role="admin", key_id="retried")
    usage.record(
        UsageEvent(principal, "d", 1, 2, 200, 1.0, cost=0.5, request_id="11111111-2222-3333-4444-555555555555")
    )
    batch = list(usage._pending)
    await usage.flush()
    usage._pending[:0] = batch  # as after a commit whose reply was lost: written again
    await usage.flush()
    async with app.state.sessions() as session:
        count = await session.scalar(select(func.count()).where(UsageRecord.key_id == "retried"))
    assert count == 1


async def test_embeddings_pass_the_same_limits_and_are_billed(limited: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = limited
    model = await client.post(
        "/v4/models",
        json={
            "name": f"priced-embedder-{uuid.uuid4().hex[:8]}",
            "model_type": "EMBEDDING",
            "model_vendor": "OPENAI",
            "model_creation_parameters": {
                "base_url": "http://upstream.test/v1",
                "model": "e",
                "input_cost_per_token": IN_PRICE,
            },
        },
    )
    assert model.status_code == 200, model.text
    deployment = (await client.post(f"/v4/models/{model.json()['id']}/deployments", json={"name": "e"})).json()["id"]
    key_id, key = await _key(client, rpm_limit=2)
    path = f"/v4/models/{deployment}/embeddings"
    for _ in range(2):
        answer = await client.post(path, json={"texts": ["a", "b"]}, headers={"x-api-key": key})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"embeddings": [[0.6, 0.8], [0.6, 0.8]], "tokens_used": EMBEDDING_TOKENS}
    refused = await client.post(path, json={"texts": ["a"]}, headers={"x-api-key": key})
    assert refused.status_code == 429 and "rpm_limit" in refused.json()["detail"]
    await _settled(app)
    async with app.state.sessions() as session:
        records = (await session.execute(select(UsageRecord).where(UsageRecord.key_id == key_id))).scalars().all()
    assert [record.prompt_tokens for record in records] == [EMBEDDING_TOKENS, EMBEDDING_TOKENS]
    assert sum(record.cost for record in records) == pytest.approx(2 * EMBEDDING_TOKENS * IN_PRICE)


TEMPLATE_PRICE = 1e-6  # per token, in and out: $0.0078 a heavy request, 1.3 requests' worth of budget


@pytest.mark.parametrize("rendered_by", ["gateway", "upstream"])
async def test_sixteen_template_heavy_requests_keep_spend_within_the_budget_bound(
    limited: tuple[FastAPI, httpx.AsyncClient], rendered_by: str
) -> None:
    """spend < budget + one request's reservation (limits/base.py), when what makes the
    prompt large is a chat template: rendered here (an LLM Engine v1 deployment's
    template) or by the upstream (a request's template, passed to a vLLM server)."""
    app, client = limited
    common = {"input_cost_per_token": TEMPLATE_PRICE, "output_cost_per_token": TEMPLATE_PRICE}
    if rendered_by == "gateway":
        parameters = {"base_url": "http://upstream.test", "model": "ep", "protocol": "llmengine-v1"}
        parameters["chat_template"] = HEAVY_TEMPLATE
        body: dict[str, Any] = {}
    else:
        parameters = {"base_url": "http://upstream.test/v1", "model": "m"}
        body = {"chat_template": HEAVY_TEMPLATE}
    model = await client.post(
        "/v4/models",
        json={
            "name": f"templated-{uuid.uuid4().hex[:8]}",
            "model_type": "CHAT_COMPLETION",
            "model_vendor": "LLMENGINE",
            "model_creation_parameters": {**parameters, **common},
        },
    )
    assert model.status_code == 200, model.text
    deployment = await client.post(f"/v4/models/{model.json()['id']}/deployments", json={"name": "d"})
    assert deployment.status_code == 200, deployment.text
    budget = 0.001
    key_id, key = await _key(client, max_budget=budget)

    answers = await asyncio.gather(*(_chat(client, deployment.json()["id"], key, **body) for _ in range(16)))

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses[0] == 200 and set(statuses) <= {200, 429}, [answer.text for answer in answers]
    assert all("max_budget" in answer.json()["detail"] for answer in answers if answer.status_code == 429)
    await _settled(app)
    async with app.state.sessions() as session:
        records = (await session.execute(select(UsageRecord).where(UsageRecord.key_id == key_id))).scalars().all()
    # Those refused once their prompt was rendered are recorded, at no cost.
    assert {record.prompt_tokens for record in records if record.status == 200} == {HEAVY_PROMPT_TOKENS}
    assert all(record.cost == 0 for record in records if record.status != 200)
    spend = sum(record.cost for record in records)
    # One request reserves at most its rendered prompt at a token a byte, with template
    # overhead, and its max_tokens: $0.031. Before, each reserved its 2 message bytes, all
    # 16 were served and spent $0.125.
    one_reservation = (len(HEAVY_PROMPT) + 64) * TEMPLATE_PRICE + 5 * TEMPLATE_PRICE
    assert spend < budget + one_reservation
