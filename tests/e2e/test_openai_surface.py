"""The OpenAI-compatible surface of a real `modelport serve`, driven by the `openai` SDK
(and the SGP SDK's OpenAI-shaped beta, strict), on the embedded model."""

from __future__ import annotations

import json

import openai
import pytest
from openai import OpenAI
from scale_gp import SGPClient

from tests.conftest import CHAT_DEPLOYMENT, E2E_KEY

pytestmark = pytest.mark.e2e

MODEL = "smollm2-135m-instruct"
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Tell me a fact about the sea."},
]


@pytest.fixture(scope="module")
def client(server: str) -> OpenAI:
    return OpenAI(base_url=f"{server}/v1", api_key=E2E_KEY, max_retries=0)


def test_models_are_listed_by_name_and_retrieved(client: OpenAI) -> None:
    listed = client.models.list()
    # A fresh install: the chat model and the embedding model, both embedded.
    assert sorted(model.id for model in listed.data) == sorted([MODEL, "all-minilm-l6-v2"])
    assert {model.owned_by for model in listed.data} == {"llmengine"}
    assert client.models.retrieve(MODEL).id == MODEL
    assert client.models.retrieve(f"llmengine/{MODEL}").id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_chat_streamed_with_usage_joins_to_the_whole_answer(client: OpenAI) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0, max_tokens=30)  # type: ignore[arg-type]
    assert whole.object == "chat.completion" and whole.model == MODEL
    [choice] = whole.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert whole.usage is not None and whole.usage.completion_tokens > 0 and whole.usage.prompt_tokens > 0
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=30,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == choice.message.content
    finishing = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert finishing == [choice.finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_the_model_can_be_named_by_vendor_and_name_or_by_deployment_id(client: OpenAI, server: str) -> None:
    [deployment] = [
        item
        for item in SGPClient(api_key=E2E_KEY, base_url=server).models.deployments.list_all()
        if item.name == CHAT_DEPLOYMENT
    ]
    deployment_id = deployment.id
    answers = {
        name: client.chat.completions.create(model=name, messages=MESSAGES, temperature=0, max_tokens=8)  # type: ignore[arg-type]
        for name in (MODEL, f"llmengine/{MODEL}", deployment_id)
    }
    assert len({answer.choices[0].message.content for answer in answers.values()}) == 1


def test_stop_cuts_the_answer_streamed_or_not(client: OpenAI) -> None:
    free = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0, max_tokens=30)  # type: ignore[arg-type]
    text = free.choices[0].message.content or ""
    stop = text.split()[len(text.split()) // 2]
    cut = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0, max_tokens=30, stop=stop)  # type: ignore[arg-type]
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=30,
        stop=[stop],
        stream=True,
    )
    assert (
        "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices) == text[: text.index(stop)]
    )


def test_logprobs_in_openais_shape(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=10,
        logprobs=True,
        top_logprobs=3,
    )
    [choice] = answer.choices
    assert choice.logprobs is not None and choice.logprobs.content
    assert "".join(entry.token for entry in choice.logprobs.content) == choice.message.content
    for entry in choice.logprobs.content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        # Greedy: the chosen token is the likeliest.
        assert entry.logprob == pytest.approx(max(alt.logprob for alt in entry.top_logprobs))


def test_text_completions_streamed_and_not(client: OpenAI) -> None:
    whole = client.completions.create(model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=12)
    assert whole.object == "text_completion" and whole.choices[0].text
    streamed = client.completions.create(
        model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=12, stream=True
    )
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == whole.choices[0].text
    with_logprobs = client.completions.create(
        model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=5, logprobs=2
    )
    logprobs = with_logprobs.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and "".join(logprobs.tokens) == with_logprobs.choices[0].text
    assert logprobs.top_logprobs is not None and all(len(alts) == 2 for alts in logprobs.top_logprobs)


def test_errors_are_the_sdks_typed_exceptions(client: OpenAI, server: str) -> None:
    with pytest.raises(openai.AuthenticationError) as unauthorised:
        OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0).models.list()
    assert unauthorised.value.status_code == 401
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)  # type: ignore[arg-type]
    assert "no-such-model" in unknown.value.message
    with pytest.raises(openai.BadRequestError) as out_of_range:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=3)  # type: ignore[arg-type]
    assert isinstance(out_of_range.value.body, dict) and out_of_range.value.body["param"] == "temperature"
    assert out_of_range.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as unknown_parameter:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_body={"temprature": 0.5})  # type: ignore[arg-type]
    assert isinstance(unknown_parameter.value.body, dict) and unknown_parameter.value.body["param"] == "temprature"
    # A hint the model cannot act on is no error: it is left out, and named.
    thinking = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        reasoning_effort="low",
        max_tokens=2,
    )
    assert thinking.headers["x-modelport-dropped"] == "reasoning_effort"


def test_the_sgp_beta_answers_in_the_sdks_strict_types(server: str) -> None:
    sgp = SGPClient(api_key=E2E_KEY, base_url=server, _strict_response_validation=True, max_retries=0)
    answer = sgp.beta.chat.completions.create(
        model=f"llmengine/{MODEL}", messages=MESSAGES, temperature=0, max_tokens=12
    )
    text = answer.choices[0].message.content  # type: ignore[union-attr]
    assert text
    stream = sgp.beta.chat.completions.create(
        model=f"llmengine/{MODEL}", messages=MESSAGES, temperature=0, max_tokens=12, stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == text
    completion = sgp.beta.completions.create(
        model=f"llmengine/{MODEL}", prompt="The capital of France is", temperature=0, max_tokens=8
    )
    assert completion.choices[0].text
    # The SDK's CompletionV5 requires a finish_reason on every choice, which a chunk in the
    # middle of a stream cannot have (OpenAI sends none either): that stream is read by the
    # SDK's default, non-strict client.
    lenient = SGPClient(api_key=E2E_KEY, base_url=server, max_retries=0)
    streamed = lenient.beta.completions.create(
        model=f"llmengine/{MODEL}", prompt="The capital of France is", temperature=0, max_tokens=8, stream=True
    )
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == completion.choices[0].text


def test_json_schema_output_parses_and_matches_on_the_embedded_model(client: OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give me a city and its population as JSON."}],
        temperature=0,
        max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}},
    )
    [choice] = answer.choices
    assert choice.finish_reason == "stop", choice
    parsed = json.loads(choice.message.content or "")
    assert set(parsed) == {"city", "population"}
    assert isinstance(parsed["city"], str) and isinstance(parsed["population"], int)


def test_embeddings_through_the_openai_sdk_match_the_v4_route(client: OpenAI, server: str) -> None:
    texts = ["The cat sat on the mat.", "A kitten rested on the rug.", "Quarterly revenue grew by 4%."]
    # The SDK asks for base64 by default and decodes it; float is asked for explicitly here.
    packed = client.embeddings.create(model="all-minilm-l6-v2", input=texts)
    plain = client.embeddings.create(model="llmengine/all-minilm-l6-v2", input=texts, encoding_format="float")
    assert [item.index for item in packed.data] == [0, 1, 2]
    assert packed.usage.prompt_tokens > 0 and packed.usage.total_tokens == packed.usage.prompt_tokens
    [deployment] = [
        item
        for item in SGPClient(api_key=E2E_KEY, base_url=server).models.deployments.list_all()
        if item.name == "all-minilm-l6-v2-embedded"
    ]
    v4 = SGPClient(api_key=E2E_KEY, base_url=server).models.embeddings.create(deployment.id, texts=texts)
    for item, floats, expected in zip(packed.data, plain.data, v4.embeddings, strict=True):
        assert item.embedding == pytest.approx(expected, abs=1e-6)  # float32 on the wire
        assert floats.embedding == pytest.approx(expected, abs=1e-12)
    single = client.embeddings.create(model="all-minilm-l6-v2", input=texts[0], encoding_format="float")
    assert single.data[0].embedding == pytest.approx(v4.embeddings[0], abs=1e-12)
    with pytest.raises(openai.BadRequestError):  # a chat model does not embed
        client.embeddings.create(model=MODEL, input="hello")
    with pytest.raises(openai.BadRequestError):  # nor does an empty input
        client.embeddings.create(model="all-minilm-l6-v2", input=[])
