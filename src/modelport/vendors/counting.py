"""How many tokens a call's prompt is, without generating anything (Anthropic's
`/v1/messages/count_tokens`).

A vendor that can count exactly says so by having `count_prompt`: the embedded
engine tokenizes the rendered chat with the model's own tokenizer (the number its
answer reports as prompt tokens), Anthropic asks its upstream's count endpoint. For
every other vendor the count is modelport's estimate from the prompt's bytes
(`limits/token_estimate.py`), and marked as one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from modelport.generation import GenerationCall
from modelport.limits.token_estimate import estimate_prompt_tokens
from modelport.vendors.base import Target, Vendor


@runtime_checkable
class PromptCounter(Protocol):
    async def count_prompt(self, target: Target, call: GenerationCall) -> int: ...


@dataclass(frozen=True, slots=True)
class PromptCount:
    tokens: int
    estimated: bool  # modelport's estimate: the vendor cannot count


async def count_prompt(vendor: Vendor, target: Target, call: GenerationCall) -> PromptCount:
    if isinstance(vendor, PromptCounter):
        return PromptCount(await vendor.count_prompt(target, call), estimated=False)
    return PromptCount(estimate_prompt_tokens(call), estimated=True)
