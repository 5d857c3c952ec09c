"""OPENAI and LLMENGINE (base_url, protocol openai) deployments against a real
OpenAI-compatible upstream: llama.cpp's server with the same SmolLM2 GGUF."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.vendors.conftest import deploy

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a fruit."}]


def text_of(body: dict[str, Any]) -> str:
    return str(body["completions"][0][1][0])


async def straight_to(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """The upstream's own answer, asked twice. llama.cpp's server reuses the cached
    prefix of a repeated prompt and evaluates only its last token, a different batch
    shape that can flip a greedy tie. The second answer is given from the same state
    that modelport's request (the same prompt again) will find."""
    async with httpx.AsyncClient(timeout=60) as upstream:
        await upstream.post(url, json=body)
        response = await upstream.post(url, json=body)
    answer: dict[str, Any] = response.json()
    return answer


def joined(raw: str) -> tuple[str, list[dict[str, Any]]]:
    import json

    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ")]
    return "".join(text_of(event) for event in events), events


@pytest.mark.parametrize("vendor", ["OPENAI", "LLMENGINE"])
async def test_greedy_text_through_modelport_equals_the_upstreams(
    vendor_app: tuple[Any, httpx.AsyncClient], llama_server: str, vendor: str
) -> None:
    _app, client = vendor_app
    deployment = await deploy(client, vendor=vendor, base_url=llama_server, model="smollm2")
    direct = await straight_to(
        f"{llama_server}/chat/completions",
        {"model": "smollm2", "messages": MESSAGES, "temperature": 0, "max_tokens": 30},
    )
    body = {"chat_history": MESSAGES[:1], "prompt": MESSAGES[1]["content"], "temperature": 0, "max_tokens": 30}
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert text_of(result) == direct["choices"][0]["message"]["content"]
    assert result["prompt_tokens"] == direct["usage"]["prompt_tokens"]
    assert result["response_tokens"] == direct["usage"]["completion_tokens"]
    streamed = await client.post(f"/v4/models/{deployment}/chat-completions", json={**body, "stream": True})
    text, events = joined(streamed.text)
    assert text == text_of(result)
    assert events[-1]["finish_reason"] == result["finish_reason"]


async def test_stop_sequences_are_enforced_on_upstream_text(
    vendor_app: tuple[Any, httpx.AsyncClient], llama_server: str
) -> None:
    _app, client = vendor_app
    deployment = await deploy(client, vendor="LLMENGINE", base_url=llama_server, model="smollm2")
    body = {"chat_history": [], "prompt": "Tell me about the sea.", "temperature": 0, "max_tokens": 40}
    free = text_of((await client.post(f"/v4/models/{deployment}/chat-completions", json=body)).json())
    stop = free.split()[len(free.split()) // 2]
    for stream in (False, True):
        response = await client.post(
            f"/v4/models/{deployment}/chat-completions", json={**body, "stop_sequences": [stop], "stream": stream}
        )
        text = joined(response.text)[0] if stream else text_of(response.json())
        assert text == free[: free.index(stop)]


async def test_llm_engine_takes_top_k_and_openai_refuses_it(
    vendor_app: tuple[Any, httpx.AsyncClient], llama_server: str
) -> None:
    _app, client = vendor_app
    body = {"chat_history": [], "prompt": "Hi", "temperature": 0.5, "max_tokens": 5, "top_k": 5}
    engine = await deploy(client, vendor="LLMENGINE", base_url=llama_server, model="smollm2")
    assert (await client.post(f"/v4/models/{engine}/chat-completions", json=body)).status_code == 200
    openai = await deploy(client, vendor="OPENAI", base_url=llama_server, model="smollm2")
    refused = await client.post(f"/v4/models/{openai}/chat-completions", json=body)
    assert refused.status_code == 400
    assert "top_k" in refused.json()["detail"] and "OPENAI" in refused.json()["detail"]


async def test_plain_completions_go_to_the_completions_api(
    vendor_app: tuple[Any, httpx.AsyncClient], llama_server: str
) -> None:
    _app, client = vendor_app
    deployment = await deploy(client, vendor="OPENAI", model_type="COMPLETION", base_url=llama_server, model="smollm2")
    direct = await straight_to(
        f"{llama_server}/completions",
        {"model": "smollm2", "prompt": "The capital of France is", "temperature": 0, "max_tokens": 8},
    )
    response = await client.post(
        f"/v4/models/{deployment}/completions",
        json={"prompt": "The capital of France is", "temperature": 0, "max_tokens": 8},
    )
    assert response.status_code == 200, response.text
    assert text_of(response.json()) == direct["choices"][0]["text"]
