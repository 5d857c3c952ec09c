"""Tool calls through the compatible surfaces, driven by the `openai` and `anthropic` SDKs,
with an OPENAI deployment answering from fixtures in OpenAI's documented shapes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2
import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from tests.conftest import ADMIN_KEY
from tests.vendors.conftest import deploy

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
async def tools_model(recorded_app: Any) -> AsyncIterator[tuple[AsyncOpenAI, AsyncAnthropic, Any]]:
    app, client, transport = recorded_app
    transport.answers["gpt-4o-mini"] = (200, "documented/openai/surface_tool_call.json")
    transport.answers["gpt-4o-mini-streamed"] = (200, "documented/openai/surface_tool_call_stream.sse")
    await deploy(client, vendor="OPENAI", model="gpt-4o-mini", model_name="OPENAI-gpt-4o-mini")
    await deploy(client, vendor="OPENAI", model="gpt-4o-mini-streamed", model_name="OPENAI-gpt-4o-mini-streamed")
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=60)
    # This anthropic SDK speaks through httpx2 (httpx's successor), which has the same ASGI transport.
    http2 = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), timeout=60)
    async with http, http2:
        yield (
            AsyncOpenAI(base_url="http://modelport.test/v1", api_key=ADMIN_KEY, http_client=http, max_retries=0),
            AsyncAnthropic(base_url="http://modelport.test", api_key=ADMIN_KEY, http_client=http2, max_retries=0),
            transport,
        )


async def test_a_tool_call_and_its_result_sent_back(tools_model: Any) -> None:
    client, _anthropic, transport = tools_model
    answer = await client.chat.completions.create(
        model="openai/OPENAI-gpt-4o-mini", messages=QUESTION, tools=[WEATHER], tool_choice="auto"
    )
    sent = transport.last_body()
    assert sent["tools"] == [WEATHER] and sent["tool_choice"] == "auto"
    [choice] = answer.choices
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert (call.id, call.type, call.function.name) == ("call_w3ath3r", "function", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}

    await client.chat.completions.create(
        model="OPENAI-gpt-4o-mini",
        messages=[
            *QUESTION,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 18}'},
        ],
        tools=[WEATHER],
    )
    turns = transport.last_body()["messages"]
    assert turns[-2]["tool_calls"][0]["id"] == "call_w3ath3r"
    assert turns[-1] == {"role": "tool", "tool_call_id": "call_w3ath3r", "content": '{"temperature": 18}'}


async def test_a_streamed_tool_call_arrives_as_openai_streams_it(tools_model: Any) -> None:
    client, _anthropic, _transport = tools_model
    stream = await client.chat.completions.create(
        model="OPENAI-gpt-4o-mini-streamed",
        messages=QUESTION,
        tools=[WEATHER],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    deltas = [call for chunk in chunks if chunk.choices for call in chunk.choices[0].delta.tool_calls or []]
    assert deltas[0].id == "call_w3ath3r" and deltas[0].function and deltas[0].function.name == "get_weather"
    arguments = "".join(delta.function.arguments or "" for delta in deltas if delta.function)
    assert json.loads(arguments) == {"city": "Paris", "unit": "celsius"}
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 100


async def test_the_anthropic_surface_turns_a_tool_call_into_tool_use(tools_model: Any) -> None:
    _client, anthropic, transport = tools_model
    tool = {"name": "get_weather", "description": "The weather in a city",
            "input_schema": WEATHER["function"]["parameters"]}  # type: ignore[index]  # fmt: skip
    message = await anthropic.messages.create(
        model="OPENAI-gpt-4o-mini", max_tokens=100, messages=QUESTION, tools=[tool], tool_choice={"type": "any"}
    )
    sent = transport.last_body()
    assert sent["tools"][0]["function"]["parameters"] == tool["input_schema"] and sent["tool_choice"] == "required"
    assert message.stop_reason == "tool_use"
    [block] = message.content
    assert (
        block.type == "tool_use" and block.name == "get_weather" and block.input == {"city": "Paris", "unit": "celsius"}
    )

    async with anthropic.messages.stream(
        model="OPENAI-gpt-4o-mini-streamed", max_tokens=100, messages=QUESTION, tools=[tool]
    ) as stream:
        final = await stream.get_final_message()
    [streamed] = final.content
    assert streamed.type == "tool_use" and streamed.input == {"city": "Paris", "unit": "celsius"}
    assert final.stop_reason == "tool_use"
