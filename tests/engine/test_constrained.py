"""Constrained decoding, seeds and logit bias in the embedded engine, on the real
SmolLM2 GGUF, driven step by step as in test_batching.py: a sequence with a grammar
runs in the same batches as sequences without one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import pytest

from modelport.config import EngineSettings
from modelport.engine.grammar import grammar_for
from modelport.engine.model import BatchEngine
from modelport.engine.pool import resolve_checkpoint
from modelport.errors import InvalidRequest
from modelport.generation import Sampling
from tests.engine.test_batching import GGUF, prompt, run, run_together, text

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "languages": {"type": "array", "items": {"type": "string", "enum": ["en", "fr", "de"]}, "maxItems": 3},
    },
    "required": ["name", "age", "languages"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def engine() -> Iterator[BatchEngine]:
    loaded = BatchEngine(resolve_checkpoint(GGUF), EngineSettings(n_ctx=8192, prefix_cache=False))
    yield loaded
    loaded.close()


def schema_grammar(schema: dict[str, object]) -> str:
    grammar = grammar_for({"type": "json_schema", "json_schema": {"name": "person", "schema": schema}})
    assert grammar is not None
    return grammar


def test_json_schema_output_parses_and_matches_the_schema_inside_a_mixed_batch(engine: BatchEngine) -> None:
    asks = prompt(engine, "Describe a person called Ada in JSON.")
    others = [prompt(engine, "Write one sentence about the sea."), prompt(engine, "Name three fruits.")]
    greedy = Sampling(temperature=0.0, max_tokens=30)
    alone = [text(run(engine, tokens, greedy)) for tokens in others]
    constrained = Sampling(temperature=0.0, max_tokens=200, grammar=schema_grammar(PERSON))
    sampled = replace(constrained, temperature=0.9, seed=7)

    results = run_together(engine, [(others[0], greedy), (asks, constrained), (asks, sampled), (others[1], greedy)])

    for chunks in (results[1], results[2]):
        assert chunks[-1].finish_reason == "stop"  # ended by itself: the grammar was complete
        answer = json.loads(text(chunks))
        assert set(answer) == {"name", "age", "languages"}
        assert isinstance(answer["name"], str)
        assert isinstance(answer["age"], int)
        assert len(answer["languages"]) <= 3
        assert all(language in {"en", "fr", "de"} for language in answer["languages"])
    # Sequences without a grammar answer exactly as they do alone.
    assert [text(results[0]), text(results[3])] == alone


def test_json_object_is_an_object(engine: BatchEngine) -> None:
    grammar = grammar_for({"type": "json_object"})
    chunks = run(
        engine,
        prompt(engine, "Reply in JSON: an object with the name and colour of a cat."),
        Sampling(temperature=0.0, max_tokens=200, grammar=grammar),
    )
    assert chunks[-1].finish_reason == "stop"
    assert isinstance(json.loads(text(chunks)), dict)


def test_json_cut_by_max_tokens_finishes_with_length(engine: BatchEngine) -> None:
    # The documented contract: "stop" means the JSON is complete; "length" means the
    # token limit cut it, so the client knows not to expect it to parse.
    chunks = run(
        engine,
        prompt(engine, "Describe a person called Ada in JSON."),
        Sampling(temperature=0.0, max_tokens=3, grammar=schema_grammar(PERSON)),
    )
    assert chunks[-1].finish_reason == "length"
    assert text(chunks).startswith("{")


def test_the_same_seed_draws_the_same_text(engine: BatchEngine) -> None:
    tokens = prompt(engine, "Tell me a story about a dragon.")
    texts = {
        seed: [text(run(engine, tokens, Sampling(temperature=1.0, max_tokens=30, seed=seed))) for _ in range(2)]
        for seed in (1, 2, 3)
    }
    for first, second in texts.values():
        assert first == second
    assert len({first for first, _ in texts.values()}) > 1


def test_logit_bias_bans_and_forces_tokens(engine: BatchEngine) -> None:
    tokens = prompt(engine, "Write one sentence about the sea.")
    greedy = Sampling(temperature=0.0, max_tokens=5, logprobs=True)
    first = run(engine, tokens, greedy)[0]
    assert first.logprobs
    banned_id = engine.tokenize(first.logprobs[0].token, special=False)[0]

    without = run(engine, tokens, replace(greedy, logit_bias=((banned_id, -100.0),)))
    assert without[0].text != first.text

    forced_id = engine.tokenize(" Banana", special=False)[0]
    forced = run(engine, tokens, replace(greedy, logit_bias=((forced_id, 100.0),)))
    assert forced[0].text == engine.vocabulary.piece(forced_id).decode()


def test_a_grammar_or_bias_the_engine_cannot_take_is_refused_at_submit(engine: BatchEngine) -> None:
    tokens = prompt(engine, "Hello")
    broken = engine.submit(object(), tokens, Sampling(temperature=0.0, max_tokens=5, grammar="root ::= ("))
    assert isinstance(broken, InvalidRequest)
    outside = engine.submit(object(), tokens, Sampling(temperature=0.0, max_tokens=5, logit_bias=((10**7, 5.0),)))
    assert isinstance(outside, InvalidRequest)
    assert "vocabulary" in outside.detail
    assert not engine.busy


def test_a_schema_that_cannot_be_a_grammar_is_a_400() -> None:
    with pytest.raises(InvalidRequest, match="grammar"):
        grammar_for({"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/definitions/nowhere"}}})
    with pytest.raises(InvalidRequest, match="not supported"):
        grammar_for({"type": "xml"})
    assert grammar_for({"type": "text"}) is None
