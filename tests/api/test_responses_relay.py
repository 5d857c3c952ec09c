"""/v1/responses passed through to an upstream that serves the Responses API itself (an
OPENAI deployment, or a compatible one whose settings say `serves_responses`), with the
`openai` SDK against the real app and an upstream answered in-process that records what
it gets: the body as the client wrote it (but `store` and `previous_response_id`, which
modelport keeps per account), the events relayed as they came, the upstream's counts in
the usage record, and the response kept here for retrieval and continuation."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from openai import AsyncOpenAI
from sqlalchemy import select

from modelport.store.tables import UsageRecord
from tests.conftest import ADMIN_KEY, in_process, sqlite_settings

upstream_ids: list[str] = []
USAGE = {
    "input_tokens": 21,
    "input_tokens_details": {"cached_tokens": 5},
    "output_tokens": 4,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 25,
}


def response_object(response_id: str, status: str, output: list[dict[str, Any]], model: str) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "store": False,  # as the upstream was asked
        "previous_response_id": None,
        "usage": USAGE if status == "completed" else None,
        "metadata": {},
        "text": {"format": {"type": "text"}},
    }


class ResponsesUpstream:
    """Answers POST /v1/responses (whole, or as OpenAI's events) with "Relayed hello",
    and /v1/chat/completions with "Translated hello"; records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append((request.url.path, body))
        if request.url.path.endswith("/chat/completions"):
            message = {"role": "assistant", "content": "Translated hello"}
            return httpx.Response(
                200,
                json={"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                      "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
            )  # fmt: skip
        if body.get("input") == "hostile event type":
            hostile = {"type": 'x\ndata: {"injected": true}', "sequence_number": 0}
            done = {"type": "response.completed", "sequence_number": 1,
                    "response": response_object("resp_upstream", "completed", [], body["model"])}  # fmt: skip
            frames = f"data: {json.dumps(hostile)}\n\nevent: response.completed\ndata: {json.dumps(done)}\n\n"
            return httpx.Response(200, content=frames.encode(), headers={"content-type": "text/event-stream"})
        if body.get("input") == "fail before answering":
            return httpx.Response(500, json={"error": {"message": "upstream broke", "type": "server_error"}})
        response_id = "resp_upstream"  # the same every time: ids are not the upstream's to give
        upstream_ids.append(response_id)
        text = "Relayed hello"
        if body.get("input") == "echo your key":  # a hostile upstream, as sent and base64-encoded
            key = request.headers.get("authorization", "").removeprefix("Bearer ")
            text = f"{key} {base64.b64encode(key.encode()).decode()} and a key-shaped word: key-value-store"
        message = {"id": "msg_up", "type": "message", "role": "assistant", "status": "completed",
                   "content": [{"type": "output_text", "text": text, "annotations": []}]}  # fmt: skip
        if not body.get("stream"):
            return httpx.Response(200, json=response_object(response_id, "completed", [message], body["model"]))
        started = response_object(response_id, "in_progress", [], body["model"])
        events = [
            {"type": "response.created", "response": started},
            {"type": "response.in_progress", "response": started},
            {"type": "response.output_item.added", "output_index": 0,
             "item": {**message, "status": "in_progress", "content": []}},
            {"type": "response.content_part.added", "item_id": "msg_up", "output_index": 0, "content_index": 0,
             "part": {"type": "output_text", "text": "", "annotations": []}},
            *({"type": "response.output_text.delta", "item_id": "msg_up", "output_index": 0, "content_index": 0,
               "delta": piece, "logprobs": []} for piece in ("Relayed", " hello")),
            {"type": "response.output_text.done", "item_id": "msg_up", "output_index": 0, "content_index": 0,
             "text": text, "logprobs": []},
            {"type": "response.content_part.done", "item_id": "msg_up", "output_index": 0, "content_index": 0,
             "part": message["content"][0]},
            {"type": "response.output_item.done", "output_index": 0, "item": message},
            {"type": "response.completed", "response": response_object(response_id, "completed", [message],
                                                                       body["model"])},
        ]  # fmt: skip
        frames = b"".join(
            f"event: {event['type']}\ndata: {json.dumps({**event, 'sequence_number': number})}\n\n".encode()
            for number, event in enumerate(events)
        )
        return httpx.Response(200, content=frames, headers={"content-type": "text/event-stream"})


@pytest.fixture(scope="module")
def upstream() -> ResponsesUpstream:
    return ResponsesUpstream()


@pytest.fixture(scope="module")
async def served(
    tmp_path_factory: pytest.TempPathFactory, upstream: ResponsesUpstream
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = sqlite_settings(Path(tmp_path_factory.mktemp("relay")), upstream_attempts=1)
    async with in_process(settings, upstream=httpx.MockTransport(upstream)) as (app, http):
        yield app, http


async def _model(client: httpx.AsyncClient, vendor: str, **parameters: Any) -> tuple[str, str]:
    """(model name, deployment id) of a model on the recording upstream."""
    name = f"{vendor.lower()}-{uuid.uuid4().hex[:8]}"
    created = await client.post(
        "/v4/models",
        json={"name": name, "model_type": "CHAT_COMPLETION", "model_vendor": vendor,
              "model_creation_parameters": {"base_url": "http://upstream.test/v1", "model": "up-model",
                                            **parameters}},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    deployment = await client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "d"})
    assert deployment.status_code == 200, deployment.text
    return name, deployment.json()["id"]


@pytest.fixture(scope="module")
async def sdk(served: tuple[FastAPI, httpx.AsyncClient]) -> AsyncIterator[AsyncOpenAI]:
    app, _ = served
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=60)
    async with AsyncOpenAI(
        base_url="http://modelport.test/v1", api_key=ADMIN_KEY, http_client=http, max_retries=0
    ) as client:
        yield client


async def test_an_openai_deployment_gets_the_body_as_written_and_its_answer_is_kept_here(
    served: tuple[FastAPI, httpx.AsyncClient], sdk: AsyncOpenAI, upstream: ResponsesUpstream
) -> None:
    app, client = served
    model, deployment = await _model(client, "OPENAI")
    tools = [{"type": "web_search"}, {"type": "function", "name": "f", "parameters": {"type": "object"}}]
    first = await sdk.responses.create(
        model=model,
        input="Say hello.",
        tools=tools,
        reasoning={"effort": "high"},
        prompt_cache_key="k1",  # type: ignore[arg-type]
    )
    assert first.output_text == "Relayed hello"
    path, sent = upstream.requests[-1]
    assert path == "/v1/responses"
    # As written: built-in tools, reasoning and the cache key included; the upstream's model name.
    assert (sent["model"], sent["input"], sent["tools"], sent["reasoning"]) == (
        "up-model", "Say hello.", tools, {"effort": "high"},
    )  # fmt: skip
    assert sent["prompt_cache_key"] == "k1" and sent["store"] is False and "previous_response_id" not in sent
    assert first.store is True  # kept here, as the client asked
    assert first.id.startswith("resp_") and first.id != upstream_ids[-1]  # modelport's own id
    assert (await sdk.responses.retrieve(first.id)).output_text == "Relayed hello"

    await app.state.usage.flush()
    async with app.state.sessions() as session:
        [row] = (
            await session.execute(
                select(UsageRecord.prompt_tokens, UsageRecord.response_tokens, UsageRecord.cached_prompt_tokens).where(
                    UsageRecord.deployment_id == deployment
                )
            )
        ).all()
    assert tuple(row) == (21, 4, 5)  # the upstream's own counts

    # Continued: the conversation goes as input, previous_response_id stays here.
    second = await sdk.responses.create(model=model, previous_response_id=first.id, input="Again.")
    _, sent = upstream.requests[-1]
    assert "previous_response_id" not in sent
    assert [item.get("role") for item in sent["input"]] == ["user", "assistant", "user"]
    assert sent["input"][1]["content"][0]["text"] == "Relayed hello"
    assert "id" not in sent["input"][0] and sent["input"][1]["id"] == "msg_up"
    assert second.previous_response_id == first.id


async def test_the_stream_is_relayed_event_for_event_and_kept(
    served: tuple[FastAPI, httpx.AsyncClient], sdk: AsyncOpenAI, upstream: ResponsesUpstream
) -> None:
    _, client = served
    model, _ = await _model(client, "OPENAI")
    events = [event async for event in await sdk.responses.create(model=model, input="Stream it.", stream=True)]
    assert [event.type for event in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed",
    ]  # fmt: skip
    assert [event.sequence_number for event in events] == list(range(10))
    assert upstream.requests[-1][1]["stream"] is True
    completed = events[-1].response  # type: ignore[union-attr]
    assert completed.store is True and completed.output_text == "Relayed hello"
    assert (await sdk.responses.retrieve(completed.id)).output_text == "Relayed hello"


async def test_a_compatible_server_is_relayed_only_when_its_settings_say_it_serves_responses(
    served: tuple[FastAPI, httpx.AsyncClient], sdk: AsyncOpenAI, upstream: ResponsesUpstream
) -> None:
    _, client = served
    serving, _ = await _model(client, "LLMENGINE", serves_responses=True)
    assert (await sdk.responses.create(model=serving, input="Hi")).output_text == "Relayed hello"
    assert upstream.requests[-1][0] == "/v1/responses"
    plain, _ = await _model(client, "LLMENGINE")
    assert (await sdk.responses.create(model=plain, input="Hi")).output_text == "Translated hello"
    assert upstream.requests[-1][0] == "/v1/chat/completions"


async def test_another_accounts_response_cannot_be_continued_through_the_relay(
    served: tuple[FastAPI, httpx.AsyncClient], sdk: AsyncOpenAI, upstream: ResponsesUpstream
) -> None:
    _, client = served
    model, _ = await _model(client, "OPENAI")
    mine = await sdk.responses.create(model=model, input="Mine.")
    account = (await client.post("/accounts", json={"account_name": f"other-{uuid.uuid4().hex[:8]}"})).json()
    headers = {"x-selected-account-id": account["account_id"]}
    other_model = f"theirs-{uuid.uuid4().hex[:8]}"
    created = await client.post(
        "/v4/models",
        headers=headers,
        json={"name": other_model, "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI",
              "model_creation_parameters": {"base_url": "http://upstream.test/v1", "model": "up-model"}},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    await client.post(f"/v4/models/{created.json()['id']}/deployments", headers=headers, json={"name": "d"})
    sent_before = len(upstream.requests)
    refused = await client.post(
        "/v1/responses",
        headers=headers,
        json={"model": other_model, "input": "Go on.", "previous_response_id": mine.id},
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "previous_response_id"
    assert len(upstream.requests) == sent_before  # nothing reached the upstream


async def test_an_upstream_failure_is_a_502_in_openais_shape(
    served: tuple[FastAPI, httpx.AsyncClient], sdk: AsyncOpenAI
) -> None:
    _, client = served
    model, _ = await _model(client, "OPENAI")
    with pytest.raises(openai.APIStatusError) as failed:
        await sdk.responses.create(model=model, input="fail before answering")
    assert failed.value.status_code == 502
    assert "upstream broke" in failed.value.message


async def test_an_upstreams_event_type_cannot_write_lines_into_the_clients_stream(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = served
    model, _ = await _model(client, "OPENAI")
    answer = await client.post("/v1/responses", json={"model": model, "input": "hostile event type", "stream": True})
    assert answer.status_code == 200
    lines = answer.text.splitlines()
    assert "event: message" in lines and "event: response.completed" in lines
    assert not any(line.startswith('data: {"injected"') for line in lines)


async def test_the_credential_an_upstream_echoes_is_never_relayed(tmp_path: Path, upstream: ResponsesUpstream) -> None:
    """What is passed through is the upstream's own writing, but for the key modelport sent
    it: an upstream echoing it (as sent or encoded) in its answer or its events relays
    `[redacted]` instead, and nothing else of the text changes."""
    vendor_key = "sk-relay-" + uuid.uuid4().hex
    settings = sqlite_settings(tmp_path, upstream_attempts=1, secret_key="relay-" + "s" * 40)
    async with in_process(settings, upstream=httpx.MockTransport(upstream)) as (_, client):
        assert (await client.put("/v4/secrets/vendor", json={"value": vendor_key})).status_code == 200
        model, _ = await _model(client, "OPENAI", api_key_secret="vendor")
        whole = await client.post("/v1/responses", json={"model": model, "input": "echo your key"})
        streamed = await client.post("/v1/responses", json={"model": model, "input": "echo your key", "stream": True})
    assert whole.status_code == 200 and streamed.status_code == 200
    encoded = base64.b64encode(vendor_key.encode()).decode()
    for answer in (whole.text, streamed.text):
        assert vendor_key not in answer and encoded[:16] not in answer
        assert "[redacted] [redacted] and a key-shaped word: key-value-store" in answer
