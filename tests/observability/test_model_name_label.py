"""`/metrics` names each deployment's model beside its id (issue 25): a dashboard shows
the registry's model name, not a bare UUID. The label's values come from the registry,
so they are as few as its models: a request that names an unknown deployment or model
adds no series.

The upstream is llama.cpp's server, answering from its recorded answers
(tests/vendors/fixtures/recorded/llama-cpp-server)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from modelport.config import Settings
from tests.conftest import ADMIN_KEY, in_process
from tests.vendors.conftest import deploy
from tests.vendors.recorded import RECORDED, Recorded

LLAMA_SERVER = RECORDED / "llama-cpp-server"
CHAT = {"chat_history": [{"role": "system", "content": "You are terse."}], "prompt": "Name a fruit.", "max_tokens": 16}
# The series that carry a deployment.
DEPLOYMENT_SERIES = (
    "modelport_requests_total",
    "gen_ai_client_operation_duration_seconds_count",
    "gen_ai_client_token_usage_sum",
    "gen_ai_server_time_to_first_token_seconds_count",
)


@pytest.fixture(scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[httpx.AsyncClient, Recorded]]:
    transport = Recorded()
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('labels') / 'm.db'}",
        api_key=ADMIN_KEY,
        embedded_engine=False,
        upstream_attempts=1,
        secret_key="a-test-only-secret-key",
    )
    async with in_process(settings, upstream=transport) as (_application, client):
        yield client, transport


async def scrape(client: httpx.AsyncClient) -> list[Sample]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return [sample for family in text_string_to_metric_families(response.text) for sample in family.samples]


def of(samples: list[Sample], name: str, **labels: str) -> list[Sample]:
    return [s for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


async def test_a_deployments_series_carry_its_models_name(app: tuple[httpx.AsyncClient, Recorded]) -> None:
    client, transport = app
    model_name = f"fruit-chat-{uuid.uuid4().hex[:6]}"
    deployment = await deploy(
        client, vendor="LLMENGINE", model_name=model_name, base_url="http://llama-server.test/v1", model="smollm2"
    )
    transport.answers["smollm2"] = (200, "recorded/llama-cpp-server/chat.json")
    answer = await client.post(f"/v4/models/{deployment}/chat-completions", json=CHAT)
    assert answer.status_code == 200, answer.text
    transport.answers["smollm2"] = (200, "recorded/llama-cpp-server/stream.sse")
    streamed = await client.post(f"/v4/models/{deployment}/chat-completions", json={**CHAT, "stream": True})
    assert streamed.status_code == 200, streamed.text

    samples = await scrape(client)
    route = "/v4/models/{model_deployment_id}/chat-completions"
    [requests] = of(samples, "modelport_requests_total", route=route, deployment=deployment)
    assert (requests.labels["model_name"], requests.labels["status"], requests.value) == (model_name, "200", 2)
    # Every series of the deployment names the model, and the same one.
    for name in DEPLOYMENT_SERIES:
        series = of(samples, name, deployment=deployment)
        assert series and {s.labels["model_name"] for s in series} == {model_name}, name
    [ttft] = of(samples, "gen_ai_server_time_to_first_token_seconds_count", deployment=deployment)
    assert ttft.value == 1
    # The tokens are the recorded answer's own counts plus the stream's (estimated by
    # modelport: llama.cpp's server sends no usage on a stream).
    recorded = json.loads((LLAMA_SERVER / "chat.json").read_text())["usage"]
    final = json.loads([line for line in streamed.text.splitlines() if line.startswith("data: ")][-1][6:])
    for kind, recorded_count, streamed_count in (
        ("input", recorded["prompt_tokens"], final["prompt_tokens"]),
        ("output", recorded["completion_tokens"], final["response_tokens"]),
    ):
        [tokens] = of(samples, "gen_ai_client_token_usage_sum", deployment=deployment, gen_ai_token_type=kind)
        assert tokens.value == recorded_count + streamed_count, kind


async def test_unknown_names_add_no_series(app: tuple[httpx.AsyncClient, Recorded]) -> None:
    client, _transport = app
    unknown_id, unknown_name = str(uuid.uuid4()), f"no-such-model-{uuid.uuid4().hex[:8]}"
    before = await scrape(client)
    missing = await client.post(f"/v4/models/{unknown_id}/chat-completions", json=CHAT)
    assert missing.status_code == 404
    messages = [{"role": "user", "content": "Hi"}]
    v1 = await client.post("/v1/chat/completions", json={"model": unknown_name, "messages": messages})
    assert v1.status_code == 404

    after = await scrape(client)
    values = {value for sample in after for value in sample.labels.values()}
    assert unknown_id not in values and unknown_name not in values
    # The refused requests are counted, with no deployment and no model name.
    for route in ("/v4/models/{model_deployment_id}/chat-completions", "/v1/chat/completions"):
        labels = {"route": route, "deployment": "", "model_name": "", "status": "404"}
        counted = [
            sum(s.value for s in of(samples, "modelport_requests_total", **labels)) for samples in (before, after)
        ]
        assert counted[1] - counted[0] == 1, route
