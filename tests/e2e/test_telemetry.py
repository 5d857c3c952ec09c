"""OTLP export, wired from `OTEL_EXPORTER_OTLP_ENDPOINT` alone (README, "Traces"): a real
`modelport serve` with the embedded model sends its spans to an OTLP/HTTP receiver on a
loopback port, the way it would to a collector."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.conftest import CHAT_DEPLOYMENT
from tests.servers import free_port, modelport_serving

pytestmark = pytest.mark.e2e

KEY = "mp_telemetry_admin_key_0123456789"
HEADERS = {"x-api-key": KEY}
ROUTE = "/v4/models/{model_deployment_id}/chat-completions"


@dataclass
class Span:
    name: str
    kind: int
    service: str
    attributes: dict[str, Any]
    trace_id: bytes
    parent_span_id: bytes
    span_id: bytes


@dataclass
class Receiver:
    """What an OTLP/HTTP collector received on /v1/traces, decoded."""

    endpoint: str
    spans: list[Span] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


def _value(value: AnyValue) -> Any:
    return getattr(value, str(value.WhichOneof("value")))


def _decode(body: bytes, into: list[Span]) -> None:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    for resource_spans in request.resource_spans:
        resource = {item.key: _value(item.value) for item in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                into.append(
                    Span(
                        name=span.name,
                        kind=span.kind,
                        service=str(resource.get("service.name")),
                        attributes={item.key: _value(item.value) for item in span.attributes},
                        trace_id=span.trace_id,
                        parent_span_id=span.parent_span_id,
                        span_id=span.span_id,
                    )
                )


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    port = free_port()
    received = Receiver(endpoint=f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            received.paths.append(self.path)
            if self.path == "/v1/traces":
                _decode(body, received.spans)
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received
    server.shutdown()
    thread.join(timeout=10)


def _ready_chat_deployment(base_url: str) -> str:
    """The embedded chat deployment's id, once its model is loaded."""
    deadline = time.monotonic() + 120
    while True:
        listing = httpx.get(f"{base_url}/v4/model-deployments", headers=HEADERS).json()["items"]
        [deployment] = [item for item in listing if item["name"] == CHAT_DEPLOYMENT]
        if deployment["status"] == "READY":
            return str(deployment["id"])
        assert deployment["status"] == "PENDING" and time.monotonic() < deadline, deployment
        time.sleep(0.2)


def test_a_request_arrives_at_the_otlp_endpoint_as_a_server_and_an_upstream_span(
    tmp_path: Path, receiver: Receiver
) -> None:
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        environment.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")  # export batches every 0.2 s, not every 5 s
        with modelport_serving(tmp_path, api_key=KEY) as base_url:
            deployment = _ready_chat_deployment(base_url)
            answer = httpx.post(
                f"{base_url}/v4/models/{deployment}/chat-completions",
                headers=HEADERS,
                json={"chat_history": [], "prompt": "Say hi.", "temperature": 0, "max_tokens": 4},
                timeout=120,
            )
            assert answer.status_code == 200, answer.text
            deadline = time.monotonic() + 60
            while not any(span.attributes.get("http.route") == ROUTE for span in receiver.spans):
                assert time.monotonic() < deadline, f"no span for {ROUTE}: {receiver.paths} {receiver.spans}"
                time.sleep(0.1)

    [server] = [span for span in receiver.spans if span.attributes.get("http.route") == ROUTE]
    assert server.name == f"POST {ROUTE}"
    assert server.service == "modelport"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["modelport.deployment.id"] == deployment
    assert server.attributes["gen_ai.provider.name"] == "llmengine"
    # The upstream call (here the embedded engine) is the server span's child, with the
    # tokens the answer reports.
    [upstream] = [span for span in receiver.spans if span.parent_span_id == server.span_id]
    assert upstream.trace_id == server.trace_id
    assert upstream.name.startswith("chat ")
    assert upstream.attributes["gen_ai.usage.input_tokens"] == answer.json()["prompt_tokens"] > 0
    assert upstream.attributes["gen_ai.usage.output_tokens"] == answer.json()["response_tokens"] > 0
