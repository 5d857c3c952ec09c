"""What a request may cost, before it runs (the reservation) and after (the bill).

Prices come from the model's creation parameters (`input_cost_per_token`,
`output_cost_per_token`, `cache_read_input_cost_per_token`,
`cache_creation_input_cost_per_token`, US dollars, LiteLLM's names), with a deployment's
overrides. A cache price left unset is the input price: cached tokens then cost what
any input token costs.
"""

from __future__ import annotations

import math
from typing import Any

from modelport.generation import GenerationCall
from modelport.limits.token_estimate import json_bytes, prompt_bytes

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


def cost_of(
    parameters: dict[str, Any],
    prompt_tokens: int,
    response_tokens: int,
    *,
    cached_prompt_tokens: int = 0,
    cache_creation_tokens: int = 0,
) -> float:
    """What a call cost: `prompt_tokens` counts every input token, of which
    `cached_prompt_tokens` were read from the vendor's prompt cache and
    `cache_creation_tokens` written to it; each part at its own price."""
    input_price = price(parameters, "input_cost_per_token")
    read_price = _cache_price(parameters, "cache_read_input_cost_per_token", input_price)
    creation_price = _cache_price(parameters, "cache_creation_input_cost_per_token", input_price)
    cached = max(cached_prompt_tokens, 0)
    created = max(cache_creation_tokens, 0)
    # A vendor's cached parts never exceed its total; if one says so, no part is negative.
    uncached = max(prompt_tokens - cached - created, 0)
    return (
        uncached * input_price
        + cached * read_price
        + created * creation_price
        + response_tokens * price(parameters, "output_cost_per_token")
    )


def reserved_cost_of(parameters: dict[str, Any], prompt_tokens: int, response_tokens: int) -> float:
    """The most a call of these counts can cost, for its reservation: before the call
    nobody knows which prompt tokens the vendor will read from or write to its cache, so
    each is priced at the highest of the three input prices (writing to Anthropic's
    cache costs more than plain input), and the budget's overspend bound holds."""
    input_price = price(parameters, "input_cost_per_token")
    highest = max(
        input_price,
        _cache_price(parameters, "cache_read_input_cost_per_token", input_price),
        _cache_price(parameters, "cache_creation_input_cost_per_token", input_price),
    )
    return prompt_tokens * highest + response_tokens * price(parameters, "output_cost_per_token")


def _cache_price(parameters: dict[str, Any], name: str, input_price: float) -> float:
    # Unset (or unreadable): the input price. Set to 0: free, as a vendor may price it.
    value = parameters.get(name)
    try:
        found = float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        found = math.nan
    if not math.isfinite(found):
        return input_price
    return max(found, 0.0)


def prompt_token_bound(call: GenerationCall) -> int:
    """At most this many prompt tokens, for a call whose chat template the gateway does
    not render: every byte of what becomes prompt (messages, tools, response_format,
    chat_template_kwargs: see `token_estimate`) counted as a token, plus template
    overhead per message.

    One token a byte is the only ratio that is a bound: byte-level BPE falls back to
    single bytes, and text chosen to tokenize badly (digits, emoji, random strings)
    comes close to it. A smaller ratio (English averages four bytes a token) would let
    such text cost more than it reserved, and the overspend bound (`base.py`) would no
    longer hold. The reservation is given back at settlement, so a generous one costs
    a key headroom for the length of one request, never money."""
    size, messages = prompt_bytes(call)
    return size + MESSAGE_OVERHEAD_TOKENS * max(messages, 1)


def rendered_prompt_token_bound(prompt: str, call: GenerationCall | None = None) -> int:
    """At most this many prompt tokens for a prompt the chat template rendered; with
    `call`, its tools and response_format are added (the template may leave them out,
    and an upstream that renders may add them)."""
    extras = json_bytes(call.tools) + json_bytes(call.response_format) if call is not None else 0
    return len(prompt.encode("utf-8")) + extras + MESSAGE_OVERHEAD_TOKENS


def prompt_token_guess(call: GenerationCall) -> int:
    """A fair guess (about four bytes a token) for billing a request whose vendor never
    reported its prompt tokens (a stream abandoned before the end)."""
    return math.ceil(prompt_token_bound(call) / 4)


__all__ = [
    "cost_of",
    "price",
    "prompt_token_bound",
    "prompt_token_guess",
    "rendered_prompt_token_bound",
    "reserved_cost_of",
]
