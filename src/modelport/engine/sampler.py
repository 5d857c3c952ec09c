"""Each sequence's own llama.cpp sampler chain: its sampling settings, its seed, its
logit bias and its grammar (constrained decoding for response_format and forced tool
calls). A chain holds state (the grammar's position, the penalties' history), so every
sequence owns one, built when it is submitted and freed when it ends."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from modelport.errors import InvalidRequest
from modelport.generation import Sampling

log = logging.getLogger(__name__)

# The most of what llama.cpp says about a grammar that reaches the log.
LOGGED_GRAMMAR_BYTES = 1024


def build_sampler(sampling: Sampling, max_tokens: int, vocab: Any, n_vocab: int) -> Any:
    """A llama.cpp sampler chain with this request's settings (same order as
    llama-cpp-python's own: logit bias, penalties, top_k, top_p, temperature, then
    the draw; a grammar masks what it forbids before any of the choosing), or None
    for plain greedy decoding. InvalidRequest for a grammar or bias it cannot take."""
    import llama_cpp

    penalised = bool(sampling.frequency_penalty or sampling.presence_penalty)
    if sampling.temperature <= 0 and not penalised and not sampling.grammar and not sampling.logit_bias:
        return None  # plain argmax: 5 µs with numpy against 45 µs through a sampler chain
    bias = _logit_bias_sampler(sampling.logit_bias, n_vocab) if sampling.logit_bias else None
    try:
        grammar = _grammar_sampler(sampling.grammar, vocab) if sampling.grammar else None
    except InvalidRequest:
        free_sampler(bias)
        raise
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = llama_cpp.llama_sampler_chain_add
    if bias is not None:
        add(chain, bias)
    if penalised:
        add(
            chain,
            llama_cpp.llama_sampler_init_penalties(
                n_vocab,
                max_tokens,  # every generated token counts
                1.0,
                sampling.frequency_penalty or 0.0,
                sampling.presence_penalty or 0.0,
            ),
        )
    if grammar is not None:
        add(chain, grammar)
    if sampling.temperature <= 0:
        add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    if sampling.top_k:
        add(chain, llama_cpp.llama_sampler_init_top_k(sampling.top_k))
    if sampling.top_p is not None and sampling.top_p < 1.0:
        add(chain, llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
    add(chain, llama_cpp.llama_sampler_init_temp(sampling.temperature))
    # LLAMA_DEFAULT_SEED (0xFFFFFFFF) asks llama.cpp for a random seed; a caller's
    # seed is folded below it, so the same seed always draws the same tokens.
    seed = llama_cpp.LLAMA_DEFAULT_SEED if sampling.seed is None else sampling.seed % 0xFFFFFFFF
    add(chain, llama_cpp.llama_sampler_init_dist(seed))
    return chain


def _grammar_sampler(grammar: str, vocab: Any) -> Any:
    import llama_cpp

    # llama.cpp prints a grammar it refuses to stderr whole (a 150 MB grammar was 150 MB
    # of log, issue 21): what it prints is caught, and only its start is logged.
    with _stderr_caught(LOGGED_GRAMMAR_BYTES) as caught:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    said = caught.decode("utf-8", "replace").strip()
    if not sampler:
        log.warning("llama.cpp refused a grammar of %d bytes: %s", len(grammar), said)
        reason = said.split("\n", 1)[0][:300]
        raise InvalidRequest(f"llama.cpp could not parse the grammar built from the JSON schema: {reason}")
    if said:
        log.warning("llama.cpp, on a grammar of %d bytes: %s", len(grammar), said)
    return sampler


@contextlib.contextmanager
def _stderr_caught(limit: int) -> Iterator[bytearray]:
    """The first `limit` bytes that native code writes to file descriptor 2 meanwhile,
    filled in on leaving. The engine runs one thread: nothing else's output is caught."""
    caught = bytearray()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as file:
        saved = os.dup(2)
        os.dup2(file.fileno(), 2)
        try:
            yield caught
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            file.seek(0)
            caught += file.read(limit)


def check_token_ids(logit_bias: tuple[tuple[int, float], ...], vocabulary: int) -> None:
    """A 400 naming the logit_bias token ids a model of `vocabulary` tokens lacks."""
    outside = sorted(token for token, _ in logit_bias if not 0 <= token < vocabulary)
    if outside:
        raise InvalidRequest(
            f"logit_bias names token ids outside this model's vocabulary of {vocabulary}: "
            + ", ".join(map(str, outside[:10])),
            param="logit_bias",
        )


def _logit_bias_sampler(logit_bias: tuple[tuple[int, float], ...], n_vocab: int) -> Any:
    import llama_cpp

    check_token_ids(logit_bias, n_vocab)
    entries = (llama_cpp.llama_logit_bias * len(logit_bias))()
    for entry, (token, bias) in zip(entries, logit_bias, strict=True):
        entry.token = token
        # OpenAI: -100 bans a token, 100 makes it the only choice.
        entry.bias = -math.inf if bias <= -100 else bias
    return llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(logit_bias), entries)


def free_sampler(sampler: Any) -> None:
    if sampler is not None:
        import llama_cpp

        llama_cpp.llama_sampler_free(sampler)
