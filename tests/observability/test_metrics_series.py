"""The metric series the request path feeds are looked up once (`metrics._series`): the
values still land in the metric's own series, and what is kept for the lookups is bounded."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

from modelport.observability import metrics


def test_a_series_looked_up_once_still_counts_in_the_metric() -> None:
    registry = CollectorRegistry()
    counter = Counter("modelport_test_series", "test", ["route", "status"], registry=registry)
    for _ in range(3):
        metrics._series(counter, "/v4/x", "200").inc()
    metrics._series(counter, "/v4/x", "500").inc()
    text = generate_latest(registry).decode()
    assert 'modelport_test_series_total{route="/v4/x",status="200"} 3.0' in text
    assert 'modelport_test_series_total{route="/v4/x",status="500"} 1.0' in text


def test_the_series_kept_for_lookups_are_bounded() -> None:
    counter = Counter("modelport_test_many", "test", ["deployment"], registry=CollectorRegistry())
    bound = metrics._series.cache_info().maxsize
    assert bound == 16_384
    for index in range(bound + 100):
        metrics._series(counter, f"deployment-{index}").inc()
    assert metrics._series.cache_info().currsize <= bound
