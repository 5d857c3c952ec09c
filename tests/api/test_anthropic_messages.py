"""The Anthropic Messages surface on the embedded model, through the ASGI app (SQLite and
PostgreSQL): count_tokens is the answer's own `input_tokens`, counted by the model's
tokenizer through its chat template without generating or recording anything;
Anthropic's hints (thinking, cache_control, ...) are accepted and the model answers
without them; bad bodies are 400s in Anthropic's shape naming the field; both bodies
are in the OpenAPI document."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from tests.conftest import CHAT_DEPLOYMENT

MODEL = "smollm2-135m-instruct"
# A conversation as Claude Code shapes it: system blocks, a mid-conversation system turn,
# an earlier answer sent back with its thinking and citations.
CONVERSATION: dict[str, Any] = {
    "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "user",
         "content": [{"type": "text", "text": "Name a colour.", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Any colour will do.", "signature": "sig"},
            {"type": "text", "text": "Blue.", "citations": None},
        ]},
        {"role": "system", "content": "Use one word."},
        {"role": "user", "content": "Another?"},
    ],
}  # fmt: skip
HINTS = {
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "output_config": {"effort": "low"},
    "metadata": {"user_id": "u-1"},
}


async def _usage(app: FastAPI, client: httpx.AsyncClient) -> tuple[int, int]:
    [deployment] = [
        d for d in (await client.get("/v4/model-deployments")).json()["items"] if d["name"] == CHAT_DEPLOYMENT
    ]
    await app.state.usage.flush()
    now = datetime.now(UTC)
    window = {"start_date": (now - timedelta(hours=1)).isoformat(), "end_date": (now + timedelta(hours=1)).isoformat()}
    statistics = await client.get(
        f"/v4/model-deployments/{deployment['id']}/usage-statistics", params={**window, "chunks": 1}
    )
    assert statistics.status_code == 200, statistics.text
    [chunk] = statistics.json()["data"]
    return chunk["prompt_tokens"], chunk["response_tokens"]


async def test_count_tokens_is_the_answers_input_tokens_and_records_nothing(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    before = await _usage(app, client)
    counted = await client.post("/v1/messages/count_tokens?beta=true", json={"model": MODEL, **CONVERSATION})
    assert counted.status_code == 200, counted.text
    assert "x-modelport-estimated" not in counted.headers  # the model's own tokenizer counted
    assert await _usage(app, client) == before  # nothing generated, nothing recorded

    answer = await client.post(
        "/v1/messages", json={"model": MODEL, "max_tokens": 3, "temperature": 0, **CONVERSATION, **HINTS}
    )
    assert answer.status_code == 200, answer.text
    # Anthropic's input_tokens leave out what was read from the prompt cache (the engine's
    # prefix cache holds the chat template's start once an earlier request sent it).
    usage = answer.json()["usage"]
    whole = usage["input_tokens"] + (usage.get("cache_read_input_tokens") or 0)
    assert counted.json()["input_tokens"] == whole + (usage.get("cache_creation_input_tokens") or 0) > 0
    # The embedded model cannot think: it answers without thinking blocks.
    assert [block["type"] for block in answer.json()["content"]] == ["text"]


async def test_bad_bodies_are_400s_in_anthropics_shape_naming_the_field(client: httpx.AsyncClient) -> None:
    hello = [{"role": "user", "content": "Hi"}]
    cases = {
        "frobnicate": {"model": MODEL, "max_tokens": 5, "messages": hello, "frobnicate": True},
        "budget_tokens": {"model": MODEL, "max_tokens": 5, "messages": hello,
                          "thinking": {"type": "enabled", "budget_tokens": -1}},
        "signature": {"model": MODEL, "max_tokens": 5, "messages": [
            *hello, {"role": "assistant", "content": [{"type": "thinking", "thinking": "t"}]}]},
        "cache_control": {"model": MODEL, "max_tokens": 5, "messages": hello,
                          "system": [{"type": "text", "text": "s", "cache_control": {"type": "forever"}}]},
        "input_schema": {"model": MODEL, "max_tokens": 5, "messages": hello,
                         "tools": [{"name": "t", "type": "custom"}]},
    }  # fmt: skip
    for field, body in cases.items():
        for path in ("/v1/messages", "/v1/messages/count_tokens"):
            sent = {name: value for name, value in body.items() if path == "/v1/messages" or name != "max_tokens"}
            answer = await client.post(path, json=sent)
            assert answer.status_code == 400, (path, field, answer.text)
            error = answer.json()
            assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
            assert field in error["error"]["message"], (path, field, error)


async def test_the_openapi_document_declares_both_bodies(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path, required in (("/v1/messages", "max_tokens"), ("/v1/messages/count_tokens", "messages")):
        schema = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert required in schema["required"] and "thinking" in schema["properties"]
        assert "$defs" not in str(schema)  # self-contained: every reference inlined
