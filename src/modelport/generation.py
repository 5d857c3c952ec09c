"""The vocabulary shared by the service, the vendor adapters and the embedded engine.

A `GenerationCall` is a request after validation and defaults: what to send. A vendor
answers with `GenerationChunk`s: raw text pieces (stop sequences may still be in
them; the service removes them), optional per-token logprobs, and at the end the
finish reason and token counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "content_filter"]


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling settings with every default already applied."""

    temperature: float
    max_tokens: int | None  # None: the vendor's adapter decides (it knows the prompt size)
    top_p: float | None = None
    top_k: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stop_sequences: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0
    reasoning_effort: str | None = None


@dataclass(frozen=True, slots=True)
class GenerationCall:
    """One inference request as a vendor adapter receives it."""

    sampling: Sampling
    # Chat requests carry messages (OpenAI-style dicts, prompt appended last); plain
    # completions carry raw `prompt` text and no messages.
    messages: tuple[dict[str, Any], ...] | None = None
    prompt: str | None = None
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TokenAlternative:
    token: str
    logprob: float
    bytes: list[int] | None


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TokenAlternative] = field(default_factory=list)


@dataclass(slots=True)
class GenerationChunk:
    text: str = ""
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    response_tokens: int | None = None
    # The counts are modelport's estimate: the vendor reported none (token_estimate.py).
    estimated: bool = False
