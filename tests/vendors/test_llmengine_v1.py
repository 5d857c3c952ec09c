"""LLM Engine v1 (`protocol: llmengine-v1`) against answers in its documented shapes:
no finish reason from the vendor, stop strings left in the text, temperature capped at 1."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.vendors.conftest import deploy

CHAT = {"chat_history": [], "prompt": "The capital of France is"}
TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant]"


async def run(
    recorded_app: Any, answer: tuple[int, str], endpoint: str, *, model_type: str = "COMPLETION", **body: Any
) -> tuple[httpx.Response, Any]:
    _app, client, transport = recorded_app
    transport.answers[endpoint] = answer
    deployment = await deploy(
        client, vendor="LLMENGINE", model_type=model_type, base_url="http://llm-engine.test", model=endpoint,
        protocol="llmengine-v1",
    )  # fmt: skip
    return await client.post(f"/v4/models/{deployment}/chat-completions", json={**CHAT, **body}), transport


async def test_sync_cuts_the_stop_string_the_backend_left_in(recorded_app: Any) -> None:
    response, transport = await run(
        recorded_app, (200, "documented/llmengine/sync.json"), "ep-a", stop_sequences=["END"], temperature=1.5, top_k=5,
        logprobs=True,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["completions"][0][1] == [" Paris. "]
    assert (result["finish_reason"], result["prompt_tokens"], result["response_tokens"]) == ("stop", 6, 8)
    tokens = [entry["token"] for entry in result["choices"][0]["logprobs"]["content"]]
    assert "".join(tokens) == " Paris. "
    request = transport.sent[-1]
    assert request.url.path == "/v1/llm/completions-sync"
    assert request.url.params["model_endpoint_name"] == "ep-a"
    sent = transport.last_body()
    assert (sent["temperature"], sent["max_new_tokens"], sent["top_k"]) == (1.0, 100, 5)
    assert sent["return_token_log_probs"] is True


async def test_reaching_max_new_tokens_is_length(recorded_app: Any) -> None:
    response, _ = await run(recorded_app, (200, "documented/llmengine/sync_at_limit.json"), "ep-b", max_tokens=4)
    assert response.json()["finish_reason"] == "length"


async def test_greedy_requests_leave_out_top_k_and_top_p(recorded_app: Any) -> None:
    _, transport = await run(
        recorded_app, (200, "documented/llmengine/sync.json"), "ep-c", temperature=0, top_k=5, top_p=0.9
    )
    assert "top_k" not in transport.last_body() and "top_p" not in transport.last_body()


async def test_a_stop_split_across_stream_frames_is_cut(recorded_app: Any) -> None:
    response, transport = await run(
        recorded_app, (200, "documented/llmengine/stream.sse"), "ep-d", stream=True, stop_sequences=["END"]
    )
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert "".join(event["completions"][0][1][0] for event in events) == " Paris "
    assert all("EN" not in event["completions"][0][1][0] for event in events)
    assert events[-1]["finish_reason"] == "stop"
    assert events[-1]["response_tokens"] == 4
    assert transport.sent[-1].url.path == "/v1/llm/completions-stream"


async def test_an_error_frame_mid_stream_is_an_error_event(recorded_app: Any) -> None:
    response, _ = await run(recorded_app, (200, "documented/llmengine/stream_error.sse"), "ep-e", stream=True)
    assert "event: error" in response.text and "Internal error" in response.text


async def test_what_v1_cannot_do_is_refused(recorded_app: Any) -> None:
    negative, _ = await run(recorded_app, (200, "documented/llmengine/sync.json"), "ep-f", frequency_penalty=-0.5)
    assert negative.status_code == 400 and "frequency_penalty" in negative.json()["detail"]
    top, _ = await run(recorded_app, (200, "documented/llmengine/sync.json"), "ep-g", logprobs=True, top_logprobs=2)
    assert top.status_code == 400 and "top_logprobs" in top.json()["detail"]
    upstream, _ = await run(recorded_app, (422, "documented/llmengine/error_422.json"), "ep-h")
    assert upstream.status_code == 400 and "less than or equal to 1" in upstream.json()["detail"]


async def test_chat_models_need_a_template_and_use_it(recorded_app: Any) -> None:
    history = [{"role": "system", "content": "Be brief."}]
    missing, _ = await run(
        recorded_app,
        (200, "documented/llmengine/sync.json"),
        "ep-i",
        model_type="CHAT_COMPLETION",
        chat_history=history,
    )
    assert missing.status_code == 400 and "chat_template" in missing.json()["detail"]
    used, transport = await run(
        recorded_app, (200, "documented/llmengine/sync.json"), "ep-j", model_type="CHAT_COMPLETION",
        chat_history=history, chat_template=TEMPLATE,
    )  # fmt: skip
    assert used.status_code == 200
    assert transport.last_body()["prompt"] == "[system] Be brief.\n[user] The capital of France is\n[assistant]"
