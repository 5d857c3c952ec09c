"""LAUNCH, Scale Launch's name for what became LLM Engine: its models run on LLM Engine's
adapters, over either of its protocols, with LLM Engine's settings and defaults."""

from __future__ import annotations

from typing import Any

from tests.vendors.conftest import deploy

CHAT = {"chat_history": [], "prompt": "The capital of France is"}


async def test_launch_speaks_llm_engines_openai_protocol(recorded_app: Any) -> None:
    _app, client, transport = recorded_app
    transport.answers["launch-chat"] = (200, "documented/openai/chat_cached.json")
    deployment = await deploy(client, vendor="LAUNCH", model="launch-chat", base_url="http://launch.test/v1")
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json={**CHAT, "top_k": 5})
    assert response.status_code == 200, response.text
    assert response.json()["completions"][0][1] == ["Paris."]
    request = transport.sent[-1]
    assert (request.url.host, request.url.path) == ("launch.test", "/v1/chat/completions")
    sent = transport.last_body()
    # LLM Engine's own: top_k passed on, and the platform's default of 100 tokens.
    assert (sent["model"], sent["top_k"], sent["max_tokens"]) == ("launch-chat", 5, 100)


async def test_launch_speaks_llm_engine_v1(recorded_app: Any) -> None:
    _app, client, transport = recorded_app
    transport.answers["launch-v1"] = (200, "documented/llmengine/sync.json")
    deployment = await deploy(
        client, vendor="LAUNCH", model_type="COMPLETION", model="launch-v1", base_url="http://launch.test",
        protocol="llmengine-v1",
    )  # fmt: skip
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json={**CHAT, "stop_sequences": ["END"]})
    assert response.status_code == 200, response.text
    assert response.json()["completions"][0][1] == [" Paris. "]
    assert transport.sent[-1].url.path == "/v1/llm/completions-sync"


async def test_launch_takes_llm_engines_settings_only(recorded_app: Any) -> None:
    _app, client, _transport = recorded_app
    created = await client.post(
        "/v4/models",
        json={"name": "launch-typo", "model_type": "CHAT_COMPLETION", "model_vendor": "LAUNCH",
              "model_creation_parameters": {"model": "m", "base_url": "http://launch.test", "protocl": "openai"}},
    )  # fmt: skip
    assert created.status_code == 422 and "protocl" in created.text
