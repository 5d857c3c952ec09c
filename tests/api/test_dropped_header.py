"""x-modelport-dropped and max_tokens on the embedded model, through the real app: hints
it cannot act on are left out and named (whole answers and streams, every text surface),
chat without max_tokens fills the window instead of stopping at 100, a max_tokens no
prompt fits with is clamped, and tools without a forced choice answer 200."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from modelport.generation import GenerationCall
from modelport.limits.pricing import prompt_token_bound
from modelport.vendors.base import ChunkStream, Target
from modelport.vendors.embedded import EmbeddedVendor

MODEL = "smollm2-135m-instruct"
HELLO = [{"role": "user", "content": "Hi"}]
WINDOW = 8192  # the bootstrapped model's token_context_window


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[GenerationCall]]:
    """The calls the embedded vendor is given, as the service decided them."""
    calls: list[GenerationCall] = []
    original = EmbeddedVendor.stream

    async def recording(self: EmbeddedVendor, target: Target, call: GenerationCall) -> ChunkStream:
        calls.append(call)
        return await original(self, target, call)

    monkeypatch.setattr(EmbeddedVendor, "stream", recording)
    yield calls


async def test_a_hint_the_model_cannot_act_on_is_named_on_whole_and_streamed_answers(client: httpx.AsyncClient) -> None:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 3, "reasoning_effort": "xhigh"}
    whole = await client.post("/v1/chat/completions", json=body)
    assert whole.status_code == 200, whole.text
    assert whole.headers["x-modelport-dropped"] == "reasoning_effort"
    async with client.stream("POST", "/v4/beta/chat/completions", json={**body, "stream": True}) as stream:
        assert stream.status_code == 200
        assert stream.headers["x-modelport-dropped"] == "reasoning_effort"
        assert [line async for line in stream.aiter_lines() if line.startswith("data:")]
    legacy = await client.post("/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 2, "store": True})
    assert legacy.status_code == 200 and legacy.headers["x-modelport-dropped"] == "store"
    plain = await client.post("/v1/chat/completions", json={"model": MODEL, "messages": HELLO, "max_tokens": 2})
    assert plain.status_code == 200 and "x-modelport-dropped" not in plain.headers
    async with client.stream(
        "POST", "/v1/chat/completions", json={**body, "stream": True, "reasoning_effort": None}
    ) as s:
        assert s.status_code == 200 and "x-modelport-dropped" not in s.headers
        await s.aread()


async def test_chat_without_max_tokens_fills_the_window_where_v4_keeps_100(
    client: httpx.AsyncClient, deployment_id: str, sent: list[GenerationCall]
) -> None:
    # A stop sequence keeps the answer short: what matters is what the engine was allowed.
    body = {"model": MODEL, "messages": HELLO, "stop": ["."], "temperature": 0}
    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
    [call] = sent
    # Nothing sent: the engine fills what the window leaves, with the prompt's real tokens;
    # the limits reserved what the window leaves with the prompt at its bound.
    assert call.sampling.max_tokens is None
    assert call.response_token_bound == WINDOW - prompt_token_bound(call) > 100
    v4 = await client.post(
        f"/v4/models/{deployment_id}/chat-completions",
        json={"chat_history": [], "prompt": "Hi", "stop_sequences": ["."]},
    )
    assert v4.status_code == 200
    assert (sent[1].sampling.max_tokens, sent[1].response_token_bound) == (100, 100)


async def test_a_max_tokens_no_prompt_fits_with_is_clamped_and_named(
    client: httpx.AsyncClient, deployment_id: str, sent: list[GenerationCall]
) -> None:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 32_000, "stop": ["."]}
    answer = await client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-modelport-dropped"] == "max_tokens=clamped"
    [call] = sent
    assert call.sampling.max_tokens is None and call.response_token_bound == WINDOW - prompt_token_bound(call)
    # Claude Code's own request, on Anthropic's surface: the same.
    claude = await client.post(
        "/v1/messages", json={"model": MODEL, "messages": HELLO, "max_tokens": 32_000, "stop_sequences": ["."]}
    )
    assert claude.status_code == 200, claude.text
    assert claude.headers["x-modelport-dropped"] == "max_tokens=clamped"
    # The v4 route keeps the platform's rule: a 400 naming both numbers.
    v4 = await client.post(
        f"/v4/models/{deployment_id}/chat-completions", json={"chat_history": [], "prompt": "Hi", "max_tokens": 32_000}
    )
    assert v4.status_code == 400 and "32000" in v4.json()["detail"]


async def test_tools_without_a_forced_choice_answer_text_or_a_well_formed_call(client: httpx.AsyncClient) -> None:
    weather: dict[str, Any] = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}}},
        },
    }
    question = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]
    for choice in ({}, {"tool_choice": "auto"}):
        body = {"model": MODEL, "messages": question, "tools": [weather], "max_tokens": 60, "temperature": 0, **choice}
        answer = await client.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
        [choice_] = answer.json()["choices"]
        message = choice_["message"]
        if message.get("tool_calls"):
            [tool_call] = message["tool_calls"]
            assert choice_["finish_reason"] == "tool_calls" and tool_call["function"]["name"] == "get_weather"
            assert isinstance(json.loads(tool_call["function"]["arguments"]), dict)
        else:
            assert isinstance(message["content"], str) and choice_["finish_reason"] in {"stop", "length"}
