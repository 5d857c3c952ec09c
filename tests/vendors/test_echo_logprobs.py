"""`echo` with `logprobs` on `/v1/completions`, for a deployment whose vendor computes the
prompt's log-probabilities (OpenAI and OpenAI-compatible servers: `PROMPT_LOGPROBS` in its
capabilities): both are sent upstream, and its choice comes back as it is, the prompt's
text first and its tokens' logprobs before the generated ones'. (The embedded engine's
400: tests/e2e/test_token_prompts.py.)

Against OpenAI's documented answer (fixtures/documented/openai/completion_echo_logprobs.json),
whole and streamed, and against a real llama.cpp server, which computes them whole (it
does not echo on a stream)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from openai.types import Completion

from tests.conftest import in_process, sqlite_settings
from tests.vendors.conftest import deploy
from tests.vendors.recorded import DOCUMENTED
from tests.vendors.test_fixture_provenance import without_echo_nulls

PROMPT = "Say this is a test"
DOCUMENTED_ANSWER: dict[str, Any] = json.loads((DOCUMENTED / "openai" / "completion_echo_logprobs.json").read_text())
ECHOED = DOCUMENTED_ANSWER["choices"][0]
MODEL = "echoing-upstream"


def _streamed(answer: dict[str, Any]) -> bytes:
    """The documented answer as vLLM streams an echo: the prompt's text and logprobs in
    the first chunk, then a chunk a generated token, then the usage (include_usage)."""
    choice, logprobs = answer["choices"][0], answer["choices"][0]["logprobs"]
    prompt_tokens = answer["usage"]["prompt_tokens"]
    cuts = [(0, prompt_tokens)] + [(at, at + 1) for at in range(prompt_tokens, len(logprobs["tokens"]))]
    chunks = []
    for number, (start, end) in enumerate(cuts):
        piece = {name: values[start:end] for name, values in logprobs.items()}
        last = number == len(cuts) - 1
        chunks.append({"id": answer["id"], "object": "text_completion", "created": answer["created"],
                       "model": answer["model"],
                       "choices": [{"index": 0, "text": "".join(piece["tokens"]), "logprobs": piece,
                                    "finish_reason": choice["finish_reason"] if last else None}]})  # fmt: skip
    chunks.append({"id": answer["id"], "object": "text_completion", "created": answer["created"],
                   "model": answer["model"], "choices": [], "usage": answer["usage"]})  # fmt: skip
    return ("".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n").encode()


class Upstream:
    """An OpenAI-compatible server answering every legacy completion with the documented
    echo; records each body it was sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        if body.get("stream"):
            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=_streamed(DOCUMENTED_ANSWER)
            )
        return httpx.Response(200, json=DOCUMENTED_ANSWER)


@pytest.fixture(scope="module")
async def documented(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[httpx.AsyncClient, Upstream]]:
    upstream = Upstream()
    settings = sqlite_settings(tmp_path_factory.mktemp("echo"), upstream_attempts=1)
    async with in_process(settings, upstream=httpx.MockTransport(upstream)) as (_app, client):
        await deploy(client, vendor="OTHER", model_type="COMPLETION", model_name=MODEL, model="up",
                     base_url="http://upstream.test/v1")  # fmt: skip
        yield client, upstream


ASKED = {"model": MODEL, "prompt": PROMPT, "echo": True, "logprobs": 1, "max_tokens": 3, "temperature": 0}


async def test_echo_and_logprobs_go_upstream_and_its_choice_comes_back_as_it_is(
    documented: tuple[httpx.AsyncClient, Upstream],
) -> None:
    client, upstream = documented
    response = await client.post("/v1/completions", json=ASKED)
    assert response.status_code == 200, response.text
    sent = upstream.bodies[-1]
    assert sent["echo"] is True and sent["logprobs"] == 1 and sent["prompt"] == PROMPT
    answer = response.json()
    Completion.model_validate(without_echo_nulls(answer))  # OpenAI's own type, but for the nulls it lacks
    [choice] = answer["choices"]
    assert choice["text"] == ECHOED["text"] and choice["text"].startswith(PROMPT)
    assert choice["logprobs"] == ECHOED["logprobs"]  # the first token's nulls included
    assert answer["usage"]["prompt_tokens"] == DOCUMENTED_ANSWER["usage"]["prompt_tokens"]


async def test_streamed_the_prompt_and_its_logprobs_come_first(documented: tuple[httpx.AsyncClient, Upstream]) -> None:
    client, upstream = documented
    asked = {**ASKED, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/completions", json=asked) as response:
        assert response.status_code == 200
        lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    assert (
        upstream.bodies[-1]["echo"] is True and upstream.bodies[-1]["logprobs"] == 1 and upstream.bodies[-1]["stream"]
    )
    chunks = [json.loads(line[len("data: ") :]) for line in lines if line != "data: [DONE]"]
    choices = [choice for chunk in chunks for choice in chunk["choices"]]
    assert "".join(choice["text"] for choice in choices) == ECHOED["text"]
    assert choices[0]["text"] == PROMPT  # the echo first
    joined: dict[str, list[Any]] = {name: [] for name in ECHOED["logprobs"]}
    for choice in choices:
        for name, values in (choice.get("logprobs") or {}).items():
            joined[name] += values
    assert joined == ECHOED["logprobs"]
    assert chunks[-1]["usage"]["completion_tokens"] == DOCUMENTED_ANSWER["usage"]["completion_tokens"]


async def test_best_of_ranks_echoed_answers_by_their_generated_tokens(
    documented: tuple[httpx.AsyncClient, Upstream],
) -> None:
    client, upstream = documented
    before = len(upstream.bodies)
    response = await client.post("/v1/completions", json={**ASKED, "best_of": 2, "seed": 3})
    assert response.status_code == 200, response.text
    assert [body["echo"] for body in upstream.bodies[before:]] == [True, True]
    [choice] = response.json()["choices"]
    assert choice["text"] == ECHOED["text"] and choice["logprobs"] == ECHOED["logprobs"]


async def test_a_stop_sequence_inside_the_echoed_prompt_is_a_400(
    documented: tuple[httpx.AsyncClient, Upstream],
) -> None:
    client, upstream = documented
    before = len(upstream.bodies)
    response = await client.post("/v1/completions", json={**ASKED, "stop": [" is"]})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "stop" and len(upstream.bodies) == before


async def test_a_llama_cpp_server_answers_through_modelport_as_it_answers_itself(
    vendor_app: Any, llama_server: str
) -> None:
    """The real server computes the prompt's logprobs (its `logits_all`, on by default):
    modelport's answer is the server's own choice."""
    _app, client = vendor_app
    name = f"smollm2-echo-{uuid.uuid4().hex[:8]}"
    await deploy(client, vendor="OTHER", model_type="COMPLETION", model_name=name, model="smollm2",
                 base_url=llama_server)  # fmt: skip
    asked = {"prompt": "The sky is", "echo": True, "logprobs": 1, "max_tokens": 3, "temperature": 0}
    through = await client.post("/v1/completions", json={"model": name, **asked})
    assert through.status_code == 200, through.text
    async with httpx.AsyncClient(timeout=120) as direct:
        itself = (await direct.post(f"{llama_server}/completions", json={"model": "smollm2", **asked})).json()
    Completion.model_validate(without_echo_nulls(through.json()))
    [choice] = through.json()["choices"]
    [own] = itself["choices"]
    assert choice["text"] == own["text"] and choice["text"].startswith("The sky is")
    shown = choice["logprobs"]
    assert shown["tokens"] == own["logprobs"]["tokens"] and shown["text_offset"] == own["logprobs"]["text_offset"]
    assert shown["token_logprobs"][0] is None and own["logprobs"]["token_logprobs"][0] is None
    assert shown["token_logprobs"][1:] == pytest.approx(own["logprobs"]["token_logprobs"][1:], abs=1e-4)
