"""SGP's older top-level routes (issue 26): `POST /v4/chat-completions` and
`POST /v4/completions`, and `models.deployments.execute` for GENERIC models, called
through the SGP SDK with strict response validation, against the real application on
SQLite and PostgreSQL and an upstream answered in-process (which records what it was
sent)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import scale_gp
from fastapi import FastAPI
from scale_gp import AsyncSGPClient
from sqlalchemy import select

from modelport.config import Settings
from modelport.store.tables import UsageRecord
from tests.conftest import ADMIN_KEY, in_process

USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
IN_PRICE, OUT_PRICE = 0.001, 0.002
SENT: list[dict[str, Any]] = []  # the bodies the upstream was sent, oldest first
GENERIC_KEY = "generic-secret-" + "k" * 24


def _sse(events: list[dict[str, Any]]) -> httpx.Response:
    frames = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
    return httpx.Response(200, content=frames.encode(), headers={"content-type": "text/event-stream"})


def _upstream(request: httpx.Request) -> httpx.Response:
    """OpenAI's chat and text completions: "hello", whole or in two pieces."""
    if request.url.host != "upstream.test":
        raise AssertionError(f"modelport followed a redirect to {request.url}")
    body = json.loads(request.content)
    SENT.append(body)
    if request.url.path == "/generic/run":
        seen = {"authorization": request.headers.get("authorization"), "x-team": request.headers.get("x-team")}
        return httpx.Response(200, json={"outputs": [len(body.get("inputs", []))], "seen": seen})
    if request.url.path == "/generic/moved":
        return httpx.Response(302, headers={"location": "http://elsewhere.test/generic/run"})
    text = not request.url.path.endswith("/chat/completions")
    if body.get("stream"):

        def chunk(piece: str, finish: str | None) -> dict[str, Any]:
            delta = {"text": piece} if text else {"delta": {"content": piece}}
            return {"id": "c", "object": "chunk", "created": 0, "model": "up",
                    "choices": [{"index": 0, **delta, "finish_reason": finish}]}  # fmt: skip

        usage = {"id": "c", "object": "chunk", "created": 0, "model": "up", "choices": [], "usage": USAGE}
        return _sse([chunk("hel", None), chunk("lo", None), chunk("", "stop"), usage])
    choice = (
        {"index": 0, "text": "hello", "finish_reason": "stop"}
        if text
        else {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
    )
    return httpx.Response(
        200, json={"id": "c", "object": "x", "created": 0, "model": "up", "choices": [choice], "usage": USAGE}
    )


@pytest.fixture(scope="module")
async def served(database_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = Settings(
        database_url=database_url, api_key=ADMIN_KEY, embedded_engine=False, upstream_attempts=1,
        auth_failures_per_minute=0, usage_flush_seconds=60, secret_key="sgp-top-level-" + "s" * 40,
    )  # fmt: skip
    async with in_process(settings, upstream=httpx.MockTransport(_upstream)) as both:
        yield both


@pytest.fixture
def client(served: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return served[1]


@pytest.fixture
async def sdk(served: tuple[FastAPI, httpx.AsyncClient]) -> AsyncIterator[AsyncSGPClient]:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=served[0]), base_url="http://modelport.test")
    async with http, AsyncSGPClient(
        api_key=ADMIN_KEY, base_url="http://modelport.test", http_client=http, _strict_response_validation=True,
        max_retries=0,
    ) as client:  # fmt: skip
        yield client


async def _model(client: httpx.AsyncClient, model_type: str = "CHAT_COMPLETION") -> tuple[str, str]:
    """(name, deployment id) of a priced OpenAI-compatible model on the upstream above."""
    name = f"top-{uuid.uuid4().hex[:8]}"
    parameters = {"base_url": "http://upstream.test/v1", "model": "up",
                  "input_cost_per_token": IN_PRICE, "output_cost_per_token": OUT_PRICE}  # fmt: skip
    made = await client.post(
        "/v4/models",
        json={"name": name, "model_type": model_type, "model_vendor": "OTHER", "model_creation_parameters": parameters},
    )
    assert made.status_code == 200, made.text
    deployment = await client.post(f"/v4/models/{made.json()['id']}/deployments", json={"name": "d"})
    assert deployment.status_code == 200, deployment.text
    return name, str(deployment.json()["id"])


@pytest.fixture(scope="module")
async def chat_model(served: tuple[FastAPI, httpx.AsyncClient]) -> tuple[str, str]:
    return await _model(served[1])


HISTORY: list[Any] = [
    {"role": "user", "content": "one"},
    {"role": "assistant", "content": "two"},
    {"role": "user", "content": [{"type": "text", "text": "three"}]},
]


async def test_a_chat_is_answered_whole_with_its_parameters_instructions_and_memory(
    served: tuple[FastAPI, httpx.AsyncClient], sdk: AsyncSGPClient, chat_model: tuple[str, str]
) -> None:
    """`chat_completions.create` names a model: the instructions go first as a system
    message, `last_k` keeps the last k messages, the model parameters reach the vendor
    (the SDK's `topP` included), and the answer is the SDK's `ChatCompletionsResponse`
    with its token usage; the call is metered and priced like any other."""
    app, _ = served
    name, deployment = chat_model
    SENT.clear()
    raw = await sdk.chat_completions.with_raw_response.create(
        model=name,  # type: ignore[arg-type]  # the SDK lists SGP's model names; any name is sent
        messages=HISTORY,
        instructions="Answer briefly.",
        memory_strategy={"name": "last_k", "params": {"k": 2}},
        model_parameters={"temperature": 0.5, "max_tokens": 7, "top_p": 0.9, "stop_sequences": ["END"]},
    )
    answer = await raw.parse()
    assert answer.chat_completion.message.role == "assistant"
    assert answer.chat_completion.message.content == "hello"
    assert answer.chat_completion.finish_reason == "stop"
    assert answer.token_usage is not None
    assert (answer.token_usage.total, answer.token_usage.prompt, answer.token_usage.completion) == (17, 12, 5)
    assert float(raw.headers["x-modelport-cost"]) == pytest.approx(12 * IN_PRICE + 5 * OUT_PRICE)
    [sent] = SENT
    assert sent["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
    ]
    assert (sent["temperature"], sent["max_tokens"], sent["top_p"], sent["stop"]) == (0.5, 7, 0.9, ["END"])
    await app.state.usage.flush()
    async with app.state.sessions() as session:
        rows = await session.execute(
            select(UsageRecord.prompt_tokens, UsageRecord.response_tokens).where(
                UsageRecord.deployment_id == deployment
            )
        )
    assert (12, 5) in rows.all()


async def test_a_chat_and_a_completion_stream_as_the_sdk_reads_them(
    client: httpx.AsyncClient, sdk: AsyncSGPClient, chat_model: tuple[str, str]
) -> None:
    """stream=True: the SDK reads each event as a `CompletionResponse` (strictly); the
    pieces join to the answer and the last one carries the finish reason and counts."""
    name, _ = chat_model
    chat = await sdk.chat_completions.create(model=name, messages=HISTORY, stream=True)  # type: ignore[arg-type]
    pieces = [piece async for piece in chat]
    assert "".join(str(piece.completions[0][1][0]) for piece in pieces) == "hello"
    assert (pieces[-1].finish_reason, pieces[-1].prompt_tokens, pieces[-1].response_tokens) == ("stop", 12, 5)
    text_name, _ = await _model(client, "COMPLETION")
    text = await sdk.completions.create(model=text_name, prompt="Say hello", stream=True)
    pieces = [piece async for piece in text]
    assert "".join(str(piece.completions[0][1][0]) for piece in pieces) == "hello"
    assert pieces[-1].finish_reason == "stop"


async def test_a_completion_is_answered_whole(client: httpx.AsyncClient, sdk: AsyncSGPClient) -> None:
    name, _ = await _model(client, "COMPLETION")
    SENT.clear()
    answer = await sdk.completions.create(model=name, prompt="Say hello", model_parameters={"max_tokens": 3})
    assert (answer.completion.text, answer.completion.finish_reason) == ("hello", "stop")
    assert answer.token_usage is not None and answer.token_usage.total == 17
    [sent] = SENT
    assert (sent["prompt"], sent["max_tokens"]) == ("Say hello", 3)


async def test_an_unknown_model_and_one_a_keys_allow_list_hides_are_the_same_404(
    client: httpx.AsyncClient, sdk: AsyncSGPClient, chat_model: tuple[str, str]
) -> None:
    name, _ = chat_model
    other, _ = await _model(client)
    created = await client.post("/v4/api-keys", json={"role": "member", "name": "limited", "models": [name]})
    assert created.status_code == 201, created.text
    limited = {"x-api-key": created.json()["key"]}
    with pytest.raises(scale_gp.NotFoundError):
        await sdk.chat_completions.create(model="no-such-model", messages=HISTORY)  # type: ignore[arg-type]
    unknown = await client.post(
        "/v4/chat-completions", json={"model": "no-such-model", "messages": HISTORY}, headers=limited
    )
    hidden = await client.post("/v4/chat-completions", json={"model": other, "messages": HISTORY}, headers=limited)
    assert unknown.status_code == hidden.status_code == 404, hidden.text
    assert hidden.text.replace(other, "no-such-model") == unknown.text
    hidden_text = await client.post("/v4/completions", json={"model": other, "prompt": "hi"}, headers=limited)
    assert hidden_text.status_code == 404, hidden_text.text
    allowed = await client.post("/v4/chat-completions", json={"model": name, "messages": HISTORY}, headers=limited)
    assert allowed.status_code == 200, allowed.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model_parameters": {"temperature": 5}}, ["model_parameters", "temperature"]),
        ({"model_parameters": {"topK": 0}}, ["model_parameters", "topK"]),
        ({"model_parameters": {"stop_sequences": ["a", "b", "c", "d", "e"]}}, ["model_parameters", "stop_sequences"]),
        ({"memory_strategy": {"name": "last_k", "params": {"k": 0}}}, ["memory_strategy", "params", "k"]),
        ({"memory_strategy": {"name": "summary", "params": {"k": 1}}}, ["memory_strategy", "name"]),
        ({"messages": []}, ["messages"]),
        ({"prompt": "hi"}, ["prompt"]),
    ],
)
async def test_bad_input_is_a_422_naming_the_field(
    client: httpx.AsyncClient, chat_model: tuple[str, str], body: dict[str, Any], field: list[str]
) -> None:
    answer = await client.post("/v4/chat-completions", json={"model": chat_model[0], "messages": HISTORY, **body})
    assert answer.status_code == 422, answer.text
    assert any(error["loc"][-len(field) :] == field for error in answer.json()["errors"]), answer.text


async def test_another_accounts_id_in_the_body_is_refused(
    client: httpx.AsyncClient, chat_model: tuple[str, str]
) -> None:
    """The SDK's body `account_id` is where the call is metered: only the selected account."""
    other = str(uuid.uuid4())
    answer = await client.post("/v4/completions", json={"model": chat_model[0], "prompt": "hi", "account_id": other})
    assert answer.status_code == 403 and other in answer.json()["detail"], answer.text


# --- models.deployments.execute ------------------------------------------------------------


async def _generic(client: httpx.AsyncClient, path: str = "/generic/run") -> tuple[str, str]:
    """(model id, deployment id) of a GENERIC model whose upstream is `path` above, sent
    the account secret `generic` as its credential and a configured header."""
    assert (await client.put("/v4/secrets/generic", json={"value": GENERIC_KEY})).status_code == 200
    parameters = {"base_url": f"http://upstream.test{path}", "model": "up", "api_key_secret": "generic",
                  "headers": {"x-team": "blue"}}  # fmt: skip
    made = await client.post(
        "/v4/models",
        json={"name": f"generic-{uuid.uuid4().hex[:8]}", "model_type": "GENERIC", "model_vendor": "OTHER",
              "model_creation_parameters": parameters},
    )  # fmt: skip
    assert made.status_code == 200, made.text
    deployment = await client.post(f"/v4/models/{made.json()['id']}/deployments", json={"name": "d"})
    assert deployment.status_code == 200, deployment.text
    return str(made.json()["id"]), str(deployment.json()["id"])


async def test_execute_forwards_the_body_to_a_generic_models_upstream_and_meters_it(
    served: tuple[FastAPI, httpx.AsyncClient], sdk: AsyncSGPClient
) -> None:
    """The JSON body goes to the deployment's `base_url` with its configured header and
    the account secret as credential; the upstream's JSON comes back (the credential it
    echoed removed), and the call is one request of no tokens in the usage records."""
    app, client = served
    model, deployment = await _generic(client)
    SENT.clear()
    answer = await sdk.models.deployments.execute(deployment, model_instance_id=model, extra_body={"inputs": [1, 2]})
    assert answer == {"outputs": [2], "seen": {"authorization": "Bearer [redacted]", "x-team": "blue"}}
    assert SENT == [{"inputs": [1, 2]}]
    await app.state.usage.flush()
    async with app.state.sessions() as session:
        rows = await session.execute(
            select(UsageRecord.prompt_tokens, UsageRecord.response_tokens, UsageRecord.status).where(
                UsageRecord.deployment_id == deployment
            )
        )
    assert rows.all() == [(0, 0, 200)]


async def test_execute_refuses_other_models_streams_other_models_deployments_and_redirects(
    client: httpx.AsyncClient, chat_model: tuple[str, str]
) -> None:
    model, deployment = await _generic(client)
    listed = await client.get("/v4/model-deployments", params={"limit": 1000})
    [chat_model_id] = [d["model_instance_id"] for d in listed.json()["items"] if d["id"] == chat_model[1]]
    not_generic = await client.post(f"/v4/models/{chat_model_id}/deployments/{chat_model[1]}/execute", json={})
    assert not_generic.status_code == 400 and "execute is for GENERIC models" in not_generic.text
    elsewhere = await client.post(f"/v4/models/{chat_model_id}/deployments/{deployment}/execute", json={})
    assert elsewhere.status_code == 404, elsewhere.text
    streamed = await client.post(f"/v4/models/{model}/deployments/{deployment}/execute", json={"stream": True})
    assert streamed.status_code == 400 and "stream" in streamed.text
    not_an_object = await client.post(f"/v4/models/{model}/deployments/{deployment}/execute", json=[1])
    assert not_an_object.status_code == 422, not_an_object.text
    moved_model, moved = await _generic(client, "/generic/moved")
    redirected = await client.post(f"/v4/models/{moved_model}/deployments/{moved}/execute", json={})
    assert redirected.status_code == 502, redirected.text
