"""Prometheus metrics: every metric modelport exports, and the few calls that feed them.

Names follow the OpenTelemetry GenAI semantic conventions where one exists, written
the Prometheus way (`gen_ai.client.token.usage` -> `gen_ai_client_token_usage`), with
the conventions' bucket boundaries; the rest are `modelport_*`.

Under `modelport serve --workers N` every worker writes its values to memory-mapped
files in `PROMETHEUS_MULTIPROC_DIR` (set up by `serve`, see `observability.multiprocess`), and a
scrape of any worker reads all of them: one scrape sees the whole server. Each update
is a dictionary lookup and a float add (in a file mapping under `--workers`): cheap
enough for the hot path (benchmarks/README.md has the numbers).
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from modelport.observability.multiprocess import MULTIPROC_ENV

# `*_created` timestamps double the series and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# A deployment's series carry its id and, beside it, the name of the model it deploys:
# a dashboard reads "smollm2-chat", not a UUID. Both come from the registry (the
# deployment the service resolved), never from what a request names: a request for an
# unknown deployment has them empty and adds no series.
DEPLOYMENT_LABELS = ("deployment", "model_name")

REQUESTS = Counter(
    "modelport_requests",
    "HTTP requests answered, by route template, model deployment and its model's name (empty when none) "
    "and status (499: the client left before the end of a stream; 503 at shutdown: cut off after the grace period).",
    ["route", *DEPLOYMENT_LABELS, "status"],
)
OPERATION_DURATION = Histogram(
    "gen_ai_client_operation_duration_seconds",
    "Duration of inference requests, from arrival to the last byte (GenAI semconv).",
    ["gen_ai_operation_name", *DEPLOYMENT_LABELS, "status"],
    buckets=(0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92),
)
TIME_TO_FIRST_TOKEN = Histogram(
    "gen_ai_server_time_to_first_token_seconds",
    "Time from a streaming request's arrival to its first event (GenAI semconv).",
    [*DEPLOYMENT_LABELS],
    buckets=(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0),
)
TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage",
    "Tokens per inference request; gen_ai_token_type is input (prompt) or output (completion) (GenAI semconv).",
    [*DEPLOYMENT_LABELS, "gen_ai_token_type"],
    buckets=(1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576),
)
GATEWAY_OVERHEAD = Histogram(
    "modelport_gateway_overhead_seconds",
    "The gateway's own time before a response starts, vendor time excluded (the x-modelport-overhead-ms header).",
    ["route"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
UPSTREAM_ERRORS = Counter(
    "modelport_upstream_errors",
    "Failed calls to upstream vendors (after retries), by vendor and reason (an HTTP status, timeout, connect).",
    ["vendor", "reason"],
)
UPSTREAM_RETRIES = Counter(
    "modelport_upstream_retries",
    "Upstream calls tried again (a connection error, 429 or 5xx before the first byte), by vendor.",
    ["vendor"],
)
LIMIT_REJECTIONS = Counter(
    "modelport_limit_rejections",
    "Requests refused with 429 by a key's or deployment's limit or budget, by limit.",
    ["limit"],
)
# Refreshed from the engines' own counters when /metrics is scraped.
ENGINE_QUEUE = Gauge(
    "modelport_engine_queue_depth",
    "Requests waiting for an embedded engine, by GGUF file.",
    ["model"],
    multiprocess_mode="mostrecent",
)
ENGINE_RUNNING = Gauge(
    "modelport_engine_running_sequences",
    "Sequences an embedded engine is generating, by GGUF file.",
    ["model"],
    multiprocess_mode="mostrecent",
)
ENGINE_KV_USAGE = Gauge(
    "modelport_engine_kv_cache_usage_ratio",
    "Share of an embedded engine's KV cache cells reserved by running sequences (0-1), by GGUF file.",
    ["model"],
    multiprocess_mode="mostrecent",
)
ENGINE_UP = Gauge(
    "modelport_engine_up",
    "1 when an embedded engine is ready, else 0 (loading, restarting, failed), by GGUF file.",
    ["model"],
    multiprocess_mode="mostrecent",
)


@lru_cache(maxsize=16384)
def _series(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, looked up once: the request path's metrics are fed
    several times a request, and `labels` checks and joins its arguments each time
    (about 2 % of a request's CPU, issue 27). The metric keeps every series it has made
    anyway; this keeps the 16,384 most recent, which bounds what it holds here."""
    return metric.labels(*labels)


def request_answered(route: str, deployment: str, model_name: str, status: int) -> None:
    _series(REQUESTS, route, deployment, model_name, str(status)).inc()


def inference_finished(
    operation: str,
    deployment: str,
    model_name: str,
    status: int,
    seconds: float,
    prompt_tokens: int,
    completion_tokens: int,
) -> None:
    _series(OPERATION_DURATION, operation, deployment, model_name, str(status)).observe(seconds)
    if prompt_tokens:
        _series(TOKEN_USAGE, deployment, model_name, "input").observe(prompt_tokens)
    if completion_tokens:
        _series(TOKEN_USAGE, deployment, model_name, "output").observe(completion_tokens)


def first_token(deployment: str, model_name: str, seconds: float) -> None:
    _series(TIME_TO_FIRST_TOKEN, deployment, model_name).observe(seconds)


def gateway_overhead(route: str, seconds: float) -> None:
    _series(GATEWAY_OVERHEAD, route).observe(seconds)


def upstream_failed(vendor: str, reason: str) -> None:
    UPSTREAM_ERRORS.labels(vendor, reason).inc()


def upstream_retried(vendor: str) -> None:
    UPSTREAM_RETRIES.labels(vendor).inc()


def limit_rejected(limit: str) -> None:
    """For the limits code: one request refused by `limit` (rpm_limit, tpm_limit,
    max_parallel_requests, max_budget, ...)."""
    LIMIT_REJECTIONS.labels(limit).inc()


def engines_seen(engines: list[dict[str, Any]]) -> None:
    """Set the engine gauges from `EnginePool.health()`'s report."""
    for engine in engines:
        model = str(engine.get("model") or "")
        ENGINE_UP.labels(model).set(1 if engine.get("state") == "ready" else 0)
        stats = engine.get("stats")
        if not stats:
            continue
        ENGINE_QUEUE.labels(model).set(stats.get("waiting", 0))
        ENGINE_RUNNING.labels(model).set(stats.get("running", 0))
        capacity = stats.get("kv_tokens") or 0
        if capacity:
            ENGINE_KV_USAGE.labels(model).set(stats.get("kv_reserved", 0) / capacity)


def exposition() -> tuple[bytes, str]:
    """The text a scrape gets: every worker's values under `--workers`, else this process's."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
