"""Hints are hints, and a max_tokens the window cannot hold is clamped: what the call is
built with, decided once (`calls.text_call`, `max_tokens_for`), and what the
x-modelport-dropped header is told, from each of its sources."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from modelport.compat import openai as translate
from modelport.errors import InvalidRequest
from modelport.generation import GenerationCall, Sampling
from modelport.inference.admission import LimitGate
from modelport.inference.calls import V4_WINDOW, MaxTokens, max_tokens_for, text_call
from modelport.inference.params import CallBounds, check_supported, effective_sampling
from modelport.inference.service import CHAT_WINDOW, COMPATIBLE_WINDOW, TextRequest
from modelport.limits.memory import MemoryLimiter
from modelport.limits.pricing import prompt_token_bound
from modelport.principal import Limits, Principal
from modelport.schemas import openai as wire
from modelport.vendors import embedded, openai
from modelport.vendors.base import Capabilities, Target
from modelport.vendors.settings import CommonSettings
from tests.inference.test_service import HELLO, Script, World, world  # noqa: F401  (a fixture)

HINTS = {
    "reasoning_effort": "xhigh",
    "verbosity": "low",
    "prompt_cache_key": "conversation-7",
    "safety_identifier": "user-hash-1",
    "service_tier": "flex",
    "store": True,
    "metadata": {"ticket": "42"},
    "parallel_tool_calls": False,
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
}
TARGET = Target(deployment_id="d", model_type="CHAT_COMPLETION", model_vendor="X", context_window=8192)


def _built(body: dict[str, Any], capabilities: Capabilities, target: Target = TARGET) -> tuple[GenerationCall, ...]:
    """The call and the names the service would build for `/v1/chat/completions` `body`."""
    text = translate.chat_request(wire.ChatCompletionBody.model_validate({"model": "m", **body}))
    request = text.request
    dropped = check_supported(request, capabilities, drop_unsupported=bool(target.settings.drop_unsupported_params))
    call, changes = text_call(
        request,
        effective_sampling(request, capabilities, dropped=dropped),
        model_type="CHAT_COMPLETION",
        capabilities=capabilities,
        target=target,
        dropped=dropped,
        messages=text.messages,
        options=text.options,
        bounds=CallBounds(),
        default_max_tokens=4096,
        window=text.window,
    )
    return call, (*text.dropped, *changes)  # type: ignore[return-value]


MESSAGES = [{"role": "user", "content": "Think hard: what is 6 x 7?"}]


def test_a_vendor_that_takes_the_hints_gets_them_all_and_nothing_is_named() -> None:
    call, names = _built({"messages": MESSAGES, **HINTS}, openai.OPENAI_REASONING)
    assert names == ()
    assert call.sampling.reasoning_effort == "xhigh"  # where every adapter reads it
    assert call.hints == {name: value for name, value in HINTS.items() if name not in {"reasoning_effort", "tools"}}
    # What means nothing without another field is named, not sent (OpenAI would refuse it).
    alone = {"messages": MESSAGES, "parallel_tool_calls": True, "metadata": {"a": "b"}}
    call, names = _built(alone, openai.OPENAI_REASONING)
    assert (names, call.hints) == (("parallel_tool_calls", "metadata"), None)


def test_a_vendor_that_cannot_act_on_a_hint_answers_without_it_and_names_it() -> None:
    call, names = _built({"messages": MESSAGES, **HINTS}, embedded.CAPABILITIES)
    # The embedded engine makes one call per answer: parallel_tool_calls is honoured.
    assert names == (
        "metadata",
        "prompt_cache_key",
        "reasoning_effort",
        "safety_identifier",
        "service_tier",
        "store",
        "verbosity",
    )
    assert call.sampling.reasoning_effort is None and call.hints == {"parallel_tool_calls": False}
    # A non-reasoning OpenAI model: the effort and the verbosity are left out, the rest passed.
    call, names = _built({"messages": MESSAGES, **HINTS}, openai.OPENAI_CHAT)
    assert names == ("reasoning_effort", "verbosity")
    assert call.sampling.reasoning_effort is None and "prompt_cache_key" in (call.hints or {})


@pytest.mark.parametrize("effort", ["none", "minimal", "low", "medium", "high", "xhigh"])
def test_every_openai_reasoning_effort_is_accepted(effort: str) -> None:
    call, names = _built({"messages": MESSAGES, "reasoning_effort": effort}, openai.OPENAI_REASONING)
    assert (call.sampling.reasoning_effort, names) == (effort, ())


def test_what_changes_the_sampling_stays_strict() -> None:
    with pytest.raises(InvalidRequest) as refused:
        _built({"messages": MESSAGES, "top_p": 0.5, "reasoning_effort": "high"}, openai.OPENAI_REASONING)
    assert refused.value.body()["unsupported_parameters"] == ["top_p"]
    with pytest.raises(InvalidRequest, match="logit_bias"):
        _built({"messages": MESSAGES, "logit_bias": {"1": 2}}, openai.OPENAI_REASONING)
    # Dropped by the deployment's own setting: named too, never silent.
    dropping = replace(TARGET, settings=CommonSettings(drop_unsupported_params=True))
    call, names = _built({"messages": MESSAGES, "top_p": 0.5, "seed": 3}, openai.OPENAI_REASONING, dropping)
    assert names == ("top_p",) and call.sampling.top_p is None and call.seed == 3


def test_the_surface_names_what_no_vendor_is_sent() -> None:
    body = {
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True, "include_obfuscation": False},
    }
    _call, names = _built(body, openai.OPENAI_REASONING)
    assert names == ("stream_options.include_obfuscation",)
    legacy = translate.text_request(
        wire.TextCompletionBody.model_validate({"model": "m", "prompt": "Hi", "store": True})
    )
    assert legacy.dropped == ("store",)


def _call(max_tokens: int | None, prompt: str = "Tell me about the sea.") -> GenerationCall:
    return GenerationCall(sampling=Sampling(temperature=0.0, max_tokens=max_tokens), prompt=prompt)


NEEDS_A_NUMBER = Capabilities(vendor="LLMENGINE", parameters=frozenset(), default_max_tokens=100)


def test_chat_on_the_compatible_surfaces_fills_the_window_where_the_v4_routes_keep_100() -> None:
    room = 8192 - prompt_token_bound(_call(None))
    caps = embedded.CAPABILITIES
    # The engine fills what the window leaves with the prompt's real tokens: nothing is sent.
    assert max_tokens_for(_call(None), caps, 8192, 4096, window=CHAT_WINDOW) == MaxTokens(None, room)
    assert max_tokens_for(_call(None), caps, 8192, 4096, window=V4_WINDOW) == MaxTokens(100, 100)
    # Legacy completions and Anthropic's surface keep the family default (OpenAI's own is 16).
    assert max_tokens_for(_call(None), caps, 8192, 4096, window=COMPATIBLE_WINDOW) == MaxTokens(100, 100)
    # A vendor whose default is its own requirement keeps it; no window known: the default.
    assert max_tokens_for(_call(None), NEEDS_A_NUMBER, 8192, 4096, window=CHAT_WINDOW) == MaxTokens(100, 100)
    assert max_tokens_for(_call(None), caps, None, 4096, window=CHAT_WINDOW) == MaxTokens(100, 100)


def test_a_max_tokens_no_prompt_fits_with_is_clamped_and_said_so() -> None:
    room = 8192 - prompt_token_bound(_call(None))
    clamped = max_tokens_for(_call(32_000), embedded.CAPABILITIES, 8192, 4096, window=COMPATIBLE_WINDOW)
    assert clamped == MaxTokens(None, room, "max_tokens=clamped")  # the engine fills the real room
    told = max_tokens_for(_call(32_000), NEEDS_A_NUMBER, 8192, 4096, window=COMPATIBLE_WINDOW)
    assert told == MaxTokens(room, room, f"max_tokens=clamped:{room}")
    # One that may fit is the vendor's to check with the real count (a 400 naming both).
    assert max_tokens_for(_call(8000), NEEDS_A_NUMBER, 8192, 4096, window=COMPATIBLE_WINDOW) == MaxTokens(8000, 8000)
    # The v4 routes refuse it, as the platform does (SPEC 3.1), and an unknown window clamps nothing.
    assert max_tokens_for(_call(32_000), NEEDS_A_NUMBER, 8192, 4096, window=V4_WINDOW) == MaxTokens(32_000, 32_000)
    assert max_tokens_for(_call(32_000), NEEDS_A_NUMBER, None, 4096, window=COMPATIBLE_WINDOW).clamped is None


async def test_the_limits_reserve_the_clamped_bound() -> None:
    gate = LimitGate(MemoryLimiter())
    principal = Principal("i", "user", "a", "admin", key_id="k", key_limits=Limits(tpm_limit=1_000_000))
    decided = max_tokens_for(_call(32_000), NEEDS_A_NUMBER, 8192, 4096, window=COMPATIBLE_WINDOW)
    call = replace(_call(decided.sent), response_token_bound=decided.bound)
    admission = await gate.admit(principal, TARGET, call, "r")
    assert admission is not None
    # The prompt at its bound and the clamped answer: the window, not 32,000 more.
    assert admission.demand.tokens == prompt_token_bound(call) + decided.bound == 8192
    await gate.aclose()


async def test_the_service_returns_every_name_once_on_whole_and_streamed_answers(world: World) -> None:  # noqa: F811
    world.vendor.scripts["hello"] = Script(chunks=HELLO)
    body = wire.ChatCompletionBody.model_validate(
        {
            "model": "hello",
            "messages": [{"role": "user", "content": "hi"}],
            "verbosity": "low",
            "top_k": 3,
            "stream_options": {"include_obfuscation": True},
        }
    )
    text = translate.chat_request(body)
    deployment = world.deployments["hello"]
    with pytest.raises(InvalidRequest, match="top_k"):  # strict: this vendor has no top_k
        await world.service.generate_at(world.principal, deployment, text)
    text = translate.chat_request(body.model_copy(update={"top_k": None}))
    whole = await world.service.generate_at(world.principal, deployment, text)
    assert whole.dropped == ("stream_options.include_obfuscation", "verbosity")
    streamed = await world.service.generate_stream_at(world.principal, deployment, text)
    assert streamed.dropped == whole.dropped
    assert "".join([piece.text async for piece in streamed]) == whole.text
    by_model = await world.service.generate_stream(world.principal, "hello", text)
    assert by_model.dropped == whole.dropped
    await by_model.aclose()
    plain = await world.service.generate_at(world.principal, deployment, TextRequest(text.request, text.messages))
    assert plain.dropped == ()
