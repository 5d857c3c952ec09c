"""OpenAI specifics against answers in OpenAI's documented shapes (fixtures/documented/openai):
reasoning models, logprobs, refusals."""

from __future__ import annotations

from typing import Any

import httpx

from tests.vendors.conftest import deploy


async def run(recorded_app: Any, fixture: str, model: str, **body: Any) -> tuple[httpx.Response, Any]:
    _app, client, transport = recorded_app
    transport.answers[model] = (200, fixture)
    deployment = await deploy(client, vendor="OPENAI", model=model)
    return await client.post(
        f"/v4/models/{deployment}/chat-completions", json={"chat_history": [], "prompt": "Hi", **body}
    ), transport


async def test_reasoning_models_get_max_completion_tokens_and_no_temperature(recorded_app: Any) -> None:
    response, transport = await run(
        recorded_app,
        "documented/openai/reasoning.json",
        "o3-mini",
        max_tokens=64,
        reasoning_effort="low",
        temperature=0.7,
    )
    assert response.status_code == 200, response.text
    sent = transport.last_body()
    assert (sent["max_completion_tokens"], sent["reasoning_effort"]) == (64, "low")
    assert "temperature" not in sent and "max_tokens" not in sent
    assert (response.json()["finish_reason"], response.json()["response_tokens"]) == ("length", 64)


async def test_reasoning_effort_is_left_out_for_other_models_and_named(recorded_app: Any) -> None:
    response, transport = await run(
        recorded_app, "documented/openai/chat_logprobs.json", "gpt-4o-mini", reasoning_effort="low"
    )
    assert response.status_code == 200, response.text
    assert "reasoning_effort" not in transport.last_body()
    assert response.headers["x-modelport-dropped"] == "reasoning_effort"


async def test_what_changes_the_sampling_stays_refused_by_a_reasoning_model(recorded_app: Any) -> None:
    response, _ = await run(recorded_app, "documented/openai/reasoning.json", "o3-mini", top_p=0.5)
    assert response.status_code == 400 and "top_p" in response.json()["detail"]


async def test_logprobs_keep_the_raw_bytes_of_split_characters(recorded_app: Any) -> None:
    response, transport = await run(
        recorded_app, "documented/openai/chat_logprobs.json", "gpt-4o-mini", logprobs=True, top_logprobs=2
    )
    assert (transport.last_body()["logprobs"], transport.last_body()["top_logprobs"]) == (True, 2)
    content = response.json()["choices"][0]["logprobs"]["content"]
    assert bytes(byte for entry in content for byte in entry["bytes"]).decode("utf-8") == "Hi 😀"
    assert "".join(entry["token"] for entry in content) == response.json()["completions"][0][1][0] == "Hi 😀"
    assert [alt["token"] for alt in content[0]["top_logprobs"]] == ["Hi", "Hello"]


async def test_a_refusal_is_content_filter_with_empty_text(recorded_app: Any) -> None:
    response, _ = await run(recorded_app, "documented/openai/chat_refusal.json", "gpt-4o")
    assert response.status_code == 200
    assert (response.json()["finish_reason"], response.json()["completions"][0][1]) == ("content_filter", [""])


async def test_unsupported_parameters_can_be_dropped_by_the_model(recorded_app: Any) -> None:
    _app, client, transport = recorded_app
    transport.answers["gpt-drop"] = (200, "documented/openai/chat_logprobs.json")
    deployment = await deploy(client, vendor="OPENAI", model="gpt-drop", drop_unsupported_params=True)
    response = await client.post(
        f"/v4/models/{deployment}/chat-completions", json={"chat_history": [], "prompt": "Hi", "top_k": 3}
    )
    assert response.status_code == 200
    assert "top_k" not in transport.last_body()
