"""The Gemini adapter against generateContent / streamGenerateContent answers written from
Google's API reference (fixtures/documented/google)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.vendors.conftest import deploy

HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi."},
    {"role": "assistant", "content": "Hello."},
]


async def run(recorded_app: Any, answer: tuple[int, str], model: str, **body: Any) -> tuple[httpx.Response, Any]:
    _app, client, transport = recorded_app
    transport.answers[model] = answer
    deployment = await deploy(client, vendor="GOOGLE", model=model)
    request = {"chat_history": HISTORY, "prompt": "Capital of France?", **body}
    return await client.post(f"/v4/models/{deployment}/chat-completions", json=request), transport


async def test_generate_content_and_the_request_that_produced_it(recorded_app: Any) -> None:
    response, transport = await run(
        recorded_app, (200, "documented/google/generate.json"), "gemini-a", temperature=0.5, top_k=3, top_p=0.9,
        max_tokens=50, stop_sequences=["###"], presence_penalty=0.1,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["completions"][0][1] == ["Paris is the capital of France."]
    assert (result["finish_reason"], result["prompt_tokens"], result["response_tokens"]) == ("stop", 9, 7)
    request = transport.sent[-1]
    assert request.url.path.endswith("/models/gemini-a:generateContent")
    sent = transport.last_body()
    assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [turn["role"] for turn in sent["contents"]] == ["user", "model", "user"]
    assert sent["generationConfig"] == {
        "candidateCount": 1, "temperature": 0.5, "topK": 3, "topP": 0.9, "maxOutputTokens": 50,
        "stopSequences": ["###"], "presencePenalty": 0.1,
    }  # fmt: skip


async def test_max_tokens_counts_thoughts_as_response_tokens(recorded_app: Any) -> None:
    response, _ = await run(recorded_app, (200, "documented/google/generate_max_tokens.json"), "gemini-b")
    assert (response.json()["finish_reason"], response.json()["response_tokens"]) == ("length", 5)


async def test_safety_and_blocked_prompts_are_content_filter_not_errors(recorded_app: Any) -> None:
    for model, fixture in (
        ("gemini-c", "documented/google/generate_safety.json"),
        ("gemini-d", "documented/google/generate_blocked_prompt.json"),
    ):
        response, _ = await run(recorded_app, (200, fixture), model)
        assert response.status_code == 200
        assert response.json()["finish_reason"] == "content_filter"
        assert response.json()["completions"][0][1] == [""]


async def test_streaming_frames_with_usage_on_the_last(recorded_app: Any) -> None:
    response, transport = await run(recorded_app, (200, "documented/google/stream.sse"), "gemini-e", stream=True)
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert "".join(event["completions"][0][1][0] for event in events) == "Hello there!"
    assert (events[-1]["finish_reason"], events[-1]["prompt_tokens"], events[-1]["response_tokens"]) == ("stop", 4, 3)
    assert transport.sent[-1].url.params["alt"] == "sse"
    assert transport.sent[-1].url.path.endswith(":streamGenerateContent")


async def test_an_invalid_argument_is_400_with_googles_message(recorded_app: Any) -> None:
    response, _ = await run(recorded_app, (400, "documented/google/error_invalid.json"), "gemini-f")
    assert response.status_code == 400
    assert "generation_config.top_k" in response.json()["detail"]


async def test_logprobs_are_refused_for_gemini(recorded_app: Any) -> None:
    response, _ = await run(recorded_app, (200, "documented/google/generate.json"), "gemini-g", logprobs=True)
    assert response.status_code == 400 and "GOOGLE" in response.json()["detail"]
