"""OpenTelemetry traces: one per request, with a span for the gateway's work and a
child span for the upstream call, named and attributed by the GenAI semantic
conventions (`gen_ai.*`).

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set; then spans go
to that collector over OTLP/HTTP, in batches, with the standard `OTEL_*` variables
(service name, headers, ...) honoured by the SDK. Off, each request pays one `is None`
check. The SDK is imported only when tracing is on.

Spans are started and ended explicitly, never made "current": the upstream call of a
stream outlives the handler that started it (it ends when the stream does), which a
context-manager span cannot follow across an async generator's yields.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

    from modelport.observability.requests import RequestRecord

log = logging.getLogger(__name__)

_provider: TracerProvider | None = None
_tracer: Tracer | None = None


def enabled() -> bool:
    return _tracer is not None


def configure_from_environment() -> None:
    """Turn tracing on when an OTLP endpoint is configured (each worker calls this)."""
    if _tracer is not None:
        return
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from modelport import __version__

    resource = Resource.create({"service.name": "modelport", "service.version": __version__})
    provider = TracerProvider(resource=resource)  # OTEL_SERVICE_NAME, if set, wins over the name here
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    use(provider)
    log.info("tracing on: spans go to %s", os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "the OTLP endpoint")


def use(provider: TracerProvider | None) -> None:
    """Send spans to `provider` (tests pass one with an in-memory exporter); None: off."""
    global _provider, _tracer
    _provider = provider
    _tracer = provider.get_tracer("modelport") if provider is not None else None


def shutdown() -> None:
    """Flush spans still batched (at the end of a worker's life)."""
    if _provider is not None:
        _provider.force_flush(timeout_millis=5000)


def start_request(record: RequestRecord) -> Any:
    if _tracer is None:
        return None
    from opentelemetry.trace import SpanKind

    return _tracer.start_span(
        f"{record.method} request",
        kind=SpanKind.SERVER,
        attributes={"http.request.method": record.method, "modelport.request_id": record.request_id},
    )


def end_request(record: RequestRecord) -> None:
    span = record.span
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    route = record.route
    span.update_name(f"{record.method} {route}")
    status = record.status or 500
    attributes: dict[str, Any] = {"http.route": route, "http.response.status_code": status}
    if record.deployment:
        attributes.update(_genai_attributes(record))
    span.set_attributes(attributes)
    if status >= 500 or status == 499:
        span.set_status(Status(StatusCode.ERROR, record.reason or str(status)))
    if record.upstream_span is not None:  # a stream cut off before the service finished it
        end_upstream(record)
    span.end()


def start_upstream(record: RequestRecord) -> Any:
    if _tracer is None or record.span is None:
        return None
    from opentelemetry.trace import SpanKind, set_span_in_context

    return _tracer.start_span(
        f"{record.operation} {record.model}".strip(),
        context=set_span_in_context(record.span),
        kind=SpanKind.CLIENT,
        attributes={**_genai_attributes(record), "gen_ai.request.model": record.model},
    )


def end_upstream(record: RequestRecord) -> None:
    span, record.upstream_span = record.upstream_span, None
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span.set_attributes(
        {
            "gen_ai.usage.input_tokens": record.prompt_tokens,
            "gen_ai.usage.output_tokens": record.completion_tokens,
            "modelport.status": record.status or 0,
        }
    )
    if record.status is not None and record.status >= 400:
        span.set_status(Status(StatusCode.ERROR, str(record.status)))
    span.end()


def _genai_attributes(record: RequestRecord) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": record.operation,
        "gen_ai.provider.name": record.vendor.lower(),
        "gen_ai.request.model": record.model,
        "modelport.deployment.id": record.deployment,
        "gen_ai.usage.input_tokens": record.prompt_tokens,
        "gen_ai.usage.output_tokens": record.completion_tokens,
    }
