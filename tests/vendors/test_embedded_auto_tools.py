"""tool_choice "auto" on the embedded model, without the engine: the grammar admits a
call or text, and the gateway tells which the model wrote (a malformed call is text)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from modelport.engine.grammar import schema_grammar
from modelport.generation import GenerationCall, GenerationChunk, Sampling
from modelport.vendors.embedded_tools import (
    auto_sampling,
    call_or_text_grammar,
    decided_tool_call,
    forced_function_names,
    offered_function_names,
)

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
NAMES = ["get_weather"]


async def _chunks(*texts: str, finish: str = "stop") -> AsyncIterator[GenerationChunk]:
    for text in texts:
        yield GenerationChunk(text=text)
    yield GenerationChunk(text="", finish_reason=finish, prompt_tokens=9, response_tokens=len(texts))  # type: ignore[arg-type]


async def _decided(*texts: str, finish: str = "stop") -> list[GenerationChunk]:
    return [chunk async for chunk in decided_tool_call(_chunks(*texts, finish=finish), NAMES)]


async def test_an_answer_that_is_a_call_comes_back_as_one_tool_call() -> None:
    [only] = await _decided(' {"name": "get_weather", ', '"arguments": {"city": "Rome"}}')
    assert (only.text, only.finish_reason, only.response_tokens) == ("", "tool_calls", 2)
    [call] = only.tool_calls or []
    assert call["function"]["name"] == "get_weather" and call["id"].startswith("call_")
    assert json.loads(call["function"]["arguments"]) == {"city": "Rome"}


async def test_text_streams_as_it_comes() -> None:
    chunks = await _decided("\n", "It is ", "sunny.")
    assert [chunk.text for chunk in chunks] == ["\n", "It is ", "sunny.", ""]
    assert chunks[-1].finish_reason == "stop" and not any(chunk.tool_calls for chunk in chunks)


async def test_a_malformed_call_comes_back_as_text_never_an_error() -> None:
    for texts, finish in [
        (('{"name": "get_weather", "argu',), "length"),  # cut by max_tokens
        (('{"name": "get_time", "arguments": {}}',), "stop"),  # not one of the tools
        (('{"name": "get_weather", "arguments": "Rome"}',), "stop"),  # arguments not an object
        (("{not json",), "stop"),
    ]:
        chunks = await _decided(*texts, finish=finish)
        assert "".join(chunk.text for chunk in chunks) == "".join(texts)
        assert chunks[-1].finish_reason == finish and not any(chunk.tool_calls for chunk in chunks)


def test_the_grammar_admits_the_call_or_text_that_does_not_open_like_one() -> None:
    call = GenerationCall(
        sampling=Sampling(temperature=0.0, max_tokens=50, stop_sequences=("\n\n",), logprobs=True),
        messages=({"role": "user", "content": "Weather?"},),
        tools=(WEATHER,),
    )
    assert (offered_function_names(call), forced_function_names(call)) == (NAMES, None)
    sampling = auto_sampling(call.sampling, call, NAMES)
    assert sampling.grammar is not None
    rules = dict(line.split(" ::= ", 1) for line in sampling.grammar.splitlines())
    assert rules["root"] == "modelport-call | modelport-text"
    assert rules["modelport-text"] == "[^{\\x00] [^\\x00]*"
    # The call's own rules, unchanged, under its new name.
    forced = schema_grammar(
        {"type": "object", "properties": {"name": {"const": "get_weather"}, "arguments": {"type": "object"}},
         "required": ["name", "arguments"], "additionalProperties": False},
        param="tools",
    )  # fmt: skip
    assert call_or_text_grammar(forced) == sampling.grammar
    assert rules["modelport-call"] == dict(line.split(" ::= ", 1) for line in forced.splitlines())["root"]
    # A text answer keeps the request's stop sequences and logprobs.
    assert (sampling.stop_sequences, sampling.logprobs) == (("\n\n",), True)
    for choice in ("none", "required", {"type": "function", "function": {"name": "get_weather"}}):
        chosen = GenerationCall(sampling=call.sampling, messages=call.messages, tools=(WEATHER,), tool_choice=choice)
        assert offered_function_names(chosen) is None
