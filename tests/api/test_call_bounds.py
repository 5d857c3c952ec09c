"""Messages and tools one request may carry (SPEC 9): over MODELPORT_MAX_MESSAGES or
MODELPORT_MAX_TOOLS a request is a 400 naming the setting, refused before anything is
sent upstream, on the v4 route and on the OpenAI surface alike."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import in_process, sqlite_settings

MAX_MESSAGES, MAX_TOOLS = 3, 2


class Upstream:
    """An OpenAI-compatible upstream answered in-process, counting the calls it gets."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return httpx.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            },
        )


@pytest.fixture(scope="module")
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture(scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> AsyncIterator[httpx.AsyncClient]:
    settings = sqlite_settings(
        tmp_path_factory.mktemp("call-bounds"), upstream_attempts=1, max_messages=MAX_MESSAGES, max_tools=MAX_TOOLS
    )
    async with in_process(settings, upstream=httpx.MockTransport(upstream)) as (_, http):
        yield http


@pytest.fixture(scope="module")
async def model(client: httpx.AsyncClient) -> tuple[str, str]:
    """(model name, deployment id) of an OpenAI-compatible model."""
    name = f"bounded-{uuid.uuid4().hex[:8]}"
    created = await client.post(
        "/v4/models",
        json={
            "name": name,
            "model_type": "CHAT_COMPLETION",
            "model_vendor": "OPENAI",
            "model_creation_parameters": {"base_url": "http://upstream.test/v1", "model": "m"},
        },
    )
    assert created.status_code == 200, created.text
    deployment = await client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "d"})
    assert deployment.status_code == 200, deployment.text
    return name, str(deployment.json()["id"])


def _messages(count: int) -> list[dict[str, str]]:
    return [{"role": "user" if index % 2 == 0 else "assistant", "content": f"m{index}"} for index in range(count)]


def _tools(count: int) -> list[dict[str, object]]:
    return [
        {"type": "function", "function": {"name": f"tool_{index}", "parameters": {"type": "object"}}}
        for index in range(count)
    ]


async def test_messages_up_to_the_bound_are_served_and_one_more_is_a_400_naming_it(
    client: httpx.AsyncClient, model: tuple[str, str], upstream: Upstream
) -> None:
    _, deployment_id = model
    path = f"/v4/models/{deployment_id}/chat-completions"
    # The v4 body's history and prompt make the call's messages.
    served = await client.post(path, json={"chat_history": _messages(MAX_MESSAGES - 1), "prompt": "hi"})
    assert served.status_code == 200, served.text
    before = upstream.calls
    refused = await client.post(path, json={"chat_history": _messages(MAX_MESSAGES), "prompt": "hi"})
    assert refused.status_code == 400, refused.text
    assert "MODELPORT_MAX_MESSAGES" in refused.json()["detail"]
    assert upstream.calls == before  # refused before the upstream was asked


async def test_tools_over_the_bound_are_a_400_naming_it_on_the_openai_surface(
    client: httpx.AsyncClient, model: tuple[str, str], upstream: Upstream
) -> None:
    name, _ = model
    body = {"model": name, "messages": _messages(1)}
    served = await client.post("/v1/chat/completions", json={**body, "tools": _tools(MAX_TOOLS)})
    assert served.status_code == 200, served.text
    before = upstream.calls
    refused = await client.post("/v1/chat/completions", json={**body, "tools": _tools(MAX_TOOLS + 1)})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert "MODELPORT_MAX_TOOLS" in error["message"]
    assert error["param"] == "tools"
    assert upstream.calls == before
