"""The engine process's start-up self-check (`engine/process.py` runs it once loaded).

llama.cpp's prebuilt kernels may not work on the CPU they land on: a build that does
not crashes here, at start-up, or computes garbage, which this refuses. Either way no
user request ever reaches it.
"""

from __future__ import annotations

import math

from modelport.engine.model import BatchEngine, Event
from modelport.engine.protocol import ModelLoadError
from modelport.errors import ModelportError
from modelport.generation import GenerationChunk, Sampling

PROMPT = "The capital of France is"


def self_check(engine: BatchEngine) -> None:
    """Embed a sentence, or decode two tokens and look at their log-probabilities;
    ModelLoadError saying what was wrong."""
    if engine.embedding_only:
        try:
            vector, _ = engine.embed(PROMPT)
        except (RuntimeError, ModelportError) as exc:
            raise ModelLoadError(f"the start-up self-check could not embed a sentence: {exc}") from exc
        if not all(math.isfinite(value) for value in vector) or not any(vector):
            raise ModelLoadError("the start-up self-check computed an invalid embedding")
        return
    key = object()
    engine.submit(key, engine.tokenize(PROMPT, special=False), Sampling(temperature=0.0, max_tokens=2, logprobs=True))
    events: list[Event] = []
    while engine.busy:
        events += [event for owner, event in engine.step() if owner is key]
    errors = [event for event in events if isinstance(event, ModelportError)]
    if errors:
        raise ModelLoadError(f"the start-up self-check failed: {errors[0].detail}")
    chunks = [event for event in events if isinstance(event, GenerationChunk)]
    logprobs = [entry.logprob for chunk in chunks for entry in chunk.logprobs or []]
    if len(logprobs) != 2 or not all(value is not None and math.isfinite(value) and value <= 0 for value in logprobs):
        raise ModelLoadError(f"the start-up self-check computed invalid log-probabilities {logprobs}")
    engine.forget_kept_prefixes()  # no request shares the check's prompt
