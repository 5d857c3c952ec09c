"""OpenAI's deprecated functions API (`functions`, `function_call`, role `function`;
issue 26): served as tools by any deployment, answered in its own shape, whole and
streamed. An OpenAI-compatible upstream answered in-process records what it was sent
and calls the function; the answers are read back with the openai SDK's own types."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from modelport.config import Settings
from tests.conftest import ADMIN_KEY, in_process

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ARGUMENTS = '{"city": "Paris"}'


class Upstream:
    """Calls the first tool it is offered, or answers in words when offered none."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.sent.append(body)
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        call = {"id": "call_up_1", "type": "function", "function": {"name": WEATHER["name"], "arguments": ARGUMENTS}}
        if body.get("stream"):
            # The call's name first, then its arguments in two pieces, as OpenAI streams one.
            opening = {"index": 0, "id": "call_up_1", "type": "function",
                       "function": {"name": WEATHER["name"], "arguments": ""}}  # fmt: skip
            pieces = [
                opening,
                *({"index": 0, "function": {"arguments": part}} for part in (ARGUMENTS[:8], ARGUMENTS[8:])),
            ]
            events: list[dict[str, Any]] = [
                {"choices": [{"index": 0, "delta": {"tool_calls": [piece]}}]} for piece in pieces
            ]
            events += [{"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
                       {"choices": [], "usage": usage}]  # fmt: skip
            stream = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream.encode())
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish = "tool_calls"
        if not body.get("tools") or body.get("tool_choice") == "none":
            message, finish = {"role": "assistant", "content": "It is sunny."}, "stop"
        choice = {"index": 0, "message": message, "finish_reason": finish}
        return httpx.Response(
            200,
            json={"id": "x", "object": "chat.completion", "created": 0, "model": "up", "choices": [choice],
                  "usage": usage},
        )  # fmt: skip


@pytest.fixture(scope="module")
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture(scope="module")
async def model(upstream: Upstream, database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    settings = Settings(database_url=database_url, api_key=ADMIN_KEY, embedded_engine=False, upstream_attempts=1)
    async with in_process(settings, upstream=httpx.MockTransport(upstream)) as (_, client):
        name = f"fn-{uuid.uuid4().hex[:8]}"
        made = await client.post(
            "/v4/models",
            json={"name": name, "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI",
                  "model_creation_parameters": {"base_url": "http://upstream.test/v1", "model": "up"}},
        )  # fmt: skip
        assert made.status_code == 200, made.text
        deployed = await client.post(f"/v4/models/{made.json()['id']}/deployments", json={"name": "d"})
        assert deployed.status_code == 200, deployed.text
        yield client, name


QUESTION = [{"role": "user", "content": "Weather in Paris?"}]


async def test_functions_are_sent_as_tools_and_the_call_comes_back_as_a_function_call(
    model: tuple[httpx.AsyncClient, str], upstream: Upstream
) -> None:
    client, name = model
    answer = await client.post(
        "/v1/chat/completions",
        json={"model": name, "messages": QUESTION, "functions": [WEATHER], "function_call": {"name": "get_weather"}},
    )
    assert answer.status_code == 200, answer.text
    sent = upstream.sent[-1]
    assert sent["tools"] == [{"type": "function", "function": WEATHER}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert "functions" not in sent and "function_call" not in sent
    completion = ChatCompletion.model_validate(answer.json())
    [choice] = completion.choices
    assert choice.finish_reason == "function_call"
    assert choice.message.function_call is not None
    assert (choice.message.function_call.name, choice.message.function_call.arguments) == ("get_weather", ARGUMENTS)
    assert choice.message.tool_calls is None


async def test_the_functions_result_goes_back_as_the_tool_result_of_that_call(
    model: tuple[httpx.AsyncClient, str], upstream: Upstream
) -> None:
    client, name = model
    history = [
        *QUESTION,
        {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": ARGUMENTS}},
        {"role": "function", "name": "get_weather", "content": '{"sky": "sunny"}'},
    ]
    answer = await client.post(
        "/v1/chat/completions",
        json={"model": name, "messages": history, "functions": [WEATHER], "function_call": "none"},
    )
    assert answer.status_code == 200, answer.text
    sent = upstream.sent[-1]
    assert sent["tool_choice"] == "none"
    assistant, result = sent["messages"][1], sent["messages"][2]
    [call] = assistant["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": ARGUMENTS}
    assert result == {"role": "tool", "tool_call_id": call["id"], "content": '{"sky": "sunny"}'}
    completion = ChatCompletion.model_validate(answer.json())
    assert completion.choices[0].message.content == "It is sunny."
    assert completion.choices[0].finish_reason == "stop"


async def test_a_streamed_function_call_comes_as_function_call_deltas(
    model: tuple[httpx.AsyncClient, str], upstream: Upstream
) -> None:
    client, name = model
    body = {"model": name, "messages": QUESTION, "functions": [WEATHER], "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=body) as stream:
        assert stream.status_code == 200
        events = [line[6:] async for line in stream.aiter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(event) for event in events[:-1]]
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    assert all(delta.tool_calls is None for delta in deltas)
    calls = [delta.function_call for delta in deltas if delta.function_call is not None]
    assert calls[0].name == "get_weather"
    assert "".join(call.arguments or "" for call in calls) == ARGUMENTS
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "function_call"


async def test_tools_answer_as_before_and_mixing_both_apis_is_a_400(model: tuple[httpx.AsyncClient, str]) -> None:
    client, name = model
    tools = await client.post(
        "/v1/chat/completions", json={"model": name, "messages": QUESTION, "tools": [{"type": "function",
                                                                                      "function": WEATHER}]}
    )  # fmt: skip
    [choice] = ChatCompletion.model_validate(tools.json()).choices
    assert choice.finish_reason == "tool_calls" and choice.message.function_call is None
    assert choice.message.tool_calls is not None
    for body, field in (
        ({"functions": [WEATHER], "tools": [{"type": "function", "function": WEATHER}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"functions": []}, "functions"),
    ):
        refused = await client.post("/v1/chat/completions", json={"model": name, "messages": QUESTION, **body})
        assert refused.status_code == 400, refused.text
        assert field in refused.json()["error"]["message"]
