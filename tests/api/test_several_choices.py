"""`n` > 1 on OpenAI's chat and text completions (issue 26): n choices under their
indexes, each a request of its own with its own seed (seed + i), the usage the sum of
the n requests'. On the real embedded model (the texts differ with their seeds), and
against an OpenAI-compatible upstream answered in-process (what each call was sent)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from modelport.config import Settings
from tests.conftest import ADMIN_KEY, in_process, own_database

MODEL = "smollm2-135m-instruct"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8,
        "temperature": 1.5}  # fmt: skip


async def _one(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = await client.post(path, json=body)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def _events(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> list[str]:
    async with client.stream("POST", path, json=body) as stream:
        assert stream.status_code == 200
        lines = [line[6:] async for line in stream.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return lines[:-1]


async def test_n_chat_choices_on_the_embedded_model(client: httpx.AsyncClient) -> None:
    several = await client.post("/v1/chat/completions", json={**CHAT, "n": 3, "seed": 40})
    assert several.status_code == 200, several.text
    completion = ChatCompletion.model_validate(several.json())
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    assert all(choice.message.content and choice.finish_reason for choice in completion.choices)
    assert len({choice.message.content for choice in completion.choices}) > 1  # seeds differ: texts do
    single = await _one(client, "/v1/chat/completions", {**CHAT, "seed": 40})
    assert completion.usage is not None  # the prompt billed once per choice
    assert completion.usage.prompt_tokens == 3 * single["usage"]["prompt_tokens"]
    assert 3 <= completion.usage.completion_tokens <= 3 * 8
    assert float(several.headers["x-modelport-cost"]) >= 0


async def test_n_streamed_chat_choices_come_under_their_index_with_one_usage(client: httpx.AsyncClient) -> None:
    body = {**CHAT, "n": 2, "seed": 7, "stream": True, "stream_options": {"include_usage": True}}
    chunks = [
        ChatCompletionChunk.model_validate(json.loads(line))
        for line in await _events(client, "/v1/chat/completions", body)
    ]
    assert len({chunk.id for chunk in chunks}) == 1
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason is not None:
                finishes[choice.index] = choice.finish_reason
    assert set(texts) == set(finishes) == {0, 1} and all(texts.values())
    [usage] = [chunk.usage for chunk in chunks if chunk.usage is not None]
    assert chunks[-1].usage is usage and not chunks[-1].choices
    single = await _one(client, "/v1/chat/completions", {**CHAT, "seed": 7})
    assert usage.prompt_tokens == 2 * single["usage"]["prompt_tokens"]


async def test_n_text_completions_whole_and_streamed(client: httpx.AsyncClient) -> None:
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 6, "temperature": 1.5, "seed": 3}
    several = Completion.model_validate(await _one(client, "/v1/completions", {**body, "n": 2}))
    assert [choice.index for choice in several.choices] == [0, 1]
    assert len({choice.text for choice in several.choices}) == 2
    texts: dict[int, str] = {}
    for line in await _events(client, "/v1/completions", {**body, "n": 2, "stream": True}):
        for choice in json.loads(line)["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    assert set(texts) == {0, 1} and all(texts.values())


async def test_n_out_of_range_is_a_400_naming_it(client: httpx.AsyncClient) -> None:
    for n in (0, 129):
        refused = await client.post("/v1/chat/completions", json={**CHAT, "n": n})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "n", refused.text


FAILING_SEED = 1001


class Upstream:
    """Answers each call with the seed it was sent (fails the call with FAILING_SEED),
    and records the calls."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.sent.append(body)
        if body.get("seed") == FAILING_SEED:
            return httpx.Response(500, json={"error": {"message": "upstream broke"}})
        message = {"role": "assistant", "content": f"seed {body.get('seed')}"}
        return httpx.Response(
            200,
            json={"id": "x", "object": "chat.completion", "created": 0, "model": "up",
                  "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}},
        )  # fmt: skip


@pytest.fixture(scope="module")
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def upstream_model(
    request: pytest.FixtureRequest, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    # A database of its own: on the session's, this app's batch runner could take up a
    # batch another module left, and send its lines to this upstream among the calls
    # these tests count.
    async with own_database(request.param, tmp_path_factory.mktemp("several")) as url:
        settings = Settings(database_url=url, api_key=ADMIN_KEY, embedded_engine=False, upstream_attempts=1)
        async with in_process(settings, upstream=httpx.MockTransport(upstream)) as (_, client):
            yield await _upstream_model(client)


async def _upstream_model(client: httpx.AsyncClient) -> tuple[httpx.AsyncClient, str]:
    """A model on the recording upstream, deployed; the client and the model's name."""
    name = f"n-{uuid.uuid4().hex[:8]}"
    made = await client.post(
        "/v4/models",
        json={"name": name, "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI",
              "model_creation_parameters": {"base_url": "http://upstream.test/v1", "model": "up",
                                            "input_cost_per_token": 0.001, "output_cost_per_token": 0.002}},
    )  # fmt: skip
    assert made.status_code == 200, made.text
    deployed = await client.post(f"/v4/models/{made.json()['id']}/deployments", json={"name": "d"})
    assert deployed.status_code == 200, deployed.text
    return client, name


async def test_each_choice_is_a_call_of_its_own_with_seed_plus_i(
    upstream_model: tuple[httpx.AsyncClient, str], upstream: Upstream
) -> None:
    client, name = upstream_model
    before = len(upstream.sent)
    answer = await client.post(
        "/v1/chat/completions", json={"model": name, "messages": CHAT["messages"], "n": 3, "seed": 2**63 - 2}
    )
    assert answer.status_code == 200, answer.text
    calls = upstream.sent[before:]
    # One choice each, seeds kept 64-bit integers (the last one wraps around).
    assert sorted(call["seed"] for call in calls) == sorted([2**63 - 2, 2**63 - 1, -(2**63)])
    assert all(call.get("n") in (None, 1) for call in calls)
    completion = ChatCompletion.model_validate(answer.json())
    assert sorted(choice.message.content or "" for choice in completion.choices) == sorted(
        f"seed {call['seed']}" for call in calls
    )
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (30, 6)
    assert float(answer.headers["x-modelport-cost"]) == pytest.approx(3 * (10 * 0.001 + 2 * 0.002))


async def test_one_failing_choice_fails_the_answer_in_the_surfaces_shape(
    upstream_model: tuple[httpx.AsyncClient, str],
) -> None:
    client, name = upstream_model
    body = {"model": name, "messages": CHAT["messages"], "n": 3, "seed": FAILING_SEED - 1}
    answer = await client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 502, answer.text
    assert answer.json()["error"]["message"]
