"""A client that goes away mid-stream cancels the upstream request too (a real
modelport server between the client and a slow fake vendor)."""

from __future__ import annotations

import time

import httpx

from tests.conftest import E2E_KEY as KEY
from tests.vendors import conftest


def test_closing_the_client_stream_closes_the_upstream_stream(server: str, fake_vendor: str) -> None:
    headers = {"x-api-key": KEY}
    model = httpx.post(
        f"{server}/v4/models",
        json={"name": "slow", "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI",
              "model_creation_parameters": {"base_url": fake_vendor, "model": "slow-stream"}},
        headers=headers,
    ).json()  # fmt: skip
    deployment = httpx.post(
        f"{server}/v4/models/{model['id']}/deployments", json={"name": "slow"}, headers=headers
    ).json()
    before = dict(conftest.SLOW_STREAMS)
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST",
            f"{server}/v4/models/{deployment['id']}/chat-completions",
            json={"chat_history": [], "prompt": "Hi", "stream": True},
            headers=headers,
        ) as response,
    ):
        received = 0
        for line in response.iter_lines():
            received += line.startswith("data:")
            if received == 3:
                break
    # The vendor would stream for 10 s; it must see the connection go within about one.
    deadline = time.monotonic() + 2
    while conftest.SLOW_STREAMS["abandoned"] == before["abandoned"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert conftest.SLOW_STREAMS["started"] == before["started"] + 1
    assert conftest.SLOW_STREAMS["abandoned"] == before["abandoned"] + 1
