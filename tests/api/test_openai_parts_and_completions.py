"""The rest of OpenAI's request shapes (issue 26), through the `openai` SDK (strict where
its types allow) and the SGP SDK's beta: `file` and `input_audio` parts reach an OPENAI
deployment as sent and are a 400 naming them elsewhere; more than 4 stop sequences go to
the vendors that take them; `/v1/completions` takes several prompts (choices indexed
prompt-major), `echo` and `best_of` (on the embedded model, ranked by mean
log-probability), and its stream's chunks carry `finish_reason: null` until the last.
Upstreams answered in-process record what they were sent."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from openai.types import Completion
from scale_gp import AsyncSGPClient

from modelport.config import Settings
from modelport.schemas.inference import MAX_SURFACE_STOP_SEQUENCES
from tests.conftest import ADMIN_KEY, in_process

MODEL = "smollm2-135m-instruct"
USAGE = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
PARTS = [
    {"type": "text", "text": "Read these."},
    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0xLjQK", "filename": "r.pdf"}},
    {"type": "input_audio", "input_audio": {"data": "UklGRiQAAABXQVZF", "format": "wav"}},
]
QUESTION = [{"role": "user", "content": "Hi"}]


class Upstream:
    """OpenAI's chat and legacy completions; a completion answers `<prompt>` (streamed in
    two pieces). Records every body."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.sent.append((request.url.path, body))
        if request.url.path.endswith("/chat/completions"):
            choice = {"index": 0, "message": {"role": "assistant", "content": "Hello."}, "finish_reason": "stop"}
            return httpx.Response(200, json={"id": "x", "object": "chat.completion", "created": 0, "model": "up",
                                             "choices": [choice], "usage": USAGE})  # fmt: skip
        text = f"<{body['prompt']}>"
        if body.get("stream"):
            pieces = [{"choices": [{"index": 0, "text": text[:1], "finish_reason": None}]},
                      {"choices": [{"index": 0, "text": text[1:], "finish_reason": "stop"}]},
                      {"choices": [], "usage": USAGE}]  # fmt: skip
            stream = "".join(f"data: {json.dumps(piece)}\n\n" for piece in pieces) + "data: [DONE]\n\n"
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream.encode())
        choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
        return httpx.Response(200, json={"id": "c", "object": "text_completion", "created": 0, "model": "up",
                                         "choices": [choice], "usage": USAGE})  # fmt: skip

    def bodies(self, suffix: str) -> list[dict[str, Any]]:
        return [body for path, body in self.sent if path.endswith(suffix)]


@pytest.fixture(scope="module")
def upstream() -> Upstream:
    return Upstream()


async def _deploy(client: httpx.AsyncClient, vendor: str, model_type: str = "CHAT_COMPLETION") -> tuple[str, str]:
    """(model name, deployment id) of a new model of `vendor` on the upstream above."""
    name = f"{vendor.lower()}-{uuid.uuid4().hex[:8]}"
    made = await client.post(
        "/v4/models",
        json={"name": name, "model_type": model_type, "model_vendor": vendor,
              "model_creation_parameters": {"base_url": "http://upstream.test/v1", "model": "up"}},
    )  # fmt: skip
    assert made.status_code == 200, made.text
    deployed = await client.post(f"/v4/models/{made.json()['id']}/deployments", json={"name": "d"})
    assert deployed.status_code == 200, deployed.text
    return name, str(deployed.json()["id"])


@pytest.fixture(scope="module")
async def served(upstream: Upstream, database_url: str) -> AsyncIterator[dict[str, Any]]:
    settings = Settings(database_url=database_url, api_key=ADMIN_KEY, embedded_engine=False, upstream_attempts=1)
    async with in_process(settings, upstream=httpx.MockTransport(upstream)) as (app, client):
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=60)
        async with http:
            yield {
                "client": client,
                "strict": AsyncOpenAI(base_url="http://modelport.test/v1", api_key=ADMIN_KEY, http_client=http,
                                      max_retries=0, _strict_response_validation=True),
                # OpenAI's own types say every choice has a finish_reason, which a chunk in the
                # middle of a stream has not (null): streams are read as the SDKs read them by default.
                "lenient": AsyncOpenAI(base_url="http://modelport.test/v1", api_key=ADMIN_KEY, http_client=http,
                                       max_retries=0),
                "sgp": AsyncSGPClient(api_key=ADMIN_KEY, base_url="http://modelport.test", http_client=http,
                                      max_retries=0),
                "OPENAI": await _deploy(client, "OPENAI"),
                "OTHER": await _deploy(client, "OTHER"),
                "COMPLETION": await _deploy(client, "OTHER", "COMPLETION"),
            }  # fmt: skip


async def test_file_and_audio_parts_reach_openai_as_sent(served: dict[str, Any], upstream: Upstream) -> None:
    answer = await served["strict"].chat.completions.create(
        model=served["OPENAI"][0], messages=[{"role": "user", "content": PARTS}]
    )
    assert answer.choices[0].message.content == "Hello."
    assert upstream.bodies("/chat/completions")[-1]["messages"] == [{"role": "user", "content": PARTS}]


@pytest.mark.parametrize(("part", "named"), [(PARTS[1], "file content parts"), (PARTS[2], "input_audio content parts")])
async def test_other_vendors_answer_400_naming_the_part(
    served: dict[str, Any], upstream: Upstream, part: dict[str, Any], named: str
) -> None:
    name, deployment = served["OTHER"]
    before = len(upstream.sent)
    messages = [{"role": "user", "content": [PARTS[0], part]}]
    answer = await served["client"].post("/v1/chat/completions", json={"model": name, "messages": messages})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and named in error["message"] and deployment in error["message"]
    with pytest.raises(openai.BadRequestError, match=named):
        await served["strict"].chat.completions.create(model=name, messages=messages)
    assert len(upstream.sent) == before


async def test_more_than_four_stops_where_the_vendor_takes_them(served: dict[str, Any], upstream: Upstream) -> None:
    stops = [f"STOP{index}" for index in range(6)]
    await served["strict"].chat.completions.create(model=served["OTHER"][0], messages=QUESTION, stop=stops)
    assert upstream.bodies("/chat/completions")[-1]["stop"] == stops
    await served["strict"].completions.create(model=served["COMPLETION"][0], prompt="p", stop=stops)
    assert upstream.bodies("/completions")[-1]["stop"] == stops

    before = len(upstream.sent)
    name, deployment = served["OPENAI"]
    with pytest.raises(openai.BadRequestError, match=f"5 stop sequences; deployment {deployment}.*at most 4"):
        await served["strict"].chat.completions.create(model=name, messages=QUESTION, stop=stops[:5])
    beyond = [f"S{index}" for index in range(MAX_SURFACE_STOP_SEQUENCES + 1)]
    with pytest.raises(openai.BadRequestError, match="stop"):
        await served["strict"].chat.completions.create(model=served["OTHER"][0], messages=QUESTION, stop=beyond)
    assert len(upstream.sent) == before


async def test_several_prompts_with_n_and_echo_are_indexed_prompt_major(
    served: dict[str, Any], upstream: Upstream
) -> None:
    name = served["COMPLETION"][0]
    before = len(upstream.bodies("/completions"))
    answer = await served["strict"].completions.create(
        model=name, prompt=["alpha", "beta"], n=2, echo=True, seed=1, max_tokens=5
    )
    assert [(choice.index, choice.text) for choice in answer.choices] == [
        (0, "alpha<alpha>"), (1, "alpha<alpha>"), (2, "beta<beta>"), (3, "beta<beta>")]  # fmt: skip
    sent = upstream.bodies("/completions")[before:]
    assert sorted((body["prompt"], body["seed"]) for body in sent) == [("alpha", 1), ("alpha", 2), ("beta", 3),
                                                                       ("beta", 4)]  # fmt: skip
    assert all("echo" not in body and "n" not in body for body in sent)  # the vendor gets one plain call each
    assert answer.usage is not None and answer.usage.prompt_tokens == 4 * USAGE["prompt_tokens"]


async def test_streamed_text_chunks_carry_a_null_finish_reason_until_the_last(served: dict[str, Any]) -> None:
    name = served["COMPLETION"][0]
    body = {"model": name, "prompt": ["alpha", "beta"], "echo": True, "stream": True}
    async with served["client"].stream("POST", "/v1/completions", json=body) as stream:
        assert stream.status_code == 200
        lines = [line[6:] async for line in stream.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            assert "finish_reason" in choice, chunk
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    reasons = [(choice["index"], choice["finish_reason"]) for chunk in chunks for choice in chunk["choices"]]
    assert [index for index, _ in reasons] == sorted(index for index, _ in reasons)  # one choice after the other
    for index in (0, 1):
        *middle, last = [reason for at, reason in reasons if at == index]
        assert middle and all(reason is None for reason in middle) and last == "stop"
    assert texts == {0: "alpha<alpha>", 1: "beta<beta>"}
    # Both SDKs read the stream (with their default, lenient validation).
    read = [chunk async for chunk in await served["lenient"].completions.create(model=name, prompt="x", stream=True)]
    assert "".join(chunk.choices[0].text for chunk in read) == "<x>"
    assert [chunk.choices[0].finish_reason for chunk in read][-2:] == [None, "stop"]
    beta = await served["sgp"].beta.completions.create(model=name, prompt="x", stream=True)
    assert "".join([chunk.choices[0].text async for chunk in beta if chunk.choices]) == "<x>"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"prompt": [1, 2, 3], "echo": True}, "echo"),
        ({"prompt": "p", "best_of": 1, "n": 2}, "best_of"),
        ({"prompt": "p", "best_of": 3, "n": 2, "stream": True}, "best_of"),
        ({"prompt": ["a", "b", "c"], "best_of": 50}, "128"),
    ],
)
async def test_completions_bad_shapes_are_400s_naming_them(
    served: dict[str, Any], upstream: Upstream, body: dict[str, Any], named: str
) -> None:
    before = len(upstream.sent)
    answer = await served["client"].post("/v1/completions", json={"model": served["COMPLETION"][0], **body})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "invalid_request_error" and named in answer.json()["error"]["message"]
    if "stream" not in body:
        assert len(upstream.sent) == before


async def test_token_id_prompts_reach_vendors_that_take_them(served: dict[str, Any], upstream: Upstream) -> None:
    name = served["COMPLETION"][0]
    one = await served["strict"].completions.create(model=name, prompt=[1, 2, 3])
    assert upstream.bodies("/completions")[-1]["prompt"] == [1, 2, 3]
    assert one.choices[0].text == "<[1, 2, 3]>"
    before = len(upstream.bodies("/completions"))
    two = await served["strict"].completions.create(model=name, prompt=[[4, 5], [6]])
    assert sorted(body["prompt"] for body in upstream.bodies("/completions")[before:]) == [[4, 5], [6]]
    assert [(choice.index, choice.text) for choice in two.choices] == [(0, "<[4, 5]>"), (1, "<[6]>")]
    # A chat deployment of an OpenAI-compatible server: whether its model reads ids is not known.
    chat, deployment = served["OTHER"]
    answer = await served["client"].post("/v1/completions", json={"model": chat, "prompt": [1, 2, 3]})
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]["message"]
    assert "prompts as token ids" in message and deployment in message


async def _completion(client: httpx.AsyncClient, body: dict[str, Any]) -> Completion:
    answer = await client.post("/v1/completions", json={"model": MODEL, "max_tokens": 3, **body})
    assert answer.status_code == 200, answer.text
    return Completion.model_validate(answer.json())


async def test_best_of_and_echo_on_the_embedded_model(client: httpx.AsyncClient) -> None:
    story = {"prompt": "Once upon a time", "temperature": 1.5, "seed": 11}
    best = await _completion(client, {**story, "best_of": 3, "n": 2, "logprobs": 0})
    assert [choice.index for choice in best.choices] == [0, 1]
    means = []
    for choice in best.choices:
        assert choice.logprobs is not None and choice.logprobs.token_logprobs
        means.append(sum(choice.logprobs.token_logprobs) / len(choice.logprobs.token_logprobs))
    assert means[0] >= means[1]  # the best first
    kept = sum(len(choice.logprobs.token_logprobs or []) for choice in best.choices if choice.logprobs)
    assert best.usage is not None and best.usage.completion_tokens >= kept  # all three were generated
    quiet = await _completion(client, {**story, "best_of": 2})
    assert len(quiet.choices) == 1 and quiet.choices[0].logprobs is None  # ranked, but not asked to show them
    echoed = await _completion(client, {"prompt": "The sky is", "temperature": 0, "echo": True})
    plain = await _completion(client, {"prompt": "The sky is", "temperature": 0})
    assert echoed.choices[0].text == "The sky is" + plain.choices[0].text
