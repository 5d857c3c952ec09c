"""The Responses API translated onto an OpenAI-compatible deployment whose upstream is
answered in-process and records what it was sent, on SQLite and PostgreSQL: what a
`previous_response_id` chain and a function-call round trip send the vendor, built-in
tools and hints left out of the call, the events of a streamed tool call, a failure in
the middle of a stream, and the bounds of the stored responses."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from openai import AsyncOpenAI
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter
from sqlalchemy import update

from modelport.store.tables import StoredResponse
from tests.conftest import ADMIN_KEY, in_process, own_database, sqlite_settings

MAX_STORED_BYTES = 64 * 1024
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    chunk: dict[str, Any] = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        chunk["usage"] = usage
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


class Upstream:
    """An OpenAI-compatible upstream that records each chat body it gets. It calls
    get_weather when told to use a tool, says "boom" and breaks off its stream when the
    last message asks it to fail, and otherwise answers "Hello Ada"."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        calls_tool = body.get("tool_choice") not in (None, "none", "auto")
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
        if body.get("stream"):
            if calls_tool:
                head = {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":'},
                }
                events = [
                    _chunk({"role": "assistant", "tool_calls": [head]}),
                    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
                    _chunk({}, "tool_calls", usage),
                ]
            elif body["messages"][-1]["content"] == "fail":
                events = [_chunk({"role": "assistant", "content": "boom"}), b"data: {not json\n\n"]
            else:
                events = [
                    _chunk({"role": "assistant", "content": "Hello"}),
                    _chunk({"content": " Ada"}),
                    _chunk({}, "stop", usage),
                ]
            return httpx.Response(
                200, content=b"".join([*events, b"data: [DONE]\n\n"]), headers={"content-type": "text/event-stream"}
            )
        message: dict[str, Any] = {"role": "assistant", "content": None if calls_tool else "Hello Ada"}
        if calls_tool:
            message["tool_calls"] = [call]
        finish = "tool_calls" if calls_tool else "stop"
        return httpx.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "usage": usage,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            },
        )


@pytest.fixture(scope="module")
async def own_database_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A database of this module's own, of the leg's kind (the session's shared one has an
    app with the embedded engine watching it)."""
    kind = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    async with own_database(kind, tmp_path_factory.mktemp("responses"), "modelport_responses") as url:
        yield url


@pytest.fixture(scope="module")
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture(scope="module")
async def served(
    own_database_url: str, tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = sqlite_settings(
        Path(tmp_path_factory.mktemp("responses-data")),
        database_url=own_database_url,
        upstream_attempts=1,
        responses_max_stored_bytes=MAX_STORED_BYTES,
    )
    async with in_process(settings, upstream=httpx.MockTransport(upstream)) as (app, http):
        yield app, http


@pytest.fixture(scope="module")
async def model(served: tuple[FastAPI, httpx.AsyncClient]) -> str:
    """The name of an OpenAI-compatible model served by the recording upstream."""
    _, client = served
    name = f"recorded-{uuid.uuid4().hex[:8]}"
    created = await client.post(
        "/v4/models",
        json={
            "name": name,
            "model_type": "CHAT_COMPLETION",
            "model_vendor": "OTHER",  # an OpenAI-compatible server that speaks chat completions only
            "model_creation_parameters": {"base_url": "http://upstream.test/v1", "model": "m"},
        },
    )
    assert created.status_code == 200, created.text
    deployment = await client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "d"})
    assert deployment.status_code == 200, deployment.text
    return name


@pytest.fixture(scope="module")
async def sdk(served: tuple[FastAPI, httpx.AsyncClient]) -> AsyncIterator[AsyncOpenAI]:
    app, _ = served
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=60)
    async with AsyncOpenAI(
        base_url="http://modelport.test/v1", api_key=ADMIN_KEY, http_client=http, max_retries=0
    ) as client:
        yield client


async def test_a_previous_response_id_continues_its_conversation(
    sdk: AsyncOpenAI, model: str, upstream: Upstream
) -> None:
    first = await sdk.responses.create(model=model, instructions="Be brief.", input="My name is Ada.")
    assert first.output_text == "Hello Ada"
    assert upstream.bodies[-1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "My name is Ada."},
    ]
    second = await sdk.responses.create(
        model=model,
        previous_response_id=first.id,
        input=[{"role": "developer", "content": "Answer in English."}, {"role": "user", "content": "My name?"}],
    )
    # The first turn, then its answer, then the new input; `instructions` are not carried over.
    assert upstream.bodies[-1]["messages"] == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada"},
        {"role": "system", "content": "Answer in English."},
        {"role": "user", "content": "My name?"},
    ]
    assert second.previous_response_id == first.id
    listed = await sdk.responses.input_items.list(second.id, order="asc")
    assert [item.role for item in listed.data] == ["developer", "user"]  # type: ignore[union-attr]
    # The chain goes on from the second response, whose conversation holds the first.
    await sdk.responses.create(model=model, previous_response_id=second.id, input="And again?")
    assert [message["content"] for message in upstream.bodies[-1]["messages"]] == [
        "My name is Ada.",
        "Hello Ada",
        "Answer in English.",
        "My name?",
        "Hello Ada",
        "And again?",
    ]


async def test_an_item_reference_names_an_item_of_the_previous_conversation(
    sdk: AsyncOpenAI, model: str, upstream: Upstream
) -> None:
    first = await sdk.responses.create(model=model, input="My name is Ada.")
    [asked] = (await sdk.responses.input_items.list(first.id)).data
    await sdk.responses.create(
        model=model, previous_response_id=first.id, input=[{"type": "item_reference", "id": asked.id}]
    )
    assert [message["content"] for message in upstream.bodies[-1]["messages"]] == [
        "My name is Ada.",
        "Hello Ada",
        "My name is Ada.",
    ]
    with pytest.raises(openai.BadRequestError) as unknown:
        await sdk.responses.create(
            model=model, previous_response_id=first.id, input=[{"type": "item_reference", "id": "msg_nope"}]
        )
    assert unknown.value.param == "input.0"


async def test_a_function_call_goes_out_and_its_output_comes_back(
    sdk: AsyncOpenAI, model: str, upstream: Upstream
) -> None:
    called = await sdk.responses.create(
        model=model,
        input="Weather in Paris?",
        tools=[WEATHER_TOOL],
        tool_choice="required",  # type: ignore[list-item]
    )
    sent = upstream.bodies[-1]
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {key: WEATHER_TOOL[key] for key in ("name", "description", "parameters", "strict")},
        }
    ]
    assert sent["tool_choice"] == "required"
    [call] = called.output
    assert call.type == "function_call" and call.status == "completed"
    assert (call.call_id, call.name, json.loads(call.arguments)) == ("call_1", "get_weather", {"city": "Paris"})

    answered = await sdk.responses.create(
        model=model,
        previous_response_id=called.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    assert answered.output_text == "Hello Ada"
    assert upstream.bodies[-1]["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]

    # Sent back whole instead (as Codex does, with store: false): the same conversation.
    await sdk.responses.create(
        model=model,
        store=False,
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        ],
    )
    assert upstream.bodies[-1]["messages"] == upstream.bodies[-2]["messages"]


async def test_a_streamed_function_call_is_its_documented_events(sdk: AsyncOpenAI, model: str) -> None:
    stream = await sdk.responses.create(
        model=model,
        input="Weather?",
        tools=[WEATHER_TOOL],
        tool_choice="required",
        stream=True,  # type: ignore[list-item]
    )
    events = [event async for event in stream]
    for event in events:  # the SDK builds them leniently: validated, a missing field shows
        TypeAdapter(ResponseStreamEvent).validate_python(event.to_dict())
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert [event.type for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added, done, completed = events[2], events[6], events[-1]
    assert added.item.type == "function_call" and added.item.arguments == ""  # type: ignore[union-attr]
    assert done.item.arguments == '{"city":"Paris"}' == events[5].arguments  # type: ignore[union-attr]
    [item] = completed.response.output  # type: ignore[union-attr]
    assert item.type == "function_call" and item.call_id == "call_1" and item.name == "get_weather"
    assert completed.response.usage.total_tokens == 10  # type: ignore[union-attr]


async def test_built_in_tools_and_hints_are_left_out_of_the_call(
    served: tuple[FastAPI, httpx.AsyncClient], model: str, upstream: Upstream
) -> None:
    _, client = served
    answer = await client.post(
        "/v1/responses",
        json={
            "model": model,
            "input": [
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
                {"role": "user", "content": [{"type": "input_text", "text": "Search the web."}]},
            ],
            "tools": [{"type": "web_search"}, {"type": "namespace", "name": "ns", "tools": []}, WEATHER_TOOL],
            "tool_choice": "auto",
            "reasoning": {"effort": "high", "summary": "auto"},
            "include": ["reasoning.encrypted_content"],
            "prompt_cache_key": "k",
            "parallel_tool_calls": True,
            "client_metadata": {"originator": "codex"},
            "store": False,
            "stream": True,
        },
    )
    assert answer.status_code == 200 and "response.completed" in answer.text
    sent = upstream.bodies[-1]
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["get_weather"]
    assert sent["messages"] == [{"role": "user", "content": "Search the web."}]
    for hint in ("reasoning", "reasoning_effort", "include", "prompt_cache_key", "client_metadata"):
        assert hint not in sent


async def test_a_failure_midway_ends_the_stream_with_an_error_the_sdk_raises(sdk: AsyncOpenAI, model: str) -> None:
    stream = await sdk.responses.create(model=model, input="fail", stream=True)
    seen: list[str] = []
    with pytest.raises(openai.APIError):
        async for event in stream:
            seen.append(event.type)
    assert seen[:2] == ["response.created", "response.in_progress"] and "response.completed" not in seen


async def test_a_response_over_the_size_bound_is_answered_but_not_stored(
    served: tuple[FastAPI, httpx.AsyncClient], model: str
) -> None:
    _, client = served
    large = "x" * MAX_STORED_BYTES
    answer = await client.post("/v1/responses", json={"model": model, "input": large})
    assert answer.status_code == 200, answer.text
    assert (await client.get(f"/v1/responses/{answer.json()['id']}")).status_code == 404
    asked = await client.post("/v1/responses", json={"model": model, "input": large, "store": True})
    assert asked.status_code == 400 and asked.json()["error"]["param"] == "store"
    assert "MODELPORT_RESPONSES_MAX_STORED_BYTES" in asked.json()["error"]["message"]


async def test_a_response_past_its_retention_is_gone(served: tuple[FastAPI, httpx.AsyncClient], model: str) -> None:
    app, client = served
    answer = await client.post("/v1/responses", json={"model": model, "input": "Hi"})
    response_id = answer.json()["id"]
    assert (await client.get(f"/v1/responses/{response_id}")).status_code == 200
    retention = app.state.settings.responses_retention_seconds
    async with app.state.sessions() as session, session.begin():
        await session.execute(
            update(StoredResponse)
            .where(StoredResponse.id == response_id)
            .values(created_at=datetime.now(UTC) - timedelta(seconds=retention + 60))
        )
    assert (await client.get(f"/v1/responses/{response_id}")).status_code == 404  # never read back
    assert await app.state.catalogue.responses.sweep() >= 1
    async with app.state.sessions() as session:
        assert await session.get(StoredResponse, response_id) is None
