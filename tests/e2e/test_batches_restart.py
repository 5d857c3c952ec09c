"""A batch survives its server: real `modelport serve` processes, on SQLite and on
PostgreSQL, in front of an upstream that counts its calls per prompt (each line's
prompt names its custom_id; tests/batch_upstream.py).

- A server killed (SIGKILL) in the middle of a batch, and another started on the same
  database: it takes the batch over once the dead one's lease ran out, and runs only
  the lines that had not finished (a line in flight at the kill may run again).
- Two replicas on one database: the batch runs once (each line one upstream call).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import E2E_KEY, fresh_database
from tests.servers import free_port, running

LINES = 100
CONCURRENCY = 4
LEASE_SECONDS = 2


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    data = tmp_path_factory.mktemp("batch-upstream")
    with running(
        [sys.executable, "-m", "tests.batch_upstream", "--port", str(port)],
        ready_url=f"http://127.0.0.1:{port}/calls",
        log_path=data / "upstream.log",
    ):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def _server(
    database_url: str, data: Path, name: str, lease_seconds: float = LEASE_SECONDS
) -> Iterator[tuple[str, Any]]:
    """A server on `database_url`: its base URL and process."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MODELPORT_DATABASE_URL": database_url,
        "MODELPORT_API_KEY": E2E_KEY,
        "MODELPORT_PORT": str(port),
        "MODELPORT_EMBEDDED_ENGINE": "false",
        "MODELPORT_UPSTREAM_ATTEMPTS": "1",
        "MODELPORT_LOG_LEVEL": "warning",
        "MODELPORT_SHUTDOWN_GRACE_SECONDS": "5",
        "MODELPORT_AUTH_FAILURES_PER_MINUTE": "0",
        "MODELPORT_BATCH_CONCURRENCY": str(CONCURRENCY),
        "MODELPORT_BATCH_LEASE_SECONDS": str(lease_seconds),
        "MODELPORT_BATCH_POLL_SECONDS": "0.1",
    }
    command = [str(Path(sys.executable).parent / "modelport"), "serve"]
    with running(command, ready_url=f"{base}/health", log_path=data / f"{name}.log", env=env) as process:
        yield base, process


def _sdk(base: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=E2E_KEY, base_url=f"{base}/v1", max_retries=0, _strict_response_validation=True)


def _model(base: str, upstream: str, pause: float) -> str:
    name = f"batched-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=base, headers={"x-api-key": E2E_KEY}, timeout=30) as client:
        created = client.post(
            "/v4/models",
            json={"name": name, "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI",
                  "model_creation_parameters": {"base_url": f"{upstream}/v1", "model": f"pause-{pause}"}},
        )  # fmt: skip
        assert created.status_code == 200, created.text
        deployment = client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "d"})
        assert deployment.status_code == 200, deployment.text
    return name


def _start_batch(sdk: openai.OpenAI, model: str, tag: str) -> str:
    lines = [
        {"custom_id": f"{tag}-{index}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": model, "messages": [{"role": "user", "content": f"{tag} {index}"}], "max_tokens": 5}}
        for index in range(LINES)
    ]  # fmt: skip
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    uploaded = sdk.files.create(file=("in.jsonl", content), purpose="batch")
    return sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h").id


def _until(read: Callable[[], Any], done: Callable[[Any], bool], seconds: float = 120) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"not done in {seconds} s: {value}"
        time.sleep(0.05)


def _calls(upstream: str, tag: str) -> dict[str, int]:
    counts = httpx.get(f"{upstream}/calls", timeout=10).json()
    return {prompt: count for prompt, count in counts.items() if prompt.startswith(f"{tag} ")}


def _finished_lines(database_url: str, batch_id: str) -> set[str]:
    """The custom_ids of the lines written as finished, read from the database itself."""

    async def read() -> set[str]:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as connection:
                rows = await connection.execute(
                    text("SELECT custom_id FROM batch_lines WHERE batch_id = :id"), {"id": batch_id}
                )
                return {str(row[0]) for row in rows}
        finally:
            await engine.dispose()

    return asyncio.run(read())


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_batch_resumes_after_its_server_was_killed(
    kind: str, upstream: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data = tmp_path_factory.mktemp(f"restart-{kind}")
    tag = uuid.uuid4().hex[:8]
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_database(kind, data))
        first, process = stack.enter_context(_server(database_url, data, "first"))
        model = _model(first, upstream, pause=0.05)
        with _sdk(first) as sdk:
            batch_id = _start_batch(sdk, model, tag)
            _until(lambda: sdk.batches.retrieve(batch_id), lambda found: found.request_counts.completed >= 30)
        process.kill()
        process.wait(timeout=20)
        finished = _finished_lines(database_url, batch_id)
        assert 30 <= len(finished) < LINES
        calls_at_kill = _calls(upstream, tag)

        second, _ = stack.enter_context(_server(database_url, data, "second"))
        with _sdk(second) as sdk:
            done = _until(lambda: sdk.batches.retrieve(batch_id), lambda found: found.status == "completed")
            assert done.request_counts is not None
            assert (done.request_counts.total, done.request_counts.completed) == (LINES, LINES)
            assert done.output_file_id is not None
            output = [json.loads(line) for line in sdk.files.content(done.output_file_id).content.splitlines()]
    assert sorted(record["custom_id"] for record in output) == sorted(f"{tag}-{index}" for index in range(LINES))
    calls = _calls(upstream, tag)
    assert set(calls) == {f"{tag} {index}" for index in range(LINES)}
    # The lines finished before the kill were not run again; those in flight at the
    # kill (at most the concurrency) may have been.
    for custom_id in finished:
        prompt = custom_id.replace("-", " ", 1)
        assert calls[prompt] == calls_at_kill[prompt] == 1, custom_id
    assert sum(count - 1 for count in calls.values()) <= CONCURRENCY


def test_a_server_stopped_gracefully_gives_its_batch_back_at_once(
    upstream: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """SIGTERM: the lines running finish, the lease is given back, and the next server
    goes on without waiting for it to run out (it is long here: 600 s); no line's
    answer is the shutdown's 503."""
    data = tmp_path_factory.mktemp("graceful")
    tag = uuid.uuid4().hex[:8]
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_database("sqlite", data))
        first, process = stack.enter_context(_server(database_url, data, "first", lease_seconds=600))
        model = _model(first, upstream, pause=0.05)
        with _sdk(first) as sdk:
            batch_id = _start_batch(sdk, model, tag)
            _until(lambda: sdk.batches.retrieve(batch_id), lambda found: found.request_counts.completed >= 20)
        process.terminate()
        process.wait(timeout=30)
        assert len(_finished_lines(database_url, batch_id)) < LINES
        second, _ = stack.enter_context(_server(database_url, data, "second", lease_seconds=600))
        with _sdk(second) as sdk:
            done = _until(lambda: sdk.batches.retrieve(batch_id), lambda found: found.status == "completed", 300)
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (LINES, 0)
    assert set(_calls(upstream, tag).values()) == {1}  # the running lines finished: none ran twice


def test_two_replicas_on_one_database_run_a_batch_once(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    data = tmp_path_factory.mktemp("replicas")
    tag = uuid.uuid4().hex[:8]
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_database("postgresql", data))
        first, _ = stack.enter_context(_server(database_url, data, "a"))
        second, _ = stack.enter_context(_server(database_url, data, "b"))
        model = _model(first, upstream, pause=0.01)
        with _sdk(first) as sdk_a, _sdk(second) as sdk_b:
            batch_ids = [_start_batch(sdk_a, model, f"{tag}{n}") for n in range(2)]
            for batch_id in batch_ids:  # read from the other replica
                done = _until(partial(sdk_b.batches.retrieve, batch_id), lambda found: found.status == "completed")
                assert done.request_counts is not None and done.request_counts.completed == LINES
    for n in range(2):
        calls = _calls(upstream, f"{tag}{n}")
        assert len(calls) == LINES and set(calls.values()) == {1}
