"""A request inside the engine: queued (a Job), then running (a Sequence).

The state `engine/model.py`'s scheduler keeps per request, in one place: what was
asked, and, once admitted, where its tokens live in the shared KV cache.
"""

from __future__ import annotations

import codecs
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from modelport.generation import Sampling
from modelport.stops import StopSequenceFilter


@dataclass(eq=False)
class Job:
    key: Hashable  # the caller's handle for this request
    prompt_tokens: list[int]
    sampling: Sampling  # max_tokens fitted to the window
    # Built at submit, so that a grammar llama.cpp cannot parse refuses the request
    # before it waits; owned by the job, then by its sequence.
    sampler: Any = None
    # The tenant it is for: at most `sequences_per_account` of one account's jobs run at once.
    account: str | None = None


@dataclass(eq=False)
class Sequence:
    """A job while it runs: its place in the shared KV cache and its own sampling state."""

    job: Job
    seq_id: int
    sampler: Any  # llama_sampler_p, owned by this sequence; None: plain greedy
    max_tokens: int
    reserved: int  # KV cells set aside for it: prompt + max_tokens
    unevaluated: list[int]  # prompt tokens not yet decoded
    stops: StopSequenceFilter
    evaluated: list[int]  # tokens whose KV cells this sequence holds, in order
    generated: int = 0
    reused: int = 0  # prompt tokens whose cells came from a kept prefix: never evaluated
    last_token: int = -1
    cancelled: bool = False
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
