"""max_tokens is decided once, by the service, before admission: what the vendor is sent,
and the most tokens the answer can have, which the limits reserve (SPEC 3.1's defaults)."""

from __future__ import annotations

from dataclasses import replace

from modelport.generation import GenerationCall, Sampling
from modelport.inference.admission import LimitGate
from modelport.inference.calls import MaxTokens, max_tokens_for
from modelport.limits.memory import MemoryLimiter
from modelport.limits.pricing import prompt_token_bound
from modelport.principal import Limits, Principal
from modelport.vendors.anthropic import AnthropicVendor
from modelport.vendors.base import Capabilities, Target
from modelport.vendors.settings import AnthropicSettings

NO_DEFAULT = Capabilities(vendor="OPENAI", parameters=frozenset())
LEGACY_COMPLETIONS = Capabilities(vendor="OPENAI", parameters=frozenset(), fills_window=True)
LLMENGINE = Capabilities(vendor="LLMENGINE", parameters=frozenset(), default_max_tokens=100)


def _call(max_tokens: int | None, prompt: str = "Tell me about the sea.") -> GenerationCall:
    return GenerationCall(sampling=Sampling(temperature=0.0, max_tokens=max_tokens), prompt=prompt)


def test_the_requests_own_value_is_sent_unchanged() -> None:
    # Even past the window: the engine or the upstream, which count the prompt's real
    # tokens, refuse it with the numbers.
    assert max_tokens_for(_call(5000), NO_DEFAULT, 4096, 4096) == MaxTokens(5000, 5000)
    assert max_tokens_for(_call(7), LLMENGINE, None, 4096) == MaxTokens(7, 7)


def test_a_vendor_familys_default_comes_first_untrimmed() -> None:
    assert max_tokens_for(_call(None), LLMENGINE, 8192, 4096) == MaxTokens(100, 100)
    # About 1,500 real tokens of a 4,096 window, 6,000 bytes: the default is sent whole
    # (trimming by bytes would leave one token); the engine or upstream checks the fit.
    assert max_tokens_for(_call(None, "word " * 1200), LLMENGINE, 4096, 512) == MaxTokens(100, 100)


def test_without_a_family_default_the_vendor_fills_the_window_and_that_is_reserved() -> None:
    call = _call(None, "x" * 1000)
    room = 4096 - prompt_token_bound(call)
    # Nothing is sent: an OpenAI model's output cap may be below the window.
    assert max_tokens_for(call, NO_DEFAULT, 4096, 512) == MaxTokens(None, room)
    # OpenAI's legacy completions would stop at 16 tokens: they are sent the room.
    assert max_tokens_for(call, LEGACY_COMPLETIONS, 4096, 512) == MaxTokens(room, room)
    assert max_tokens_for(_call(None, "x" * 9000), LEGACY_COMPLETIONS, 4096, 512) == MaxTokens(
        1, 1
    )  # the upstream refuses it


def test_with_no_window_known_the_servers_default_is_reserved_and_nothing_is_sent() -> None:
    assert max_tokens_for(_call(None), NO_DEFAULT, None, 512) == MaxTokens(None, 512)
    # Not even to OpenAI's legacy completions: a number past a small model's window
    # would be a 400, where the upstream's own default answers.
    assert max_tokens_for(_call(None), LEGACY_COMPLETIONS, None, 512) == MaxTokens(None, 512)


def test_anthropics_default_is_capped_at_the_models_output_limit() -> None:
    vendor = AnthropicVendor.__new__(AnthropicVendor)
    plain = Target(deployment_id="d", model_type="CHAT_COMPLETION", model_vendor="ANTHROPIC")
    capped = Target(deployment_id="d", model_type="CHAT_COMPLETION", model_vendor="ANTHROPIC",
                    settings=AnthropicSettings(max_output_tokens=4096))  # fmt: skip
    assert max_tokens_for(_call(None), vendor.capabilities(plain), None, 512) == MaxTokens(10_000, 10_000)
    assert max_tokens_for(_call(None), vendor.capabilities(capped), None, 512) == MaxTokens(4096, 4096)


async def test_the_limits_reserve_the_answers_bound() -> None:
    gate = LimitGate(MemoryLimiter())
    principal = Principal("i", "user", "a", "admin", key_id="k", key_limits=Limits(tpm_limit=1_000_000))
    target = Target(deployment_id="d", model_type="COMPLETION", model_vendor="OPENAI", context_window=4096)
    decided = max_tokens_for(_call(None), NO_DEFAULT, target.context_window, 512)
    call = replace(_call(decided.sent), response_token_bound=decided.bound)
    admission = await gate.admit(principal, target, call, "r")
    assert admission is not None
    assert admission.demand.tokens == prompt_token_bound(call) + 4096 - prompt_token_bound(call)
    await gate.aclose()
