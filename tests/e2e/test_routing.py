"""Routing over a model's deployments on a real `modelport serve`: two real llama.cpp
servers behind one model name, one of them killed mid-test, and a fallback model for a
model whose only deployment is down. The client is the `openai` SDK; it must see no
failure at all. And the one failure a client must see: an upstream that breaks after the
first bytes of a stream is never tried again, nor replaced by a fallback."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import uvicorn
from openai import OpenAI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import E2E_KEY
from tests.servers import free_port, modelport_serving, running
from tests.vendors.conftest import GGUF

pytestmark = pytest.mark.e2e

QUESTION = [{"role": "user", "content": "Name a colour."}]


def _llama_server(stack: ExitStack, log_dir: Path, name: str) -> tuple[str, Path, object]:
    port = free_port()
    log_path = log_dir / f"{name}.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(GGUF), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", "512", "--model_alias", "smollm2"]  # fmt: skip
    process = stack.enter_context(running(command, ready_url=f"http://127.0.0.1:{port}/v1/models", log_path=log_path))
    return f"http://127.0.0.1:{port}/v1", log_path, process


def _answered(log_path: Path) -> int:
    """Chat requests a llama.cpp server answered, from its access log."""
    return log_path.read_text().count("POST /v1/chat/completions")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    data = tmp_path_factory.mktemp("routing")
    with ExitStack() as stack:
        first_url, first_log, _first = _llama_server(stack, data, "first")
        second_url, second_log, second = _llama_server(stack, data, "second")
        base = stack.enter_context(modelport_serving(data, api_key=E2E_KEY, embedded_engine="false"))
        with httpx.Client(base_url=base, headers={"x-api-key": E2E_KEY}, timeout=60) as admin:
            model = admin.post(
                "/v4/models",
                json={"name": "smollm2-pair", "model_type": "CHAT_COMPLETION", "model_vendor": "LLMENGINE",
                      "model_creation_parameters": {"model": "smollm2", "base_url": first_url}},
            )  # fmt: skip
            assert model.status_code == 200, model.text
            for url in (first_url, second_url):
                deployment = admin.post(
                    f"/v4/models/{model.json()['id']}/deployments",
                    json={"name": "replica", "model_creation_parameters": {"base_url": url}},
                )
                assert deployment.status_code == 200 and deployment.json()["status"] == "READY", deployment.text
            nowhere = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
            lonely = admin.post(
                "/v4/models",
                json={"name": "lonely", "model_type": "CHAT_COMPLETION", "model_vendor": "LLMENGINE",
                      "model_creation_parameters": {"model": "smollm2", "base_url": nowhere,
                                                    "fallback_models": ["smollm2-pair"]}},
            )  # fmt: skip
            assert lonely.status_code == 200, lonely.text
            assert admin.post(f"/v4/models/{lonely.json()['id']}/deployments", json={"name": "down"}).status_code == 200
        yield {"base": base, "first_log": first_log, "second_log": second_log, "second": second,
               "server_log": data / "server.log"}  # fmt: skip


def _ask(client: OpenAI, model: str, *, stream: bool) -> str:
    if stream:
        chunks = client.chat.completions.create(
            model=model,
            messages=QUESTION,  # type: ignore[arg-type]
            temperature=0,
            max_tokens=4,
            stream=True,
        )
        return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    answer = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=4)  # type: ignore[arg-type]
    return answer.choices[0].message.content or ""


def test_requests_spread_over_two_replicas_and_survive_one_dying(replicas: dict[str, object]) -> None:
    client = OpenAI(base_url=f"{replicas['base']}/v1", api_key=E2E_KEY, max_retries=0)
    first_log, second_log = Path(str(replicas["first_log"])), Path(str(replicas["second_log"]))
    before = _answered(first_log), _answered(second_log)
    answers = {_ask(client, "smollm2-pair", stream=index % 2 == 1) for index in range(6)}
    assert len(answers) == 1  # greedy: the same answer, whichever replica gave it
    spread = _answered(first_log) - before[0], _answered(second_log) - before[1]
    assert spread == (3, 3)  # round-robin

    second = replicas["second"]
    second.kill()  # type: ignore[attr-defined]
    second.wait()  # type: ignore[attr-defined]
    after_kill = _answered(first_log)
    # No request fails: a call that cannot reach the dead replica is retried on the live one
    # before the first byte, and after a few failures the dead one is set aside.
    for index in range(8):
        assert _ask(client, "smollm2-pair", stream=index % 2 == 1) in answers
    assert _answered(first_log) - after_kill == 8
    assert "set aside" in Path(str(replicas["server_log"])).read_text()


def test_a_fallback_model_answers_when_a_models_only_deployment_is_down(replicas: dict[str, object]) -> None:
    client = OpenAI(base_url=f"{replicas['base']}/v1", api_key=E2E_KEY, max_retries=0)
    logs = [Path(str(replicas["first_log"])), Path(str(replicas["second_log"]))]
    before = sum(map(_answered, logs))
    for index in range(3):
        assert _ask(client, "lonely", stream=index % 2 == 1)
    assert sum(map(_answered, logs)) - before == 3  # answered by the fallback model's replicas


# --- never retried after the first byte ------------------------------------------------
# One loopback upstream with two faces, told apart by the path of their base URL:
# /cut-off/v1 fails (a 503 before answering, or a stream that breaks after its first
# chunk) and /steady/v1 answers. Every call is counted, by face and by streamed or not.

UPSTREAM_CALLS: Counter[tuple[str, bool]] = Counter()
ATTEMPTS = 2  # MODELPORT_UPSTREAM_ATTEMPTS for this server: tries before the first byte


def _chunk(content: str | None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    payload = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
    return f"data: {json.dumps(payload)}\n\n".encode()


async def _two_faced(request: Request) -> Response:
    face = request.path_params["face"]
    streamed = bool((await request.json()).get("stream"))
    UPSTREAM_CALLS[face, streamed] += 1
    if face == "steady":
        if streamed:
            return Response(_chunk("steady answer") + _chunk(None, "stop") + b"data: [DONE]\n\n",
                            media_type="text/event-stream")  # fmt: skip
        return JSONResponse({"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": "steady answer"}}],
                             "usage": {"prompt_tokens": 3, "completion_tokens": 2}})  # fmt: skip
    if not streamed:
        return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)

    async def breaks() -> AsyncIterator[bytes]:
        yield _chunk("partial")
        await asyncio.sleep(0.05)
        raise ConnectionResetError("the upstream went away mid-stream")

    return StreamingResponse(breaks(), media_type="text/event-stream")


@pytest.fixture(scope="module")
def cut_off(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """modelport with a model "cut-off" (one deployment, on the failing face) that falls
    back on "steady" (one deployment, on the answering face); yields modelport's URL."""
    port = free_port()
    upstream = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/{face}/v1/chat/completions", _two_faced, methods=["POST"])]),
            host="127.0.0.1",
            port=port,
            log_level="critical",
        )
    )
    thread = threading.Thread(target=upstream.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not upstream.started:
        assert time.monotonic() < deadline, "the loopback upstream did not start"
        time.sleep(0.05)
    data = tmp_path_factory.mktemp("cut-off")
    try:
        with (
            modelport_serving(data, api_key=E2E_KEY, embedded_engine="false", upstream_attempts=str(ATTEMPTS)) as base,
            httpx.Client(base_url=base, headers={"x-api-key": E2E_KEY}, timeout=60) as admin,
        ):
            for name, face, fallbacks in (("steady", "steady", []), ("cut-off", "cut-off", ["steady"])):
                parameters = {
                    "model": "m",
                    "base_url": f"http://127.0.0.1:{port}/{face}/v1",
                    "fallback_models": fallbacks,
                }
                model = admin.post("/v4/models", json={"name": name, "model_type": "CHAT_COMPLETION",
                                                       "model_vendor": "LLMENGINE",
                                                       "model_creation_parameters": parameters})  # fmt: skip
                assert model.status_code == 200, model.text
                deployment = admin.post(f"/v4/models/{model.json()['id']}/deployments", json={"name": face})
                assert deployment.status_code == 200 and deployment.json()["status"] == "READY", deployment.text
            yield base
    finally:
        upstream.should_exit = True
        thread.join(timeout=10)


def test_a_failure_before_the_first_byte_falls_back(cut_off: str) -> None:
    """The control for the test below: the fallback is wired, and used when it may be."""
    UPSTREAM_CALLS.clear()
    client = OpenAI(base_url=f"{cut_off}/v1", api_key=E2E_KEY, max_retries=0)
    assert _ask(client, "cut-off", stream=False) == "steady answer"
    assert UPSTREAM_CALLS == {("cut-off", False): ATTEMPTS, ("steady", False): 1}


def test_a_stream_that_breaks_after_its_first_bytes_is_never_tried_again(cut_off: str) -> None:
    UPSTREAM_CALLS.clear()
    body = {"model": "cut-off", "messages": QUESTION, "max_tokens": 4, "stream": True}
    with httpx.Client(timeout=60) as http:
        response = http.post(
            f"{cut_off}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {E2E_KEY}"}
        )
    assert response.status_code == 200  # the stream had begun: its status was sent with the first bytes
    blocks = response.text.strip().split("\n\n")
    # What the upstream sent, then the failure, and nothing after it ...
    *chunks, last = blocks
    deltas = [choice["delta"] for chunk in chunks for choice in json.loads(chunk.removeprefix("data: "))["choices"]]
    assert "".join(delta.get("content") or "" for delta in deltas) == "partial"
    assert last.startswith("event: error\n")
    assert "steady answer" not in response.text  # ... no second answer glued on
    # One call, the one that broke: no retry on the same upstream, no fallback.
    assert UPSTREAM_CALLS == {("cut-off", True): 1}
