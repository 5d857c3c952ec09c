"""What the README promises about a real `modelport serve` on the embedded model: a full
engine queue answers 503 (MODELPORT_EMBEDDED_MAX_QUEUE), and /metrics counts real
requests: answered ones with their tokens, a stream its client left (499) and a
refused one (503)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import CHAT_DEPLOYMENT
from tests.e2e.test_engine_process import ready_engine_pid
from tests.servers import modelport_serving

pytestmark = pytest.mark.e2e

ADMIN = "mp_server_promises_admin_key_0123"
HEADERS = {"x-api-key": ADMIN}
ROUTE = "/v4/models/{model_deployment_id}/completions"
# Greedy counting goes on for thousands of tokens: a stream that is still running when
# the test is done with it.
ENDLESS = {"prompt": "1, 2, 3, 4, 5, 6, 7,", "temperature": 0, "max_tokens": 3000}
SHORT = {"prompt": "The sky is", "temperature": 0, "max_tokens": 6}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # One request generates at a time and one more may wait: the third is refused.
    with modelport_serving(
        tmp_path_factory.mktemp("server-promises"),
        api_key=ADMIN,
        embedded_max_sequences="1",
        embedded_max_queue="1",
    ) as base_url:
        ready_engine_pid(base_url)
        yield base_url


def deployment_id(base_url: str) -> str:
    items = httpx.get(f"{base_url}/v4/model-deployments", headers=HEADERS, timeout=10).json()["items"]
    [item] = [item for item in items if item["name"] == CHAT_DEPLOYMENT]
    return str(item["id"])


def scrape(base_url: str, name: str, **labels: str) -> float:
    """One sample of /metrics; 0 when it is not there (yet)."""
    for family in text_string_to_metric_families(httpx.get(f"{base_url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                return float(sample.value)
    return 0.0


def chat_engine_stats(base_url: str) -> dict[str, Any]:
    engines = httpx.get(f"{base_url}/health", timeout=10).json()["embedded_engines"]
    [entry] = [entry for entry in engines if entry["model"].startswith("SmolLM2")]
    return dict(entry.get("stats", {}))


def wait_until(check: Any, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.05)


def test_healthy_requests_are_counted_with_their_tokens(server: str) -> None:
    deployment = deployment_id(server)
    url = f"{server}/v4/models/{deployment}/completions"
    plain = httpx.post(url, json=SHORT, headers=HEADERS, timeout=60)
    assert plain.status_code == 200, plain.text
    with httpx.stream("POST", url, json={**SHORT, "stream": True}, headers=HEADERS, timeout=60) as stream:
        assert stream.status_code == 200
        events = [json.loads(line.removeprefix("data:")) for line in stream.iter_lines() if line.startswith("data:")]
    answer = plain.json()
    assert events[-1]["response_tokens"] == answer["response_tokens"] == SHORT["max_tokens"]
    labels = {"route": ROUTE, "deployment": deployment}
    wait_until(lambda: scrape(server, "modelport_requests_total", **labels, status="200") == 2)
    output = scrape(server, "gen_ai_client_token_usage_sum", deployment=deployment, gen_ai_token_type="output")
    prompt = scrape(server, "gen_ai_client_token_usage_sum", deployment=deployment, gen_ai_token_type="input")
    assert (output, prompt) == (2 * answer["response_tokens"], 2 * answer["prompt_tokens"])
    durations = "gen_ai_client_operation_duration_seconds_count"
    assert scrape(server, durations, deployment=deployment, gen_ai_operation_name="text_completion") == 2
    assert scrape(server, "gen_ai_server_time_to_first_token_seconds_count", deployment=deployment) == 1
    assert scrape(server, "modelport_engine_up", model="SmolLM2-135M-Instruct.Q4_1.gguf") == 1


def test_a_full_queue_answers_503_and_a_left_stream_is_499_in_the_metrics(server: str) -> None:
    deployment = deployment_id(server)
    url = f"{server}/v4/models/{deployment}/completions"
    labels = {"route": ROUTE, "deployment": deployment}
    before = {
        status: scrape(server, "modelport_requests_total", **labels, status=status) for status in ("200", "499", "503")
    }
    queued: list[httpx.Response] = []
    with (
        httpx.Client(timeout=120) as client,
        client.stream("POST", url, json={**ENDLESS, "stream": True}, headers=HEADERS) as running,
    ):
        assert running.status_code == 200
        lines = running.iter_lines()
        next(line for line in lines if line.startswith("data:"))  # generating: the one sequence is taken
        waiting = threading.Thread(
            target=lambda: queued.append(httpx.post(url, json=SHORT, headers=HEADERS, timeout=120))
        )
        waiting.start()
        wait_until(lambda: chat_engine_stats(server).get("waiting") == 1)
        refused = httpx.post(url, json=SHORT, headers=HEADERS, timeout=30)
        assert refused.status_code == 503, refused.text
        assert "1 requests waiting" in refused.json()["detail"]
        assert refused.headers["retry-after"] == "1"
        assert waiting.is_alive()  # the queued one still waits behind the stream
    # The stream's client left: its sequence is freed, and the queued request is served.
    waiting.join(timeout=120)
    assert [response.status_code for response in queued] == [200]

    def counted(status: str) -> float:
        return scrape(server, "modelport_requests_total", **labels, status=status) - before[status]

    wait_until(lambda: (counted("200"), counted("499"), counted("503")) == (1, 1, 1))
