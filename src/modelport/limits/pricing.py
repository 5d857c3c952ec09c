"""What a request may cost, before it runs (the reservation) and after (the bill).

Prices come from the model's creation parameters (`input_cost_per_token`,
`output_cost_per_token`, US dollars, LiteLLM's names), with a deployment's overrides.
"""

from __future__ import annotations

import math
from typing import Any

from modelport.generation import GenerationCall

# Tokens a chat template may add around each message (role markers, separators): more
# than any common template adds, so that the prompt estimate stays an upper bound.
MESSAGE_OVERHEAD_TOKENS = 16


def price(parameters: dict[str, Any], name: str) -> float:
    value = parameters.get(name)
    try:
        found = float(value) if value is not None else 0.0
    except (TypeError, ValueError):
        return 0.0
    return found if math.isfinite(found) and found > 0 else 0.0


def cost_of(parameters: dict[str, Any], prompt_tokens: int, response_tokens: int) -> float:
    return prompt_tokens * price(parameters, "input_cost_per_token") + response_tokens * price(
        parameters, "output_cost_per_token"
    )


def prompt_token_bound(call: GenerationCall) -> int:
    """At most this many prompt tokens: no tokenizer in use makes more than one token
    of a UTF-8 byte (byte-level BPE falls back to single bytes), plus template overhead."""
    if call.messages is None:
        return len((call.prompt or "").encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS
    total = 0
    for message in call.messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content.encode("utf-8"))
        elif isinstance(content, list):  # text parts; an image is priced by its vendor, not bounded here
            total += sum(len(str(part.get("text", "")).encode("utf-8")) for part in content if isinstance(part, dict))
        total += MESSAGE_OVERHEAD_TOKENS
    return total


def prompt_token_guess(call: GenerationCall) -> int:
    """A fair guess (about four bytes a token) for billing a request whose vendor never
    reported its prompt tokens (a stream abandoned before the end)."""
    return math.ceil(prompt_token_bound(call) / 4)


def response_token_bound(call: GenerationCall, context_window: int | None, default_max_tokens: int) -> int:
    """max_tokens when the request sets it; otherwise the context window, or a default."""
    if call.sampling.max_tokens is not None:
        return call.sampling.max_tokens
    return context_window or default_max_tokens


__all__ = ["cost_of", "price", "prompt_token_bound", "prompt_token_guess", "response_token_bound"]
