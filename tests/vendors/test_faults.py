"""Upstream failures, through the whole app, against a fake vendor on loopback:
what the caller sees for each, and that retries happen only before the first byte."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.vendors import conftest
from tests.vendors.conftest import deploy

CHAT = {"chat_history": [], "prompt": "Hi", "temperature": 0, "max_tokens": 5}


async def ask(client: httpx.AsyncClient, deployment: str, **extra: Any) -> httpx.Response:
    return await client.post(f"/v4/models/{deployment}/chat-completions", json={**CHAT, **extra})


async def test_a_healthy_stream_reports_usage_from_include_usage(
    fault_app: tuple[Any, httpx.AsyncClient], fake_vendor: str
) -> None:
    _app, client = fault_app
    deployment = await deploy(client, vendor="OPENAI", base_url=fake_vendor, model="ok")
    response = await ask(client, deployment, stream=True)
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert "".join(event["completions"][0][1][0] for event in events) == "Hello"
    assert (events[-1]["finish_reason"], events[-1]["prompt_tokens"], events[-1]["response_tokens"]) == ("length", 7, 2)


async def test_5xx_before_the_first_byte_is_retried(fault_app: tuple[Any, httpx.AsyncClient], fake_vendor: str) -> None:
    _app, client = fault_app
    conftest.FLAKY_CALLS.clear()
    deployment = await deploy(client, vendor="OPENAI", base_url=fake_vendor, model="flaky")
    response = await ask(client, deployment)
    assert response.status_code == 200, response.text
    assert response.json()["completions"][0][1][0] == "finally"
    assert conftest.FLAKY_CALLS["flaky"] == 3


async def test_persistent_5xx_is_502_with_the_vendors_message_and_no_secret(
    fault_app: tuple[Any, httpx.AsyncClient], fake_vendor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _app, client = fault_app
    monkeypatch.setenv("FAKE_VENDOR_KEY", "sk-very-secret-value-123")
    deployment = await deploy(
        client, vendor="OPENAI", base_url=fake_vendor, model="fail-500", api_key_env="FAKE_VENDOR_KEY"
    )
    response = await ask(client, deployment)
    assert response.status_code == 502
    detail = response.json()["detail"]
    assert "internal failure" in detail
    assert "sk-very-secret-value-123" not in response.text


async def test_429_is_passed_on_with_retry_after(fault_app: tuple[Any, httpx.AsyncClient], fake_vendor: str) -> None:
    _app, client = fault_app
    deployment = await deploy(client, vendor="OPENAI", base_url=fake_vendor, model="rate-limited")
    response = await ask(client, deployment)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert "slow down" in response.json()["detail"]
    # One that names no time still gets a Retry-After, as the README promises: a second.
    unsaid = await ask(client, await deploy(client, vendor="OPENAI", base_url=fake_vendor, model="rate-limited-unsaid"))
    assert unsaid.status_code == 429 and unsaid.headers["retry-after"] == "1"


async def test_a_vendor_refusal_is_400(fault_app: tuple[Any, httpx.AsyncClient], fake_vendor: str) -> None:
    _app, client = fault_app
    deployment = await deploy(client, vendor="OPENAI", base_url=fake_vendor, model="refuse-400")
    response = await ask(client, deployment)
    assert response.status_code == 400
    assert "too large" in response.json()["detail"]


async def test_a_stall_past_the_timeout_is_504(fault_app: tuple[Any, httpx.AsyncClient], fake_vendor: str) -> None:
    _app, client = fault_app
    deployment = await deploy(client, vendor="OPENAI", base_url=fake_vendor, model="stall")
    started = time.monotonic()
    response = await ask(client, deployment)
    assert response.status_code == 504
    # 3 tries x 2 s read timeout, plus backoff: bounded, not the vendor's 30 s.
    assert time.monotonic() - started < 10


async def test_a_reset_mid_stream_ends_with_an_error_event(
    fault_app: tuple[Any, httpx.AsyncClient], fake_vendor: str
) -> None:
    _app, client = fault_app
    deployment = await deploy(client, vendor="OPENAI", base_url=fake_vendor, model="reset")
    response = await ask(client, deployment, stream=True)
    assert response.status_code == 200
    blocks = response.text.strip().split("\n\n")
    assert json.loads(blocks[0][6:])["completions"][0][1][0] == "partial"
    assert blocks[-1].startswith("event: error\ndata: ")
    error = json.loads(blocks[-1].split("data: ", 1)[1])
    assert error["status_code"] == 502 and "mid-stream" in error["detail"]


async def test_malformed_sse_is_an_error_event_not_a_crash(
    fault_app: tuple[Any, httpx.AsyncClient], fake_vendor: str
) -> None:
    _app, client = fault_app
    deployment = await deploy(client, vendor="OPENAI", base_url=fake_vendor, model="malformed")
    response = await ask(client, deployment, stream=True)
    blocks = response.text.strip().split("\n\n")
    assert blocks[-1].startswith("event: error")
    assert "not JSON" in blocks[-1]


async def test_an_unset_credential_variable_is_503_naming_it(
    fault_app: tuple[Any, httpx.AsyncClient], fake_vendor: str
) -> None:
    _app, client = fault_app
    deployment = await deploy(client, vendor="OPENAI", base_url=fake_vendor, model="ok", api_key_env="NO_SUCH_KEY_VAR")
    response = await ask(client, deployment)
    assert response.status_code == 503
    assert "NO_SUCH_KEY_VAR" in response.json()["detail"]


async def test_an_unreachable_upstream_is_502(fault_app: tuple[Any, httpx.AsyncClient]) -> None:
    _app, client = fault_app
    from tests.servers import free_port

    deployment = await deploy(client, vendor="OPENAI", base_url=f"http://127.0.0.1:{free_port()}/v1", model="x")
    response = await ask(client, deployment)
    assert response.status_code == 502
    assert "could not reach" in response.json()["detail"]


@pytest.mark.parametrize(
    "parameters",
    [
        {"model": "ok", "api_key": "sk-inline-secret-999"},
        {"model": "ok", "openai_api_key": "sk-inline-secret-999"},
        {"model": "ok", "headers": {"Authorization": "Bearer sk-inline-secret-999"}},
        {"model": "ok", "headers": {"x-api-key": "sk-inline-secret-999"}},
        {"model": "ok", "extra_body": {"nested": [{"password": "sk-inline-secret-999"}]}},
    ],
)
async def test_credentials_in_model_settings_are_refused_and_never_echoed(
    fault_app: tuple[Any, httpx.AsyncClient], parameters: dict[str, Any]
) -> None:
    _app, client = fault_app
    model = await client.post(
        "/v4/models",
        json={"name": "s", "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI",
              "model_creation_parameters": parameters},
    )  # fmt: skip
    assert model.status_code == 422
    assert "/v4/secrets" in model.json()["detail"]
    assert "sk-inline-secret-999" not in model.text


async def test_a_binding_placeholder_in_a_header_is_no_stored_credential(
    fault_app: tuple[Any, httpx.AsyncClient],
) -> None:
    _app, client = fault_app
    model = await client.post(
        "/v4/models",
        json={"name": "bound", "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI",
              "model_creation_parameters": {"model": "ok", "headers": {"Authorization": "Bearer {{ token }}"}}},
    )  # fmt: skip
    assert model.status_code == 200, model.text


@pytest.mark.parametrize("vendor", ["OTHER", "FIREWORKS_AI"])
async def test_other_openai_compatible_vendors_are_served_and_a_404_names_the_url(
    fault_app: tuple[Any, httpx.AsyncClient], fake_vendor: str, vendor: str
) -> None:
    """FIREWORKS_AI and OTHER go through the OpenAI-compatible adapter at their base_url;
    an upstream 404 (a wrong base_url or model) says which address was called."""
    _app, client = fault_app
    served = await deploy(client, vendor=vendor, base_url=fake_vendor, model="ok")
    answer = await ask(client, served)
    assert answer.status_code == 200, answer.text
    assert answer.json()["completions"][0][1][0] == "Hello"
    missing = await deploy(client, vendor=vendor, base_url=fake_vendor, model="no-such-model")
    refused = await ask(client, missing)
    assert refused.status_code == 502
    assert f"404 for {fake_vendor}/chat/completions" in refused.json()["detail"]
    assert "unknown model no-such-model" in refused.json()["detail"]
