"""Running modelport for months, against a real `modelport serve`: metrics of every
worker in one scrape, every worker's log lines, readiness, and a graceful SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import fresh_database
from tests.servers import free_port
from tests.vendors.conftest import fake_vendor  # noqa: F401  (a fixture)

pytestmark = pytest.mark.e2e

KEY = "mp_operations_admin_key_0123456789"
HEADERS = {"x-api-key": KEY}
BODY = {"chat_history": [], "prompt": "Hi", "temperature": 0, "max_tokens": 5}


@contextmanager
def serving(data: Path, **settings: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`modelport serve` without the embedded engine (these tests use the fake vendor),
    logging JSON to data/server.log; yields the base URL and the process."""
    port = free_port()
    env = {
        **os.environ,
        "MODELPORT_DATABASE_URL": f"sqlite:///{data / 'modelport.db'}",  # as people write it
        "MODELPORT_PORT": str(port),
        "MODELPORT_API_KEY": KEY,
        "MODELPORT_EMBEDDED_ENGINE": "false",
        "MODELPORT_LOG_FORMAT": "json",
        "MODELPORT_USAGE_FLUSH_SECONDS": "0.2",
        **{f"MODELPORT_{name.upper()}": value for name, value in settings.items()},
    }
    base_url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).parent / "modelport"), "serve"]
    with (data / "server.log").open("w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base_url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"modelport did not start:\n{(data / 'server.log').read_text()}")
            time.sleep(0.2)
        yield base_url, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


def deploy(base_url: str, upstream: str, model: str) -> str:
    created = httpx.post(
        f"{base_url}/v4/models",
        headers=HEADERS,
        json={"name": f"fake-{model}", "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI",
              "model_creation_parameters": {"base_url": upstream, "model": model}},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    deployment = httpx.post(
        f"{base_url}/v4/models/{created.json()['id']}/deployments", headers=HEADERS, json={"name": "fake"}
    )
    assert deployment.status_code == 200, deployment.text
    return str(deployment.json()["id"])


def log_entries(data: Path) -> list[dict[str, object]]:
    entries = []
    for line in (data / "server.log").read_text().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    return entries


def _failure_pids(data: Path) -> set[object]:
    return {entry["pid"] for entry in log_entries(data) if entry.get("message") == "request failed"}


def scrape(base_url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{base_url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_with_two_workers_one_scrape_counts_every_workers_requests_and_every_worker_logs(
    tmp_path: Path,
    fake_vendor: str,  # noqa: F811
    database: str,
) -> None:
    with (
        fresh_database(database, tmp_path) as url,
        serving(tmp_path, workers="2", database_url=url) as (
            base_url,
            _process,
        ),
    ):
        failing = deploy(base_url, fake_vendor, "fail-500")
        requests = 0
        # Each on a new connection. Which worker accepts one is the kernel's choice, and a
        # run of 16 has gone to one worker alone: the requests go on until both have
        # logged one (at most 256).
        while requests < 16 or (len(_failure_pids(tmp_path)) < 2 and requests < 256):
            assert (
                httpx.post(f"{base_url}/v4/models/{failing}/chat-completions", json=BODY, headers=HEADERS).status_code
                == 502
            )
            requests += 1
        # Whichever worker answers the scrape, it reports both workers' counts.
        for _ in range(6):
            assert scrape(base_url, "modelport_requests_total", deployment=failing, status="502") == requests
        failures = [entry for entry in log_entries(tmp_path) if entry.get("message") == "request failed"]
    assert len(failures) == requests
    assert len({entry["pid"] for entry in failures}) == 2  # both workers served some
    assert {entry["deployment"] for entry in failures} == {failing}
    assert all("internal failure" in str(entry["reason"]) for entry in failures)
    # Start-up is short: no Alembic plugin chatter.
    assert "alembic" not in (tmp_path / "server.log").read_text().lower()


def test_readiness_and_liveness_answer_like_kubernetes_expects(
    tmp_path: Path,
    fake_vendor: str,  # noqa: F811
) -> None:
    with serving(tmp_path) as (base_url, _process):
        assert httpx.get(f"{base_url}/health/live").json() == {"status": "ok"}
        ready = httpx.get(f"{base_url}/health/ready")
        assert (ready.status_code, ready.json()["status"]) == (200, "ready")
        assert httpx.get(f"{base_url}/health").status_code == 200


def test_sigterm_lets_streams_run_for_the_grace_period_then_ends_them_with_an_error_event(
    tmp_path: Path,
    fake_vendor: str,  # noqa: F811
) -> None:
    grace = 2.0
    with serving(tmp_path, shutdown_grace_seconds=str(grace)) as (base_url, process):
        slow = deploy(base_url, fake_vendor, "slow-stream")  # 200 events, 50 ms apart
        received: list[tuple[float, str]] = []
        first_event = threading.Event()

        def stream() -> None:
            with httpx.stream(
                "POST", f"{base_url}/v4/models/{slow}/chat-completions",
                json={**BODY, "stream": True, "max_tokens": 1000}, headers=HEADERS, timeout=30,
            ) as response:  # fmt: skip
                for line in response.iter_lines():
                    received.append((time.monotonic(), line))
                    first_event.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert first_event.wait(20)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.TransportError):  # no new connections once stopping
            httpx.get(f"{base_url}/health/live", timeout=2)
        reader.join(timeout=grace + 10)
        assert not reader.is_alive()
        # uvicorn exits by raising the signal again once it has shut down: the usual status for SIGTERM.
        assert process.wait(timeout=20) in (0, -signal.SIGTERM)

    during_grace = [line for at, line in received if signalled + 0.2 < at < signalled + grace - 0.2]
    assert any(line.startswith("data: ") for line in during_grace), "the stream kept going during the grace period"
    lines = [line for _, line in received if line]
    assert lines[-2] == "event: error"
    assert json.loads(lines[-1].removeprefix("data: ")) == {"status_code": 503, "detail": "the server is shutting down"}
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log and "CancelledError" not in log, log
    with sqlite3.connect(tmp_path / "modelport.db") as database:
        statuses = [
            row[0] for row in database.execute("SELECT status FROM usage_records WHERE deployment_id = ?", (slow,))
        ]
    assert statuses == [503]


def test_a_stream_the_shutdown_ends_makes_the_openai_and_anthropic_sdks_raise(
    tmp_path: Path,
    fake_vendor: str,  # noqa: F811
) -> None:
    """Each SDK reads a stream's end in its own way: a stream ended by the shutdown must
    be an error it raises, not an answer that looks complete."""
    with serving(tmp_path, shutdown_grace_seconds="1") as (base_url, process):
        slow = deploy(base_url, fake_vendor, "slow-stream")  # 200 events, 50 ms apart
        ended: dict[str, BaseException | None] = {}
        reading = {"openai": threading.Event(), "anthropic": threading.Event()}
        prompt = [{"role": "user", "content": "Hi"}]

        def read_openai() -> None:
            client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0)
            try:
                for _ in client.chat.completions.create(model=slow, messages=prompt, max_tokens=1000, stream=True):  # type: ignore[arg-type]
                    reading["openai"].set()
                ended["openai"] = None
            except Exception as exc:
                ended["openai"] = exc

        def read_anthropic() -> None:
            client = anthropic.Anthropic(base_url=base_url, api_key=KEY, max_retries=0)
            try:
                for _ in client.messages.create(model=slow, messages=prompt, max_tokens=1000, stream=True):  # type: ignore[arg-type]
                    reading["anthropic"].set()
                ended["anthropic"] = None
            except Exception as exc:
                ended["anthropic"] = exc

        readers = [threading.Thread(target=read_openai), threading.Thread(target=read_anthropic)]
        for reader in readers:
            reader.start()
        assert all(started.wait(20) for started in reading.values()), ended
        process.send_signal(signal.SIGTERM)
        for reader in readers:
            reader.join(timeout=15)
        assert process.wait(timeout=20) in (0, -signal.SIGTERM)

    # An APIError read from the stream itself: not a connection cut (also an APIError).
    from_openai = ended["openai"]
    assert isinstance(from_openai, openai.APIError) and not isinstance(from_openai, openai.APIConnectionError)
    assert from_openai.message == "the server is shutting down"
    assert from_openai.body == {"message": "the server is shutting down", "type": "server_error",
                                "param": None, "code": None}  # fmt: skip
    from_anthropic = ended["anthropic"]
    assert isinstance(from_anthropic, anthropic.APIStatusError)
    assert from_anthropic.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "the server is shutting down"},
    }
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log and "CancelledError" not in log, log
    with sqlite3.connect(tmp_path / "modelport.db") as database:
        statuses = [
            row[0] for row in database.execute("SELECT status FROM usage_records WHERE deployment_id = ?", (slow,))
        ]
    assert statuses == [503, 503]


def test_a_later_start_warns_when_modelport_api_key_opens_nothing(tmp_path: Path) -> None:
    with serving(tmp_path):
        pass
    with serving(tmp_path, api_key="mp_set_after_the_first_start"):
        pass
    warnings = [entry for entry in log_entries(tmp_path) if "MODELPORT_API_KEY matches no active key" in str(entry)]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"


def test_the_access_log_writes_one_structured_line_per_request(tmp_path: Path) -> None:
    with serving(tmp_path, access_log="true") as (base_url, _process):
        response = httpx.get(f"{base_url}/v4/models", headers={**HEADERS, "x-request-id": "trace-me-42"})
        assert response.status_code == 200
    [line] = [entry for entry in log_entries(tmp_path) if entry.get("request_id") == "trace-me-42"]
    assert (line["message"], line["status"], line["route"], line["level"]) == ("request", 200, "/v4/models", "info")
    assert float(str(line["latency_ms"])) >= 0
