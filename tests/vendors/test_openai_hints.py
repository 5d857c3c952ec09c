"""Hints on an OPENAI deployment (answers in OpenAI's documented shapes): passed
through in OpenAI's own body where the model takes them, left out and named in the
x-modelport-dropped header where it does not; a max_tokens past the model's window is
clamped and named. On /v1/chat/completions and its v4 beta twin, whole and streamed."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

HINTS = {
    "reasoning_effort": "xhigh",
    "verbosity": "high",
    "prompt_cache_key": "conversation-7",
    "safety_identifier": "user-hash-1",
    "service_tier": "flex",
    "store": True,
    "metadata": {"ticket": "42"},
    "parallel_tool_calls": False,
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
}
HELLO = [{"role": "user", "content": "Hi"}]


async def _model(client: httpx.AsyncClient, upstream: str, window: int | None = None) -> str:
    """An OPENAI model named after `upstream`, with one deployment; returns its name."""
    name = f"hints-{upstream}-{uuid.uuid4().hex[:6]}"
    metadata = {"modelDetails": {"token_context_window": window}} if window else None
    created = await client.post(
        "/v4/models",
        json={"name": name, "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI",
              "model_creation_parameters": {"model": upstream}, "base_model_metadata": metadata},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    deployment = await client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "upstream"})
    assert deployment.status_code == 200, deployment.text
    return name


async def test_a_reasoning_model_gets_every_hint_in_its_body(recorded_app: Any) -> None:
    _app, client, transport = recorded_app
    transport.answers["o3-mini"] = (200, "documented/openai/reasoning.json")
    model = await _model(client, "o3-mini")
    for path in ("/v1/chat/completions", "/v4/beta/chat/completions"):
        answer = await client.post(path, json={"model": model, "messages": HELLO, **HINTS})
        assert answer.status_code == 200, answer.text
        assert "x-modelport-dropped" not in answer.headers
        sent = transport.last_body()
        assert {name: sent.get(name) for name in HINTS if name != "tools"} == {
            name: value for name, value in HINTS.items() if name != "tools"
        }


async def test_what_a_model_cannot_act_on_is_left_out_and_named_on_whole_and_streamed_answers(
    recorded_app: Any,
) -> None:
    _app, client, transport = recorded_app
    transport.answers["gpt-4o-mini"] = (200, "documented/openai/chat_logprobs.json")
    transport.answers["gpt-4o-mini-streamed"] = (200, "documented/openai/surface_tool_call_stream.sse")
    whole_model = await _model(client, "gpt-4o-mini")
    answer = await client.post("/v1/chat/completions", json={"model": whole_model, "messages": HELLO, **HINTS})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-modelport-dropped"] == "reasoning_effort, verbosity"
    sent = transport.last_body()
    assert "reasoning_effort" not in sent and "verbosity" not in sent
    assert (sent["prompt_cache_key"], sent["metadata"]) == ("conversation-7", {"ticket": "42"})

    streamed_model = await _model(client, "gpt-4o-mini-streamed")
    body = {"model": streamed_model, "messages": HELLO, "stream": True, "reasoning_effort": "none",
            "stream_options": {"include_usage": True, "include_obfuscation": False}}  # fmt: skip
    async with client.stream("POST", "/v1/chat/completions", json=body) as stream:
        assert stream.status_code == 200
        assert stream.headers["x-modelport-dropped"] == "stream_options.include_obfuscation, reasoning_effort"
        events = [line async for line in stream.aiter_lines() if line.startswith("data:")]
    assert events[-1] == "data: [DONE]"
    assert "reasoning_effort" not in transport.last_body()


async def test_sampling_parameters_stay_strict(recorded_app: Any) -> None:
    _app, client, transport = recorded_app
    transport.answers["o3-mini"] = (200, "documented/openai/reasoning.json")
    model = await _model(client, "o3-mini")
    refused = await client.post(
        "/v1/chat/completions", json={"model": model, "messages": HELLO, "reasoning_effort": "high", "top_p": 0.5}
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["type"] == "invalid_request_error" and "top_p" in refused.json()["error"]["message"]


async def test_a_max_tokens_past_the_window_is_clamped_and_named(recorded_app: Any) -> None:
    _app, client, transport = recorded_app
    transport.answers["gpt-4o-mini"] = (200, "documented/openai/chat_logprobs.json")
    model = await _model(client, "gpt-4o-mini", window=4096)
    answer = await client.post("/v1/chat/completions", json={"model": model, "messages": HELLO, "max_tokens": 32_000})
    assert answer.status_code == 200, answer.text
    # OpenAI's chat fills what the window leaves by itself: nothing is sent.
    assert answer.headers["x-modelport-dropped"] == "max_tokens=clamped"
    assert "max_tokens" not in transport.last_body()
    fits = await client.post("/v1/chat/completions", json={"model": model, "messages": HELLO, "max_tokens": 300})
    assert transport.last_body()["max_tokens"] == 300 and "x-modelport-dropped" not in fits.headers
