"""The GenerationCall-level parameters of the OpenAI-compatible surfaces (tools,
response_format, seed, logit_bias, n): which ones a call asks for, checked together
with the request's own, and dropped where the model says so."""

from __future__ import annotations

from typing import Any

import pytest

from modelport.errors import InvalidRequest
from modelport.generation import GenerationCall, Sampling, join_tool_calls
from modelport.inference.params import call_parameters, check_supported, without_parameters
from modelport.schemas.inference import ChatCompletionRequest
from modelport.vendors.base import Capabilities
from modelport.vendors.embedded import engine_sampling

NARROW = Capabilities(vendor="ANTHROPIC", parameters=frozenset({"top_p", "tools", "tool_choice"}))
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def call(**fields: Any) -> GenerationCall:
    return GenerationCall(sampling=Sampling(temperature=0.0, max_tokens=10), prompt="hi", **fields)


def test_defaults_ask_for_nothing() -> None:
    assert call_parameters(call()) == set()
    assert call_parameters(call(n=1, response_format={"type": "text"})) == set()
    assert call_parameters(call(n=2, seed=0, logit_bias={}, tools=(TOOL,))) == {"n", "seed", "logit_bias", "tools"}


def test_request_and_call_parameters_are_refused_together() -> None:
    request = ChatCompletionRequest.model_validate({"chat_history": [], "prompt": "hi", "top_k": 3})
    with pytest.raises(InvalidRequest, match=r"^response_format, seed, top_k are not supported by vendor ANTHROPIC"):
        check_supported(
            request, NARROW, drop_unsupported=False, call=call(seed=1, response_format={"type": "json_object"})
        )


def test_dropped_call_parameters_are_reset_to_their_defaults() -> None:
    asked = call(tools=(TOOL,), seed=1, n=3, logit_bias={"5": 1.0})
    dropped = check_supported(None, NARROW, drop_unsupported=True, call=asked)
    assert dropped == {"seed", "n", "logit_bias"}
    kept = without_parameters(asked, dropped)
    assert (kept.tools, kept.seed, kept.n, kept.logit_bias) == ((TOOL,), None, 1, None)


def test_streamed_tool_call_deltas_join_by_index() -> None:
    calls: list[dict[str, object]] = []
    join_tool_calls(calls, [{"index": 1, "id": "b", "type": "function", "function": {"name": "g", "arguments": ""}}])
    join_tool_calls(calls, [{"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": "{"}}])
    join_tool_calls(
        calls, [{"index": 0, "function": {"arguments": "}"}}, {"index": 1, "function": {"arguments": "[]"}}]
    )
    assert calls == [
        {"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"index": 1, "id": "b", "type": "function", "function": {"name": "g", "arguments": "[]"}},
    ]


def test_the_embedded_engine_gets_seed_bias_and_grammar_in_its_sampling() -> None:
    sampling = engine_sampling(call(seed=9, logit_bias={"42": -100, "7": 2.5}, response_format={"type": "json_object"}))
    assert (sampling.seed, sampling.logit_bias) == (9, ((42, -100.0), (7, 2.5)))
    assert sampling.grammar is not None and "root ::= object" in sampling.grammar
    with pytest.raises(InvalidRequest, match="not an integer"):
        engine_sampling(call(logit_bias={"hello": 1.0}))
    with pytest.raises(InvalidRequest, match=r"\[-100, 100\]"):
        engine_sampling(call(logit_bias={"1": 101.0}))
