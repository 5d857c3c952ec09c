"""Anthropic's `tool_choice.disable_parallel_tool_use` (issue 26) reaches a deployment of
another vendor as OpenAI's `parallel_tool_calls`: an OpenAI-compatible upstream answered
in-process shows what it was sent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from modelport.config import Settings
from tests.api.test_legacy_functions import WEATHER, Upstream
from tests.conftest import ADMIN_KEY, in_process

TOOL = {"name": WEATHER["name"], "description": WEATHER["description"], "input_schema": WEATHER["parameters"]}


@pytest.fixture(scope="module")
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture(scope="module")
async def client(upstream: Upstream, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=database_url, api_key=ADMIN_KEY, embedded_engine=False, upstream_attempts=1)
    async with in_process(settings, upstream=httpx.MockTransport(upstream)) as (_, http):
        made = await http.post(
            "/v4/models",
            json={"name": "tools", "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI",
                  "model_creation_parameters": {"base_url": "http://upstream.test/v1", "model": "up"}},
        )  # fmt: skip
        assert made.status_code == 200, made.text
        assert (await http.post(f"/v4/models/{made.json()['id']}/deployments", json={"name": "d"})).is_success
        yield http


@pytest.mark.parametrize(("disable", "sent"), [(True, False), (False, True), (None, None)])
async def test_disable_parallel_tool_use_is_sent_as_parallel_tool_calls(
    client: httpx.AsyncClient, upstream: Upstream, disable: bool | None, sent: bool | None
) -> None:
    choice: dict[str, object] = {"type": "auto"}
    if disable is not None:
        choice["disable_parallel_tool_use"] = disable
    answer = await client.post(
        "/v1/messages",
        json={"model": "tools", "max_tokens": 50, "messages": [{"role": "user", "content": "Weather in Paris?"}],
              "tools": [TOOL], "tool_choice": choice},
        headers={"anthropic-version": "2023-06-01"},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.json()["stop_reason"] == "tool_use"
    assert upstream.sent[-1].get("parallel_tool_calls") == sent
    assert "x-modelport-dropped" not in answer.headers
