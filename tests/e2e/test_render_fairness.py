"""The render pool's fair shares (issue 21, finding 8), against a real `modelport serve`
process: one account floods it with slow chat templates while another account chats
and a load balancer probes /health/live. Templates render in Python threads that hold
the GIL, so the server's event loop, not the client's, is what a flood slows: the
client here is in another process."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import E2E_KEY
from tests.servers import free_port, modelport_serving, running

pytestmark = pytest.mark.e2e

# About a second of rendering (it runs until the render's time limit, then 400): a
# hundred thousand loop steps, each writing a little text through a filter.
SLOW_TEMPLATE = "{% for i in range(100000) %}{{ (i ~ 'x') | upper }}{% endfor %}"
FLOOD = 30


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A modelport server and a plain OpenAI-compatible upstream (base URLs)."""
    data = tmp_path_factory.mktemp("render-fairness")
    upstream_port = free_port()
    with (
        running(
            [sys.executable, "-m", "tests.paced_upstream", "--port", str(upstream_port)],
            ready_url=f"http://127.0.0.1:{upstream_port}/",
            log_path=data / "upstream.log",
            env={**os.environ},
        ),
        modelport_serving(data, api_key=E2E_KEY, embedded_engine="false", upstream_attempts="1") as base,
    ):
        yield base, f"http://127.0.0.1:{upstream_port}"


def _deploy(client: httpx.Client, account: str, vendor: str, parameters: dict[str, Any]) -> str:
    headers = {"x-selected-account-id": account}
    model = client.post(
        "/v4/models",
        json={
            "name": f"m-{vendor.lower()}",
            "model_type": "CHAT_COMPLETION",
            "model_vendor": vendor,
            "model_creation_parameters": parameters,
        },
        headers=headers,
    )
    assert model.status_code == 200, model.text
    deployment = client.post(f"/v4/models/{model.json()['id']}/deployments", json={"name": "d"}, headers=headers)
    assert deployment.status_code == 200, deployment.text
    return str(deployment.json()["id"])


@pytest.fixture(scope="module")
def deployed(servers: tuple[str, str]) -> dict[str, str]:
    """Two accounts: "flood" with a model whose (slow) template the gateway renders,
    "calm" with a plain upstream model; their ids and deployments."""
    base, upstream = servers
    found = {}
    with httpx.Client(base_url=base, headers={"x-api-key": E2E_KEY}, timeout=30) as client:
        for name in ("flood", "calm"):
            created = client.post("/accounts", json={"account_name": f"{name}-{uuid.uuid4().hex[:8]}"})
            assert created.status_code == 200, created.text
            found[name] = created.json()["account_id"]
        found["flood_deployment"] = _deploy(
            client,
            found["flood"],
            "LLMENGINE",
            {"base_url": upstream, "model": "ep", "protocol": "llmengine-v1", "chat_template": SLOW_TEMPLATE},
        )
        found["calm_deployment"] = _deploy(
            client, found["calm"], "OPENAI", {"base_url": f"{upstream}/v1", "model": "paced-0"}
        )
    return found


async def test_one_account_flooding_slow_templates_leaves_others_and_liveness_answering(
    servers: tuple[str, str], deployed: dict[str, str]
) -> None:
    base, _ = servers
    accounts = deployed
    flood_deployment, calm_deployment = deployed["flood_deployment"], deployed["calm_deployment"]
    chat = {"chat_history": [], "prompt": "hi", "max_tokens": 5}
    async with httpx.AsyncClient(
        base_url=base, headers={"x-api-key": E2E_KEY}, timeout=60, limits=httpx.Limits(max_connections=FLOOD + 4)
    ) as client:
        flood_answers: list[httpx.Response] = []
        first_answer = asyncio.Event()
        stop = asyncio.Event()

        async def keep_flooding() -> None:
            # FLOOD requests in flight at every moment, until the checks are done.
            while not stop.is_set():
                flood_answers.append(
                    await client.post(
                        f"/v4/models/{flood_deployment}/chat-completions",
                        json=chat,
                        headers={"x-selected-account-id": accounts["flood"]},
                    )
                )
                first_answer.set()

        async def timed(request: Any) -> tuple[httpx.Response, float]:
            started = time.monotonic()
            answer = await request
            return answer, time.monotonic() - started

        flood = [asyncio.create_task(keep_flooding()) for _ in range(FLOOD)]
        try:
            # An answer to the flood shows that it reached the server, which renders on.
            await asyncio.wait_for(first_answer.wait(), 30)
            calm, calm_seconds = await timed(
                client.post(
                    f"/v4/models/{calm_deployment}/chat-completions",
                    json=chat,
                    headers={"x-selected-account-id": accounts["calm"]},
                )
            )
            live, live_seconds = await timed(client.get("/health/live"))
        finally:
            stop.set()
            await asyncio.gather(*flood)

    assert calm.status_code == 200, calm.text
    assert live.status_code == 200
    # Answered while the flood was being served, in a time that is generous on a busy
    # machine (30 one-second renders at once took the other account's chat to 4.5-9.8 s
    # and /health/live to 2-5.7 s before).
    assert calm_seconds < 4.0, calm_seconds
    assert live_seconds < 2.0, live_seconds
    statuses = [answer.status_code for answer in flood_answers]
    assert set(statuses) <= {200, 400, 429, 502}, statuses
    # The flooding account was held to its share: the renders beyond it were refused,
    # naming the setting, rather than queued without end.
    refused = [answer.json()["detail"] for answer in flood_answers if answer.status_code == 429]
    assert refused and all("template_renders_per_account" in detail for detail in refused), statuses
