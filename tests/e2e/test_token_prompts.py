"""/v1/completions with prompts as token ids on the embedded model of a real `modelport
serve` (SmolLM2 on loopback), through the `openai` SDK in strict mode: the ids, taken from
the model's own tokenizer, are evaluated as given and answer what their text answers
(temperature 0), counted as the prompt's tokens, within the same bounds as text."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from openai import OpenAI

from modelport.catalogue.bootstrap import DEFAULT_CHECKPOINT
from modelport.engine.convert import gguf_path
from modelport.engine.pool import resolve_checkpoint
from modelport.engine.vocabulary import Vocabulary
from tests.conftest import E2E_KEY

pytestmark = pytest.mark.e2e

MODEL = "smollm2-135m-instruct"
TEXTS = ["The capital of France is", "One, two, three,"]
GREEDY = {"temperature": 0, "max_tokens": 6}


@pytest.fixture(scope="module")
def vocabulary() -> Iterator[Vocabulary]:
    """The chat model's tokenizer, from the GGUF file the engine loads (what the engine
    itself tokenizes a text prompt with)."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf_path(resolve_checkpoint(DEFAULT_CHECKPOINT))), vocab_only=True,
                          verbose=False)  # fmt: skip
    try:
        yield Vocabulary(llm)
    finally:
        llm.close()


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{server}/v1", api_key=E2E_KEY, max_retries=0, timeout=120,
                _strict_response_validation=True) as sdk:  # fmt: skip
        yield sdk


@pytest.fixture(scope="module")
def lenient(server: str) -> Iterator[OpenAI]:
    """For streams: OpenAI's own types say every choice has a finish_reason, which a chunk
    in the middle of a stream has not (null), so streams are read as the SDK reads them by
    default (as in tests/api/test_openai_parts_and_completions.py)."""
    with OpenAI(base_url=f"{server}/v1", api_key=E2E_KEY, max_retries=0, timeout=120) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def from_text(client: OpenAI) -> list[str]:
    """What the text prompts answer, the reference the token ids must match."""
    answer = client.completions.create(model=MODEL, prompt=TEXTS, **GREEDY)  # type: ignore[arg-type]
    texts = [choice.text for choice in sorted(answer.choices, key=lambda choice: choice.index)]
    assert all(texts), answer
    return texts


def test_one_prompt_of_ids_answers_what_its_text_answers(
    client: OpenAI, vocabulary: Vocabulary, from_text: list[str]
) -> None:
    ids = vocabulary.tokenize(TEXTS[0], special=False)
    answer = client.completions.create(model=MODEL, prompt=ids, **GREEDY)  # type: ignore[arg-type]
    assert [choice.text for choice in answer.choices] == from_text[:1]
    assert answer.usage is not None and answer.usage.prompt_tokens == len(ids)


def test_several_prompts_of_ids_whole_and_streamed(
    client: OpenAI, lenient: OpenAI, vocabulary: Vocabulary, from_text: list[str]
) -> None:
    prompts = [vocabulary.tokenize(text, special=False) for text in TEXTS]
    whole = client.completions.create(model=MODEL, prompt=prompts, **GREEDY)  # type: ignore[arg-type]
    assert [choice.text for choice in sorted(whole.choices, key=lambda choice: choice.index)] == from_text
    assert whole.usage is not None and whole.usage.prompt_tokens == sum(map(len, prompts))
    stream = lenient.completions.create(
        model=MODEL,
        prompt=prompts,
        stream=True,
        stream_options={"include_usage": True},
        **GREEDY,  # type: ignore[arg-type]
    )
    streamed = ["", ""]
    usage = None
    for chunk in stream:
        for choice in chunk.choices:
            streamed[choice.index] += choice.text
        usage = chunk.usage or usage
    assert streamed == from_text
    assert usage is not None and usage.prompt_tokens == sum(map(len, prompts))


def test_an_id_outside_the_vocabulary_is_a_400_naming_prompt(
    client: OpenAI, lenient: OpenAI, vocabulary: Vocabulary
) -> None:
    for sdk, stream in ((client, False), (lenient, True)):
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.completions.create(model=MODEL, prompt=[1, vocabulary.size], stream=stream, **GREEDY)  # type: ignore[call-overload]
        body = refused.value.body
        assert isinstance(body, dict) and body["param"] == "prompt", body
        assert str(vocabulary.size) in body["message"]


def test_ids_longer_than_the_window_are_refused_as_text_is(client: OpenAI, vocabulary: Vocabulary) -> None:
    """The same prompt as text and as its ids: the same 400, naming the same numbers."""
    text = " hello" * 8300  # past the embedded model's 8,192-token window (MODELPORT_EMBEDDED_N_CTX)
    ids = vocabulary.tokenize(text, special=False)
    refusals = []
    for prompt in (text, ids):
        with pytest.raises(openai.BadRequestError) as refused:
            client.completions.create(model=MODEL, prompt=prompt, **GREEDY)  # type: ignore[arg-type]
        refusals.append(refused.value.body)
    assert refusals[0] == refusals[1], refusals
    assert isinstance(refusals[0], dict) and "context window" in refusals[0]["message"], refusals


def test_echo_with_logprobs_is_a_400_naming_the_deployments_that_compute_them(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model=MODEL, prompt=TEXTS[0], echo=True, logprobs=1, **GREEDY)  # type: ignore[arg-type]
    message = refused.value.message
    assert "echo with logprobs" in message and "OpenAI-compatible" in message, message
