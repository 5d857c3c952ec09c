"""The compatible surfaces through the ASGI app, on SQLite and PostgreSQL: Bearer auth on
every route, account isolation of `model` names, and the vendors' error shapes."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest
from fastapi import FastAPI

from tests.conftest import ADMIN_KEY, CHAT_DEPLOYMENT

MODEL = "smollm2-135m-instruct"
HELLO = [{"role": "user", "content": "Hi"}]


async def test_a_bearer_key_works_on_every_route(client: httpx.AsyncClient) -> None:
    """Every operation the OpenAPI document says authenticates takes `Authorization:
    Bearer` as well as `x-api-key`: with the admin key it is never a 401 (a made-up id is
    a 404, an empty body a 4xx of its own), with a wrong one always."""
    bearer = {"x-api-key": "", "authorization": f"Bearer {ADMIN_KEY}"}
    wrong_bearer = {"x-api-key": "", "authorization": "Bearer mp_not_a_key_at_all_0000000000"}
    document = (await client.get("/openapi.json")).json()
    checked = 0
    for path, operations in document["paths"].items():
        url = re.sub(r"\{[^}]+\}", "00000000-0000-0000-0000-000000000000", path)
        for method, operation in operations.items():
            if not operation.get("security"):
                continue
            body = {} if method in ("post", "put", "patch") else None
            answered = await client.request(method.upper(), url, json=body, headers=bearer)
            assert answered.status_code != 401, f"{method.upper()} {path}: {answered.text}"
            refused = await client.request(method.upper(), url, json=body, headers=wrong_bearer)
            assert refused.status_code == 401, f"{method.upper()} {path} took a wrong key: {refused.status_code}"
            checked += 1
    assert checked >= 40  # the document lists them all (v4, /v1, /v1/messages, /v1/responses)
    assert (await client.get("/v4/models", headers=bearer)).status_code == 200
    assert (await client.get("/v1/models", headers=bearer)).status_code == 200
    wrong = await client.get("/v1/models", headers={"x-api-key": "", "authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json() == {
        "error": {
            "message": "invalid API key",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    basic = await client.get("/v4/models", headers={"x-api-key": "", "authorization": f"Basic {ADMIN_KEY}"})
    assert basic.status_code == 401 and "detail" in basic.json()  # v4 keeps its own error shape


async def test_a_model_of_another_account_is_not_found(client: httpx.AsyncClient) -> None:
    account = (await client.post("/accounts", json={"account_name": f"elsewhere-{uuid.uuid4().hex[:8]}"})).json()[
        "account_id"
    ]
    elsewhere = {"x-selected-account-id": account}
    assert (await client.get("/v1/models", headers=elsewhere)).json() == {"object": "list", "data": []}
    [deployment] = [
        d for d in (await client.get("/v4/model-deployments")).json()["items"] if d["name"] == CHAT_DEPLOYMENT
    ]
    for name in (MODEL, f"llmengine/{MODEL}", deployment["id"]):
        answer = await client.post(
            "/v1/chat/completions", json={"model": name, "messages": HELLO, "max_tokens": 2}, headers=elsewhere
        )
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["type"] == "invalid_request_error"
        anthropic = await client.post(
            "/v1/messages", json={"model": name, "messages": HELLO, "max_tokens": 2}, headers=elsewhere
        )
        assert anthropic.status_code == 404
        assert anthropic.json()["type"] == "error" and anthropic.json()["error"]["type"] == "not_found_error"


async def test_validation_errors_are_400_naming_the_parameter(client: httpx.AsyncClient) -> None:
    cases = [
        ({"model": MODEL, "messages": HELLO, "top_logprobs": 2}, None),
        # The embedded engine takes more than 4 stop sequences, up to the surface's bound.
        ({"model": MODEL, "messages": HELLO, "stop": [f"s{index}" for index in range(65)]}, "stop"),
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": MODEL, "messages": HELLO, "n": 129}, "n"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages.0"),
    ]
    for body, param in cases:
        answer = await client.post("/v1/chat/completions", json=body)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["type"] == "invalid_request_error"
        if param is not None:
            assert error["param"] == param, error
    not_json = await client.post("/v1/messages", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and not_json.json()["error"]["type"] == "invalid_request_error"


async def test_images_are_refused_by_a_model_that_cannot_see(client: httpx.AsyncClient) -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
    ]
    answer = await client.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": content}]}
    )
    assert answer.status_code == 400 and "images" in answer.json()["error"]["message"]


async def test_usage_is_recorded_for_the_deployment_that_answered(app: FastAPI, client: httpx.AsyncClient) -> None:
    [deployment] = [
        d for d in (await client.get("/v4/model-deployments")).json()["items"] if d["name"] == CHAT_DEPLOYMENT
    ]
    answer = await client.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": HELLO, "max_tokens": 3, "temperature": 0}
    )
    assert answer.status_code == 200, answer.text
    usage = answer.json()["usage"]
    await app.state.usage.flush()
    now = datetime.now(UTC)
    window = {"start_date": (now - timedelta(hours=1)).isoformat(), "end_date": (now + timedelta(hours=1)).isoformat()}
    statistics = await client.get(
        f"/v4/model-deployments/{deployment['id']}/usage-statistics", params={**window, "chunks": 1}
    )
    assert statistics.status_code == 200, statistics.text
    [chunk] = statistics.json()["data"]
    assert chunk["prompt_tokens"] >= usage["prompt_tokens"] and chunk["response_tokens"] >= usage["completion_tokens"]


async def test_refusals_before_any_route_come_in_the_vendors_shape(client: httpx.AsyncClient) -> None:
    too_large = await client.post("/v1/chat/completions", content=b"x" * (300 * 1024))
    assert too_large.status_code == 413 and too_large.json()["error"]["type"] == "invalid_request_error"
    not_json = await client.post("/v1/messages", content=b"<x/>", headers={"content-type": "application/xml"})
    assert not_json.status_code == 415 and not_json.json()["type"] == "error"
    v4 = await client.post(
        "/v4/models/x/chat-completions", content=b"<x/>", headers={"content-type": "application/xml"}
    )
    assert v4.status_code == 415 and "detail" in v4.json()


async def test_a_model_without_any_deployment_is_400_not_503(client: httpx.AsyncClient) -> None:
    """No retry can help a model that has no deployment at all: a client error naming
    `model`, where one whose deployments are still loading is a 503."""
    name = f"empty-{uuid.uuid4().hex[:8]}"
    model = {"name": name, "model_type": "EMBEDDING", "model_vendor": "OPENAI",
             "model_creation_parameters": {"model": "text-embedding-3-small"}}  # fmt: skip
    made = await client.post("/v4/models", json=model)
    assert made.status_code == 200, made.text
    answer = await client.post("/v1/embeddings", json={"model": name, "input": "hello"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "model" and "no deployment" in answer.json()["error"]["message"]


async def test_a_deployment_id_is_a_model_and_an_unknown_route_answers_in_the_surfaces_shape(
    app: FastAPI, client: httpx.AsyncClient, deployment_id: str
) -> None:
    """`models.retrieve(deployment_id)` works, as the id works as a `model` (issue 26), and
    a route modelport does not serve is a 404 in OpenAI's shape under /v1, Anthropic's
    under /v1/messages, SGP's elsewhere."""
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://modelport.test")
    async with (
        http,
        openai.AsyncOpenAI(
            api_key=ADMIN_KEY, base_url="http://modelport.test/v1", http_client=http, _strict_response_validation=True
        ) as sdk,
    ):
        card = await sdk.models.retrieve(deployment_id)
        assert (card.id, card.owned_by) == (deployment_id, "llmengine")
        with pytest.raises(openai.NotFoundError, match="no such route: POST /v1/audio/speech"):
            await sdk.audio.speech.create(model=MODEL, voice="alloy", input="hi")
    anthropic_shaped = await client.post("/v1/messages/nothing/results")
    assert anthropic_shaped.status_code == 404 and anthropic_shaped.json()["type"] == "error"
    assert (await client.get("/v4/nothing")).json() == {"detail": "no such route: GET /v4/nothing"}
