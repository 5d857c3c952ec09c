"""An OpenAI-compatible deployment (LLMENGINE with a base_url) replaying llama.cpp's
server: real answers, recorded by fixtures/recorded/record_llama_cpp_server.py, with
no server started. modelport sends the request that produced each recording (so the
replay is the answer that request gets) and returns what the server said: its text,
counts and finish reason, whole and streamed, and its per-token embedding vectors
mean-pooled into one unit vector.

The live-server tests (test_openai_compatible.py, test_llama_server_embeddings.py)
check the same against a running server; these hold the exact bytes a server sent."""

from __future__ import annotations

import json
import math
from typing import Any

from tests.vendors.conftest import deploy
from tests.vendors.recorded import RECORDED

HERE = RECORDED / "llama-cpp-server"
EXCHANGES: dict[str, Any] = json.loads((HERE / "exchanges.json").read_text())["exchanges"]
BASE_URL = "http://llama-server.test/v1"


def recorded_request(name: str) -> dict[str, Any]:
    request: dict[str, Any] = EXCHANGES[name]["request"]
    return request


def v4_chat(name: str) -> dict[str, Any]:
    """The v4 body that asks what the recorded request asked."""
    request = recorded_request(name)
    *history, prompt = request["messages"]
    return {
        "chat_history": history,
        "prompt": prompt["content"],
        "temperature": request["temperature"],
        "max_tokens": request["max_tokens"],
        "stream": bool(request.get("stream")),
    }


def data_events(raw: str) -> list[dict[str, Any]]:
    payloads = [line[6:] for line in raw.splitlines() if line.startswith("data: ")]
    return [json.loads(payload) for payload in payloads if payload != "[DONE]"]


async def test_a_recorded_answer_comes_back_with_the_servers_text_and_counts(recorded_app: Any) -> None:
    _app, client, transport = recorded_app
    deployment = await deploy(client, vendor="LLMENGINE", base_url=BASE_URL, model="smollm2")
    transport.answers["smollm2"] = (200, "recorded/llama-cpp-server/chat.json")
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json=v4_chat("chat.json"))
    assert response.status_code == 200, response.text

    sent, wanted = transport.last_body(), recorded_request("chat.json")
    assert {key: sent[key] for key in wanted} == wanted
    recorded = json.loads((HERE / "chat.json").read_text())
    result = response.json()
    assert result["completions"][0][1] == [recorded["choices"][0]["message"]["content"]]
    assert (result["prompt_tokens"], result["response_tokens"]) == (
        recorded["usage"]["prompt_tokens"],
        recorded["usage"]["completion_tokens"],
    )
    assert result["finish_reason"] == recorded["choices"][0]["finish_reason"]


async def test_a_recorded_stream_comes_back_delta_by_delta(recorded_app: Any) -> None:
    _app, client, transport = recorded_app
    deployment = await deploy(client, vendor="LLMENGINE", base_url=BASE_URL, model="smollm2")
    transport.answers["smollm2"] = (200, "recorded/llama-cpp-server/stream.sse")
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json=v4_chat("stream.sse"))
    assert response.status_code == 200, response.text

    sent, wanted = transport.last_body(), recorded_request("stream.sse")
    assert {key: sent[key] for key in wanted} == wanted
    chunks = data_events((HERE / "stream.sse").read_text())
    upstream_text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"])
    events = data_events(response.text)
    assert "".join(event["completions"][0][1][0] for event in events) == upstream_text
    assert events[-1]["finish_reason"] == [c for c in chunks if c["choices"]][-1]["choices"][0]["finish_reason"]
    # llama.cpp's server sends no usage on a stream: the counts are there all the same.
    assert events[-1]["prompt_tokens"] > 0 and events[-1]["response_tokens"] > 0


async def test_recorded_per_token_vectors_are_mean_pooled_into_one_unit_vector(recorded_app: Any) -> None:
    _app, client, transport = recorded_app
    deployment = await deploy(
        client, vendor="LLMENGINE", model_type="EMBEDDING", base_url=BASE_URL, model="smollm2-embedding"
    )
    transport.answers["smollm2-embedding"] = (200, "recorded/llama-cpp-server/embeddings.json")
    text = recorded_request("embeddings.json")["input"]
    response = await client.post(f"/v4/models/{deployment}/embeddings", json={"texts": [text]})
    assert response.status_code == 200, response.text

    # SmolLM2 declares no pooling: the server answered one vector per token of the text.
    [item] = json.loads((HERE / "embeddings.json").read_text())["data"]
    per_token = item["embedding"]
    assert len(per_token) > 1 and all(len(vector) == len(per_token[0]) for vector in per_token)
    mean = [sum(column) / len(per_token) for column in zip(*per_token, strict=True)]
    norm = math.sqrt(sum(x * x for x in mean))
    [vector] = response.json()["embeddings"]
    assert max(abs(x - y / norm) for x, y in zip(vector, mean, strict=True)) < 1e-6
