"""Metrics, traces and log lines for requests to an upstream vendor, through the whole
app, against the fake vendor on loopback."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from modelport.observability import tracing
from modelport.observability.logs import JsonFormatter
from modelport.observability.requests import RequestRecord
from tests.vendors import conftest
from tests.vendors.conftest import deploy

CHAT = {"chat_history": [], "prompt": "Hi", "temperature": 0, "max_tokens": 5}
CHAT_ROUTE = "/v4/models/{model_deployment_id}/chat-completions"


async def ask(client: httpx.AsyncClient, deployment: str, **extra: Any) -> httpx.Response:
    return await client.post(f"/v4/models/{deployment}/chat-completions", json={**CHAT, **extra})


async def sample(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    """The value of one sample of /metrics (0 when it is not there yet)."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(key) == value for key, value in labels.items()):
                return float(found.value)
    return 0.0


async def test_a_request_is_counted_by_route_deployment_and_status_with_its_tokens(
    fault_app: tuple[Any, httpx.AsyncClient], fake_vendor: str
) -> None:
    _app, client = fault_app
    deployment = await deploy(client, vendor="OPENAI", base_url=fake_vendor, model="ok")
    response = await ask(client, deployment)
    assert response.status_code == 200
    assert response.headers["x-request-id"]
    labels = {"route": CHAT_ROUTE, "deployment": deployment}
    assert await sample(client, "modelport_requests_total", **labels, status="200") == 1
    tokens = {"deployment": deployment}
    assert await sample(client, "gen_ai_client_token_usage_sum", **tokens, gen_ai_token_type="input") == 7
    assert await sample(client, "gen_ai_client_token_usage_sum", **tokens, gen_ai_token_type="output") == 3
    durations = "gen_ai_client_operation_duration_seconds_count"
    assert await sample(client, durations, deployment=deployment, gen_ai_operation_name="chat") == 1
    assert await sample(client, "modelport_gateway_overhead_seconds_count", route=CHAT_ROUTE) >= 1


async def test_each_surface_is_labelled_with_its_operation(
    fault_app: tuple[Any, httpx.AsyncClient], fake_vendor: str
) -> None:
    """OpenAI's chat completions and Anthropic's messages are chats, whatever their path
    ends with; SGP's completions are text completions."""
    _app, client = fault_app
    deployment = await deploy(client, vendor="OPENAI", base_url=fake_vendor, model="ok")
    messages = [{"role": "user", "content": "Hi"}]
    answers = [
        await client.post("/v1/chat/completions", json={"model": deployment, "messages": messages, "max_tokens": 5}),
        await client.post("/v1/messages", json={"model": deployment, "messages": messages, "max_tokens": 5}),
    ]
    assert [answer.status_code for answer in answers] == [200, 200], [answer.text for answer in answers]
    durations = "gen_ai_client_operation_duration_seconds_count"
    assert await sample(client, durations, deployment=deployment, gen_ai_operation_name="chat") == 2
    assert await sample(client, durations, deployment=deployment, gen_ai_operation_name="text_completion") == 0


@pytest.mark.parametrize(
    ("route", "operation"),
    [
        ("/v4/models/{model_deployment_id}/chat-completions", "chat"),
        ("/v1/chat/completions", "chat"),
        ("/v1/messages", "chat"),
        ("/v1/responses", "chat"),
        ("/v4/models/{model_deployment_id}/completions", "text_completion"),
        ("/v1/completions", "text_completion"),
        ("/v1/embeddings", "embeddings"),
        ("/v4/models/{model_deployment_id}/embeddings", "embeddings"),
        ("/v4/models/{model_deployment_id}/rerankings", "rerank"),
    ],
)
def test_the_operation_of_each_inference_route(route: str, operation: str) -> None:
    record = RequestRecord(request_id="r", method="POST", scope={"route": SimpleNamespace(path=route)})
    assert record.operation == operation


async def test_a_stream_records_its_time_to_first_token(
    fault_app: tuple[Any, httpx.AsyncClient], fake_vendor: str
) -> None:
    _app, client = fault_app
    deployment = await deploy(client, vendor="OPENAI", base_url=fake_vendor, model="ok")
    response = await ask(client, deployment, stream=True)
    assert response.status_code == 200
    assert await sample(client, "gen_ai_server_time_to_first_token_seconds_count", deployment=deployment) == 1
    assert await sample(client, "gen_ai_client_token_usage_sum", deployment=deployment, gen_ai_token_type="output") == 2


async def test_retries_and_upstream_errors_are_counted(
    fault_app: tuple[Any, httpx.AsyncClient], fake_vendor: str
) -> None:
    _app, client = fault_app
    retries = await sample(client, "modelport_upstream_retries_total", vendor="OPENAI")
    conftest.FLAKY_CALLS.clear()
    flaky = await deploy(client, vendor="OPENAI", base_url=fake_vendor, model="flaky")
    assert (await ask(client, flaky)).status_code == 200
    assert await sample(client, "modelport_upstream_retries_total", vendor="OPENAI") == retries + 2

    errors = await sample(client, "modelport_upstream_errors_total", vendor="OPENAI", reason="500")
    failing = await deploy(client, vendor="OPENAI", base_url=fake_vendor, model="fail-500")
    assert (await ask(client, failing)).status_code == 502
    assert await sample(client, "modelport_upstream_errors_total", vendor="OPENAI", reason="500") == errors + 1
    assert await sample(client, "modelport_requests_total", deployment=failing, status="502") == 1


async def test_a_failed_request_logs_one_structured_line(
    fault_app: tuple[Any, httpx.AsyncClient], fake_vendor: str, caplog: pytest.LogCaptureFixture
) -> None:
    _app, client = fault_app
    deployment = await deploy(client, vendor="OPENAI", base_url=fake_vendor, model="fail-500")
    with caplog.at_level(logging.INFO, logger="modelport.requests"):
        response = await ask(client, deployment, stream=True)
    assert response.status_code == 502
    [line] = [record for record in caplog.records if record.name == "modelport.requests"]
    assert line.levelno == logging.WARNING
    entry = json.loads(JsonFormatter().format(line))
    assert entry["message"] == "request failed"
    assert entry["request_id"] == response.headers["x-request-id"]
    assert (entry["deployment"], entry["status"], entry["route"]) == (deployment, 502, CHAT_ROUTE)
    assert "internal failure" in entry["reason"]
    assert entry["latency_ms"] > 0


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/messages"])
async def test_a_failed_request_on_the_compatible_surfaces_logs_its_reason(
    fault_app: tuple[Any, httpx.AsyncClient], fake_vendor: str, caplog: pytest.LogCaptureFixture, route: str
) -> None:
    """Their errors are shaped {"error": {"message"}}, not {"detail"}: the log line reads either."""
    _app, client = fault_app
    deployment = await deploy(client, vendor="OPENAI", base_url=fake_vendor, model="fail-500")
    body = {"model": deployment, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}
    with caplog.at_level(logging.INFO, logger="modelport.requests"):
        response = await client.post(route, json=body)
    assert response.status_code == 502
    [line] = [record for record in caplog.records if record.name == "modelport.requests"]
    assert "internal failure" in json.loads(JsonFormatter().format(line))["reason"]


async def test_a_stream_broken_mid_way_logs_the_error_events_reason(
    fault_app: tuple[Any, httpx.AsyncClient], fake_vendor: str, caplog: pytest.LogCaptureFixture
) -> None:
    _app, client = fault_app
    deployment = await deploy(client, vendor="OPENAI", base_url=fake_vendor, model="reset")
    with caplog.at_level(logging.INFO, logger="modelport.requests"):
        response = await client.post(
            f"/v4/models/{deployment}/chat-completions",
            json={**CHAT, "stream": True},
            headers={"x-request-id": "caller-chosen-1"},
        )
    assert "event: error" in response.text
    assert response.headers["x-request-id"] == "caller-chosen-1"
    line = [record for record in caplog.records if record.name == "modelport.requests"][-1]
    fields = line.modelport_fields  # type: ignore[attr-defined]
    assert (fields["request_id"], fields["status"]) == ("caller-chosen-1", 502)
    assert "broke the connection" in fields["reason"]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)


async def test_each_request_is_a_trace_with_a_gateway_span_and_an_upstream_span(
    fault_app: tuple[Any, httpx.AsyncClient], fake_vendor: str, spans: InMemorySpanExporter
) -> None:
    _app, client = fault_app
    deployment = await deploy(client, vendor="OPENAI", base_url=fake_vendor, model="ok")
    spans.clear()
    for stream in (False, True):
        assert (await ask(client, deployment, stream=stream)).status_code == 200
    finished = spans.get_finished_spans()
    servers = [span for span in finished if span.name == f"POST {CHAT_ROUTE}"]
    upstreams = [span for span in finished if span.name == "chat ok"]
    assert len(servers) == len(upstreams) == 2
    for server, upstream, output_tokens in zip(servers, upstreams, (3, 2), strict=True):
        assert upstream.parent is not None and upstream.parent.span_id == server.context.span_id
        assert upstream.context.trace_id == server.context.trace_id
        attributes = dict(upstream.attributes or {})
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.request.model"] == "ok"
        assert attributes["gen_ai.provider.name"] == "openai"
        assert attributes["modelport.deployment.id"] == deployment
        assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (7, output_tokens)
        assert dict(server.attributes or {})["http.response.status_code"] == 200
        assert server.start_time is not None and upstream.start_time is not None
        assert server.start_time <= upstream.start_time


async def test_a_failed_upstream_call_is_an_error_span(
    fault_app: tuple[Any, httpx.AsyncClient], fake_vendor: str, spans: InMemorySpanExporter
) -> None:
    _app, client = fault_app
    deployment = await deploy(client, vendor="OPENAI", base_url=fake_vendor, model="fail-500")
    spans.clear()
    assert (await ask(client, deployment)).status_code == 502
    [upstream] = [span for span in spans.get_finished_spans() if span.name == "chat fail-500"]
    assert not upstream.status.is_ok
    assert dict(upstream.attributes or {})["modelport.status"] == 502
