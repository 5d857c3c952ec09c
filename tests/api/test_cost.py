"""What a call cost, on the answer itself (issue 24, 7): the `x-modelport-cost` header on
every whole answer and `usage.cost` where a surface has a usage object (OpenAI's chat,
completions and embeddings, the Responses API, translated and passed through), equal to
the cost recorded for the call and shown by `/v4/spend`. Through the real application
on SQLite, with an upstream answered in-process with fixed counts."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from modelport.store.tables import UsageRecord
from tests.conftest import in_process, sqlite_settings

IN_PRICE, OUT_PRICE, CACHE_READ_PRICE = 1e-6, 3e-6, 1e-7
# Every chat answer: 12 prompt tokens, 4 of them read from the upstream's cache, 5 generated.
CHAT_USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
              "prompt_tokens_details": {"cached_tokens": 4}}  # fmt: skip
CHAT_COST = 8 * IN_PRICE + 4 * CACHE_READ_PRICE + 5 * OUT_PRICE
RESPONSES_USAGE = {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 7,
                   "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 27}  # fmt: skip
RELAYED_COST = 20 * IN_PRICE + 7 * OUT_PRICE
EMBEDDING_TOKENS = 9


def _sse(events: list[dict[str, Any]], *, named: bool = False) -> httpx.Response:
    frames = "".join(
        (f"event: {event['type']}\n" if named else "") + f"data: {json.dumps(event)}\n\n" for event in events
    )
    if not named:
        frames += "data: [DONE]\n\n"
    return httpx.Response(200, content=frames.encode(), headers={"content-type": "text/event-stream"})


def _response_object(status: str) -> dict[str, Any]:
    message = {"id": "msg_up", "type": "message", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": "hello", "annotations": []}]}  # fmt: skip
    return {"id": "resp_up", "object": "response", "created_at": 0, "status": status, "model": "up",
            "output": [message] if status == "completed" else [], "tools": [], "parallel_tool_calls": True,
            "tool_choice": "auto", "usage": RESPONSES_USAGE if status == "completed" else None}  # fmt: skip


def _upstream(request: httpx.Request) -> httpx.Response:
    """OpenAI's answers, whole or streamed, with the fixed counts above."""
    body = json.loads(request.content)
    path = request.url.path
    if path.endswith("/embeddings"):
        data = [{"object": "embedding", "index": i, "embedding": [0.6, 0.8]} for i in range(len(body["input"]))]
        usage = {"prompt_tokens": EMBEDDING_TOKENS, "total_tokens": EMBEDDING_TOKENS}
        return httpx.Response(200, json={"object": "list", "data": data, "model": "up", "usage": usage})
    if path.endswith("/responses"):
        if not body.get("stream"):
            return httpx.Response(200, json=_response_object("completed"))
        started = _response_object("in_progress")
        events = [{"type": "response.created", "response": started},
                  {"type": "response.output_text.delta", "item_id": "msg_up", "output_index": 0,
                   "content_index": 0, "delta": "hello", "logprobs": []},
                  {"type": "response.completed", "response": _response_object("completed")}]  # fmt: skip
        return _sse([{**event, "sequence_number": n} for n, event in enumerate(events)], named=True)
    completions = path.endswith("/completions") and not path.endswith("/chat/completions")
    if body.get("stream"):
        delta: dict[str, Any] = {"text": "hello"} if completions else {"delta": {"content": "hello"}}
        return _sse([
            {"id": "c", "object": "chunk", "created": 0, "model": "up",
             "choices": [{"index": 0, **delta, "finish_reason": None}]},
            {"id": "c", "object": "chunk", "created": 0, "model": "up",
             "choices": [{"index": 0, **({"text": ""} if completions else {"delta": {}}), "finish_reason": "stop"}]},
            {"id": "c", "object": "chunk", "created": 0, "model": "up", "choices": [], "usage": CHAT_USAGE},
        ])  # fmt: skip
    choice = (
        {"index": 0, "text": "hello", "finish_reason": "stop"}
        if completions
        else {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
    )
    return httpx.Response(
        200, json={"id": "c", "object": "x", "created": 0, "model": "up", "choices": [choice], "usage": CHAT_USAGE}
    )


@pytest.fixture(scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = sqlite_settings(tmp_path_factory.mktemp("cost"), upstream_attempts=1, usage_flush_seconds=60)
    async with in_process(settings, upstream=httpx.MockTransport(_upstream)) as (app, client):
        yield app, client


async def _priced(client: httpx.AsyncClient, vendor: str, model_type: str = "CHAT_COMPLETION") -> tuple[str, str]:
    """(model name, deployment id) of a priced model of `vendor` on the upstream above."""
    name = f"priced-{uuid.uuid4().hex[:8]}"
    prices = {"input_cost_per_token": IN_PRICE, "output_cost_per_token": OUT_PRICE,
              "cache_read_input_cost_per_token": CACHE_READ_PRICE}  # fmt: skip
    created = await client.post(
        "/v4/models",
        json={"name": name, "model_type": model_type, "model_vendor": vendor,
              "model_creation_parameters": {"base_url": "http://upstream.test/v1", "model": "up", **prices}},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    deployment = await client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "d"})
    assert deployment.status_code == 200, deployment.text
    return name, deployment.json()["id"]


async def _recorded_cost(app: FastAPI, deployment: str) -> list[float]:
    """The costs recorded for `deployment`, oldest first."""
    await app.state.usage.flush()
    async with app.state.sessions() as session:
        rows = await session.execute(
            select(UsageRecord.cost).where(UsageRecord.deployment_id == deployment).order_by(UsageRecord.id)
        )
    return [cost for (cost,) in rows.all()]


def _header(answer: httpx.Response) -> float:
    written = answer.headers["x-modelport-cost"]
    assert "e" not in written.lower(), written  # a plain decimal, for scripts
    return float(Decimal(written))


def _events(answer: httpx.Response) -> list[dict[str, Any]]:
    return [
        json.loads(line.removeprefix("data: "))
        for line in answer.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


async def test_every_whole_answer_says_what_it_cost_and_that_is_what_is_recorded(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = served
    name, deployment = await _priced(client, "OTHER")
    messages = [{"role": "user", "content": "hi"}]
    answers = [
        await client.post(f"/v4/models/{deployment}/chat-completions", json={"chat_history": [], "prompt": "hi"}),
        await client.post("/v1/chat/completions", json={"model": name, "messages": messages}),
        await client.post("/v1/completions", json={"model": name, "prompt": "hi"}),
        await client.post("/v1/messages", json={"model": name, "max_tokens": 10, "messages": messages}),
        await client.post("/v1/responses", json={"model": name, "input": "hi", "store": False}),  # translated
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert _header(answer) == pytest.approx(CHAT_COST, rel=1e-9), answer.request.url
    v1_chat, v1_completion, translated = answers[1].json(), answers[2].json(), answers[4].json()
    assert v1_chat["usage"]["cost"] == pytest.approx(CHAT_COST, rel=1e-9)
    assert v1_completion["usage"]["cost"] == pytest.approx(CHAT_COST, rel=1e-9)
    assert translated["usage"]["cost"] == pytest.approx(CHAT_COST, rel=1e-9)
    # The cached tokens are shown, and priced at their own rate, on the Responses API too.
    assert translated["usage"]["input_tokens_details"]["cached_tokens"] == 4
    assert await _recorded_cost(app, deployment) == pytest.approx([CHAT_COST] * len(answers), rel=1e-9)
    spend = (await client.get("/v4/spend")).json()["by_deployment"][deployment]
    assert spend == pytest.approx(len(answers) * CHAT_COST, rel=1e-9)


async def test_a_stream_says_its_cost_in_its_last_usage_event(served: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = served
    name, deployment = await _priced(client, "OTHER")
    messages = [{"role": "user", "content": "hi"}]
    chat = await client.post(
        "/v1/chat/completions",
        json={"model": name, "messages": messages, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert chat.status_code == 200 and "x-modelport-cost" not in chat.headers  # sent before the cost is known
    assert _events(chat)[-1]["usage"]["cost"] == pytest.approx(CHAT_COST, rel=1e-9)
    translated = await client.post("/v1/responses", json={"model": name, "input": "hi", "stream": True})
    [completed] = [event for event in _events(translated) if event["type"] == "response.completed"]
    assert completed["response"]["usage"]["cost"] == pytest.approx(CHAT_COST, rel=1e-9)
    assert await _recorded_cost(app, deployment) == pytest.approx([CHAT_COST, CHAT_COST], rel=1e-9)


async def test_a_passed_through_response_gets_its_cost_from_the_upstreams_counts(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = served
    name, deployment = await _priced(client, "OPENAI")  # OpenAI serves the Responses API: passed through
    whole = await client.post("/v1/responses", json={"model": name, "input": "hi"})
    assert whole.status_code == 200, whole.text
    assert _header(whole) == pytest.approx(RELAYED_COST, rel=1e-9)
    assert whole.json()["usage"]["cost"] == pytest.approx(RELAYED_COST, rel=1e-9)
    streamed = await client.post("/v1/responses", json={"model": name, "input": "hi", "stream": True})
    [completed] = [event for event in _events(streamed) if event["type"] == "response.completed"]
    assert completed["response"]["usage"]["cost"] == pytest.approx(RELAYED_COST, rel=1e-9)
    assert await _recorded_cost(app, deployment) == pytest.approx([RELAYED_COST, RELAYED_COST], rel=1e-9)


async def test_embeddings_say_what_they_cost(served: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = served
    name, deployment = await _priced(client, "OTHER", "EMBEDDING")
    v4 = await client.post(f"/v4/models/{deployment}/embeddings", json={"texts": ["a", "b"]})
    v1 = await client.post("/v1/embeddings", json={"model": name, "input": ["a", "b"]})
    for answer in (v4, v1):
        assert answer.status_code == 200, answer.text
        assert _header(answer) == pytest.approx(EMBEDDING_TOKENS * IN_PRICE, rel=1e-9)
    assert "cost" not in v4.json()  # SGP's shape is unchanged: the header only
    assert v1.json()["usage"]["cost"] == pytest.approx(EMBEDDING_TOKENS * IN_PRICE, rel=1e-9)
    assert await _recorded_cost(app, deployment) == pytest.approx([EMBEDDING_TOKENS * IN_PRICE] * 2, rel=1e-9)


async def test_an_unpriced_model_costs_a_plain_zero(served: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = served
    created = await client.post(
        "/v4/models",
        json={"name": f"free-{uuid.uuid4().hex[:8]}", "model_type": "CHAT_COMPLETION", "model_vendor": "OTHER",
              "model_creation_parameters": {"base_url": "http://upstream.test/v1", "model": "up"}},
    )  # fmt: skip
    deployment = await client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "d"})
    answer = await client.post(
        f"/v4/models/{deployment.json()['id']}/chat-completions", json={"chat_history": [], "prompt": "hi"}
    )
    assert answer.headers["x-modelport-cost"] == "0"
