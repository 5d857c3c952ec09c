"""What is known about the request being served, gathered where it is learnt.

The HTTP layer (`observability.observation`) opens a `RequestRecord` per request in
a context variable; the service fills in the deployment and vendor when it calls one
(`calling_vendor`) and the outcome when it finishes (`observed_usage` wraps the usage
sink, which the service calls once per finished inference request). The observation then
turns the record into metrics, a log line and a trace, in one place.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelport.generation import UsageEvent, UsageSink
from modelport.observability import metrics, tracing

if TYPE_CHECKING:
    from modelport.vendors.base import Target


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    method: str
    scope: MutableMapping[str, Any]
    started: float = field(default_factory=time.perf_counter)
    status: int | None = None  # the HTTP status, or the service's final word (499, ...)
    deployment: str = ""
    model_name: str = ""  # the registry's name for the deployment's model (a metrics label)
    vendor: str = ""
    model: str = ""  # the model name sent upstream (for the log line and the trace)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reason: str | None = None
    dropped: tuple[str, ...] = ()  # what the service left out of the call or changed
    streaming: bool = False
    first_event_at: float | None = None
    finished_by_service: bool = False
    span: Any = None  # the request's trace span, when tracing is on
    upstream_span: Any = None

    @property
    def route(self) -> str:
        """The route's template (`/v4/models/{model_deployment_id}/chat-completions`),
        never the raw path: a label with one value per deployment id or typo would grow
        without bound."""
        route = self.scope.get("route")
        path = getattr(route, "path", None)
        return str(path) if path is not None else "other"

    @property
    def operation(self) -> str:
        """The GenAI operation name for the route (OpenTelemetry's `gen_ai.operation.name`
        values; "rerank" has none there)."""
        route = self.route
        for endings, operation in _OPERATIONS:
            if route.endswith(endings):
                return operation
        return "chat"


# Route endings -> operation, checked in order: every surface's chat routes (SGP v4,
# OpenAI's chat completions and Responses, Anthropic's messages) are "chat".
_OPERATIONS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("chat-completions", "/chat/completions", "/messages", "/responses"), "chat"),
    (("/completions",), "text_completion"),
    (("/embeddings",), "embeddings"),
    (("/rerankings", "/rerank"), "rerank"),
)


current_request: ContextVar[RequestRecord | None] = ContextVar("modelport_request", default=None)


def calling_vendor(target: Target) -> None:
    """The service is about to call `target`'s vendor: note what it is, and open the
    upstream call's span."""
    record = current_request.get()
    if record is None:
        return
    record.deployment = target.deployment_id
    record.model_name = target.model_name
    record.vendor = target.model_vendor
    record.model = str(target.parameters.get("model") or target.vendor_configuration.get("model_name") or "")
    if record.span is not None:
        record.upstream_span = tracing.start_upstream(record)


def leaving_out(dropped: tuple[str, ...]) -> None:
    """The service leaves these out of the call it sends, or changed them (the
    x-modelport-dropped header's names): for the request's log line."""
    record = current_request.get()
    if record is not None:
        record.dropped = dropped


def observed_usage(sink: UsageSink | None) -> UsageSink:
    """The service's usage sink, with metrics, the log record and the upstream span
    fed from the same event (once per finished inference request)."""

    def record_usage(event: UsageEvent) -> None:
        record = current_request.get()
        operation, model_name = "chat", ""
        if record is not None:
            record.finished_by_service = True
            record.deployment = event.deployment_id
            record.status = event.status
            record.prompt_tokens = event.prompt_tokens
            record.completion_tokens = event.response_tokens
            operation, model_name = record.operation, record.model_name
            if record.upstream_span is not None:
                tracing.end_upstream(record)
        metrics.inference_finished(
            operation,
            event.deployment_id,
            model_name,
            event.status,
            event.latency_ms / 1000,
            event.prompt_tokens,
            event.response_tokens,
        )
        if sink is not None:
            sink(event)

    return record_usage
