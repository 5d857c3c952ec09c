"""Routing over a model's deployments on a real `modelport serve`: two real llama.cpp
servers behind one model name, one of them killed mid-test, and a fallback model for a
model whose only deployment is down. The client is the `openai` SDK; it must see no
failure at all."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

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
