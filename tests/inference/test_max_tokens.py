"""max_tokens is decided once, by the service, before admission: the vendor is sent an
int, and the limits reserve exactly what it is sent (SPEC 3.1's defaults)."""

from __future__ import annotations

from modelport.generation import GenerationCall, Sampling
from modelport.inference.admission import LimitGate
from modelport.inference.calls import max_tokens_for
from modelport.limits.memory import MemoryLimiter
from modelport.limits.pricing import prompt_token_bound
from modelport.principal import KeyLimits, Principal
from modelport.vendors.anthropic import AnthropicVendor
from modelport.vendors.base import Capabilities, Target
from modelport.vendors.settings import AnthropicSettings

NO_DEFAULT = Capabilities(vendor="OPENAI", parameters=frozenset())
LLMENGINE = Capabilities(vendor="LLMENGINE", parameters=frozenset(), default_max_tokens=100)


def _call(max_tokens: int | None, prompt: str = "Tell me about the sea.") -> GenerationCall:
    return GenerationCall(sampling=Sampling(temperature=0.0, max_tokens=max_tokens), prompt=prompt)


def test_the_requests_own_value_is_sent_unchanged() -> None:
    # Even past the window: the engine or the upstream, which count the prompt's real
    # tokens, refuse it with the numbers.
    assert max_tokens_for(_call(5000), NO_DEFAULT, 4096, 4096) == 5000
    assert max_tokens_for(_call(7), LLMENGINE, None, 4096) == 7


def test_a_vendor_familys_default_comes_first() -> None:
    assert max_tokens_for(_call(None), LLMENGINE, 8192, 4096) == 100


def test_without_a_family_default_the_window_left_by_the_prompt_is_sent() -> None:
    call = _call(None, "x" * 1000)
    assert max_tokens_for(call, NO_DEFAULT, 4096, 512) == 4096 - prompt_token_bound(call)
    assert max_tokens_for(_call(None, "x" * 9000), NO_DEFAULT, 4096, 512) == 1  # the upstream says it is too long


def test_with_no_window_known_the_servers_default_is_sent() -> None:
    assert max_tokens_for(_call(None), NO_DEFAULT, None, 512) == 512


def test_anthropics_default_is_capped_at_the_models_output_limit() -> None:
    vendor = AnthropicVendor.__new__(AnthropicVendor)
    plain = Target(deployment_id="d", model_type="CHAT_COMPLETION", model_vendor="ANTHROPIC")
    capped = Target(deployment_id="d", model_type="CHAT_COMPLETION", model_vendor="ANTHROPIC",
                    settings=AnthropicSettings(max_output_tokens=4096))  # fmt: skip
    assert max_tokens_for(_call(None), vendor.capabilities(plain), None, 512) == 10_000
    assert max_tokens_for(_call(None), vendor.capabilities(capped), None, 512) == 4096


async def test_the_limits_reserve_what_the_vendor_is_sent() -> None:
    gate = LimitGate(MemoryLimiter())
    principal = Principal("i", "user", "a", "admin", key_id="k", key_limits=KeyLimits(tpm_limit=1_000_000))
    target = Target(deployment_id="d", model_type="COMPLETION", model_vendor="OPENAI", context_window=4096)
    call = _call(max_tokens_for(_call(None), NO_DEFAULT, target.context_window, 512))
    admission = await gate.admit(principal, target, call, "r")
    assert admission is not None
    assert admission.demand.tokens == prompt_token_bound(call) + call.sampling.max_tokens  # type: ignore[operator]
    await gate.aclose()
