"""The Anthropic adapter against Messages API answers written from Anthropic's API reference
(fixtures/documented/anthropic)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from modelport.vendors.anthropic import _thinking
from tests.vendors.conftest import deploy

HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi."},
    {"role": "user", "content": "Still there?"},
    {"role": "assistant", "content": "Yes."},
    {"role": "system", "content": "Answer in English."},
]


async def run(recorded_app: Any, answer: tuple[int, str], model: str, **body: Any) -> tuple[httpx.Response, Any]:
    _app, client, transport = recorded_app
    transport.answers[model] = answer
    deployment = await deploy(client, vendor="ANTHROPIC", model=model, api_key_env="ANTHROPIC_TEST_KEY")
    request = {"chat_history": HISTORY, "prompt": "Capital of France?", **body}
    return await client.post(f"/v4/models/{deployment}/chat-completions", json=request), transport


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_TEST_KEY", "sk-ant-test-secret-0000")


async def test_a_message_and_the_request_that_produced_it(recorded_app: Any) -> None:
    response, transport = await run(
        recorded_app,
        (200, "documented/anthropic/message.json"),
        "claude-a",
        temperature=1.5,
        stop_sequences=["###"],
        top_k=5,
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["completions"] == [["Capital of France?", ["Paris is the capital of France."]]]
    assert (result["finish_reason"], result["prompt_tokens"], result["response_tokens"]) == ("stop", 15, 8)
    sent = transport.last_body()
    assert sent["system"] == "Be brief.\n\nAnswer in English."
    # Same-role turns merged; the prompt is the last user turn; roles alternate.
    assert [turn["role"] for turn in sent["messages"]] == ["user", "assistant", "user"]
    assert [part["text"] for part in sent["messages"][0]["content"]] == ["Hi.", "Still there?"]
    assert sent["temperature"] == 1.0  # clamped to Anthropic's ceiling, not refused
    assert sent["max_tokens"] == 10_000
    assert (sent["stop_sequences"], sent["top_k"]) == (["###"], 5)
    headers = transport.sent[-1].headers
    assert headers["x-api-key"] == "sk-ant-test-secret-0000" and headers["anthropic-version"] == "2023-06-01"


async def test_max_tokens_is_length_and_refusal_is_content_filter(recorded_app: Any) -> None:
    response, _ = await run(
        recorded_app, (200, "documented/anthropic/message_max_tokens.json"), "claude-b", max_tokens=4
    )
    assert response.json()["finish_reason"] == "length"
    response, _ = await run(recorded_app, (200, "documented/anthropic/message_refusal.json"), "claude-c")
    assert response.status_code == 200
    assert (response.json()["finish_reason"], response.json()["completions"][0][1]) == ("content_filter", [""])


async def test_a_stop_sequence_the_vendor_left_in_is_removed(recorded_app: Any) -> None:
    response, _ = await run(
        recorded_app, (200, "documented/anthropic/message_keeps_stop.json"), "claude-d", stop_sequences=["END"]
    )
    assert response.json()["completions"][0][1] == ["one two "]
    assert response.json()["finish_reason"] == "stop"


async def test_streaming_text_and_cumulative_usage(recorded_app: Any) -> None:
    response, transport = await run(recorded_app, (200, "documented/anthropic/stream.sse"), "claude-e", stream=True)
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert "".join(event["completions"][0][1][0] for event in events) == "Hello!"
    assert (events[-1]["finish_reason"], events[-1]["prompt_tokens"], events[-1]["response_tokens"]) == ("stop", 25, 15)
    assert transport.last_body()["stream"] is True


async def test_an_error_event_mid_stream_reaches_the_client(recorded_app: Any) -> None:
    response, _ = await run(recorded_app, (200, "documented/anthropic/stream_error.sse"), "claude-f", stream=True)
    assert response.text.split("\n\n")[0].startswith("data: ")
    assert "event: error" in response.text and "Overloaded" in response.text


async def test_a_vendor_400_is_400_with_its_message(recorded_app: Any) -> None:
    response, _ = await run(recorded_app, (400, "documented/anthropic/error_roles.json"), "claude-g")
    assert response.status_code == 400
    assert "roles must alternate" in response.json()["detail"]


async def test_parameters_anthropic_lacks_are_refused(recorded_app: Any) -> None:
    for parameter, value in (("frequency_penalty", 0.5), ("logprobs", True)):
        response, _ = await run(
            recorded_app, (200, "documented/anthropic/message.json"), "claude-h", **{parameter: value}
        )
        assert response.status_code == 400
        assert parameter in response.json()["detail"] and "ANTHROPIC" in response.json()["detail"]


@pytest.mark.parametrize(
    ("effort", "max_tokens", "thinking"),
    [
        ("high", 20_000, {"type": "enabled", "budget_tokens": 16_384}),
        ("high", 9_000, {"type": "enabled", "budget_tokens": 8_999}),  # within max_tokens
        ("low", 4_000, {"type": "enabled", "budget_tokens": 1_024}),
        ("medium", 800, None),  # too short an answer for Anthropic's smallest budget
    ],
)
async def test_reasoning_effort_becomes_a_thinking_budget(
    recorded_app: Any, effort: str, max_tokens: int, thinking: dict[str, Any] | None
) -> None:
    response, transport = await run(
        recorded_app, (200, "documented/anthropic/message.json"), f"claude-sonnet-4-5-{effort}-{max_tokens}",
        reasoning_effort=effort, max_tokens=max_tokens, temperature=0.2, top_k=5,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert "reasoning_effort" not in response.headers.get("x-modelport-dropped", "")  # honoured
    sent = transport.last_body()
    assert sent.get("thinking") == thinking
    if thinking is not None:  # Anthropic thinks only at temperature 1, without top_k
        assert sent["temperature"] == 1.0 and "top_k" not in sent
    else:
        assert (sent["temperature"], sent["top_k"]) == (0.2, 5)


async def test_a_model_that_cannot_think_gets_no_thinking_and_the_effort_is_named(recorded_app: Any) -> None:
    response, transport = await run(
        recorded_app, (200, "documented/anthropic/message.json"), "claude-3-5-haiku-20241022", reasoning_effort="high",
        max_tokens=9_000,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert "reasoning_effort" in response.headers["x-modelport-dropped"]
    assert "thinking" not in transport.last_body()


def test_the_efforts_only_openai_has_map_too() -> None:
    assert _thinking("xhigh", 64_000) == {"type": "enabled", "budget_tokens": 32_768}
    assert _thinking("minimal", 64_000) is None and _thinking("none", 64_000) is None
    assert _thinking(None, 64_000) is None
