"""Function calling and structured output through the OpenAI, Anthropic and Gemini
adapters, against answers written in each vendor's documented wire format: what the
adapter sends (tools, tool_choice, tool turns, response_format in the vendor's terms)
and how the vendor's tool calls come back (OpenAI's shape, whole or as deltas)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from modelport.catalogue.deployment_settings import with_parameters
from modelport.errors import InvalidRequest
from modelport.generation import GenerationCall, GenerationChunk, Sampling, join_tool_calls
from modelport.inference.params import check_supported
from modelport.vendors import anthropic, embedded, google, llmengine_v1, openai
from modelport.vendors.anthropic import AnthropicVendor
from modelport.vendors.base import Capabilities, Target
from modelport.vendors.client import UpstreamClient
from modelport.vendors.google import GoogleVendor
from modelport.vendors.openai import OPENAI, OpenAICompatible
from modelport.vendors.upstream import RetryPolicy
from tests.vendors.recorded import Recorded

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "unit": {"type": ["string", "null"]}},
            "required": ["location"],
            "additionalProperties": False,
        },
    },
}
QUESTION = {"role": "user", "content": "What is the weather in Boston?"}
# The conversation sent back once the tool has run: the assistant's call, the tool's answer.
CALLED = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {
            "id": "call_abc123",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location":"Boston, MA"}'},
        }
    ],
}
ANSWERED = {"role": "tool", "tool_call_id": "call_abc123", "content": '{"temperature": 22, "sky": "sunny"}'}
SAMPLING = Sampling(temperature=0.0, max_tokens=100)


def chat(*messages: dict[str, Any], **extra: Any) -> GenerationCall:
    return GenerationCall(sampling=SAMPLING, messages=messages, **extra)


@pytest.fixture
def transport() -> Recorded:
    return Recorded()


@pytest.fixture
def policy() -> RetryPolicy:
    return RetryPolicy(attempts=1)


def target(vendor: str, model: str) -> Target:
    bare = Target(deployment_id="dep", model_type="CHAT_COMPLETION", model_vendor=vendor)
    return with_parameters(bare, {"model": model})  # the typed settings adapters read


async def streamed(chunks: AsyncIterator[GenerationChunk]) -> list[GenerationChunk]:
    return [chunk async for chunk in chunks]


def joined(chunks: list[GenerationChunk]) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    for chunk in chunks:
        join_tool_calls(calls, chunk.tool_calls or [])
    return calls


# --- OpenAI ------------------------------------------------------------------------------


@pytest.fixture
def openai_vendor(transport: Recorded, policy: RetryPolicy) -> Iterator[OpenAICompatible]:
    yield OpenAICompatible(UpstreamClient(transport), OPENAI, policy)


async def test_openai_sends_tools_and_returns_the_calls_whole(
    openai_vendor: OpenAICompatible, transport: Recorded
) -> None:
    transport.answers["gpt-4o-mini"] = (200, "documented/openai/chat_tool_calls.json")
    call = chat(QUESTION, tools=(WEATHER,), tool_choice="required", seed=42, logit_bias={"1734": -100.0})

    result = await openai_vendor.complete(target("OPENAI", "gpt-4o-mini"), call)

    sent = transport.last_body()
    assert (sent["tools"], sent["tool_choice"], sent["seed"], sent["logit_bias"]) == (
        [WEATHER],
        "required",
        42,
        {"1734": -100.0},
    )
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls == [
        {
            "index": 0,
            "id": "call_abc123",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location":"Boston, MA"}'},
        },
        {
            "index": 1,
            "id": "call_def456",
            "type": "function",
            "function": {"name": "get_time", "arguments": '{"timezone":"America/New_York"}'},
        },
    ]
    assert (result.prompt_tokens, result.response_tokens) == (82, 41)


async def test_openai_streams_tool_call_deltas_that_join_to_the_whole_calls(
    openai_vendor: OpenAICompatible, transport: Recorded
) -> None:
    transport.answers["gpt-4o-mini"] = (200, "documented/openai/chat_tool_calls.sse")

    chunks = await streamed(
        await openai_vendor.stream(target("OPENAI", "gpt-4o-mini"), chat(QUESTION, tools=(WEATHER,)))
    )

    deltas = [delta for chunk in chunks for delta in chunk.tool_calls or []]
    # The first delta of a call names it; the others only carry argument text.
    assert deltas[0] == {
        "index": 0,
        "id": "call_abc123",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert deltas[1] == {"index": 0, "function": {"arguments": '{"loc'}}
    calls = joined(chunks)
    assert [json.loads(call["function"]["arguments"]) for call in calls] == [
        {"location": "Boston, MA"},
        {"timezone": "America/New_York"},
    ]
    assert [call["id"] for call in calls] == ["call_abc123", "call_def456"]
    assert chunks[-1].finish_reason == "tool_calls"
    assert (chunks[-1].prompt_tokens, chunks[-1].response_tokens) == (82, 41)


async def test_openai_sends_the_tool_result_turn_back_as_it_came(
    openai_vendor: OpenAICompatible, transport: Recorded
) -> None:
    transport.answers["gpt-4o-mini"] = (200, "documented/openai/chat_after_tool.json")

    result = await openai_vendor.complete(
        target("OPENAI", "gpt-4o-mini"), chat(QUESTION, CALLED, ANSWERED, tools=(WEATHER,))
    )

    assert transport.last_body()["messages"] == [QUESTION, CALLED, ANSWERED]
    assert (result.text, result.finish_reason, result.tool_calls) == (
        "It is 22 degrees and sunny in Boston.",
        "stop",
        None,
    )


async def test_openai_passes_response_format_on(openai_vendor: OpenAICompatible, transport: Recorded) -> None:
    transport.answers["gpt-4o-mini"] = (200, "documented/openai/chat_after_tool.json")
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
    }

    await openai_vendor.complete(target("OPENAI", "gpt-4o-mini"), chat(QUESTION, response_format=response_format))

    assert transport.last_body()["response_format"] == response_format


# --- Anthropic ---------------------------------------------------------------------------


@pytest.fixture
def anthropic_vendor(transport: Recorded, policy: RetryPolicy) -> Iterator[AnthropicVendor]:
    yield AnthropicVendor(UpstreamClient(transport), policy)


async def test_anthropic_gets_tools_with_input_schema_and_tool_use_comes_back_as_tool_calls(
    anthropic_vendor: AnthropicVendor, transport: Recorded
) -> None:
    transport.answers["claude-3-5-haiku"] = (200, "documented/anthropic/message_tool_use.json")

    result = await anthropic_vendor.complete(
        target("ANTHROPIC", "claude-3-5-haiku"), chat(QUESTION, tools=(WEATHER,), tool_choice="required")
    )

    sent = transport.last_body()
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "The current weather in a city",
            "input_schema": WEATHER["function"]["parameters"],  # type: ignore[index]
        }
    ]
    assert sent["tool_choice"] == {"type": "any"}
    assert result.text == "I'll check the weather in Boston."
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls == [
        {
            "index": 0,
            "id": "toolu_01A09q90qw90lq917835lq9",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location": "Boston, MA"}'},
        }
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
    ],
)
async def test_anthropic_tool_choice_mapping(
    anthropic_vendor: AnthropicVendor, transport: Recorded, choice: Any, expected: dict[str, str]
) -> None:
    transport.answers["claude-3-5-haiku"] = (200, "documented/anthropic/message_tool_use.json")
    await anthropic_vendor.complete(
        target("ANTHROPIC", "claude-3-5-haiku"), chat(QUESTION, tools=(WEATHER,), tool_choice=choice)
    )
    assert transport.last_body()["tool_choice"] == expected


async def test_anthropic_streams_input_json_deltas_as_argument_deltas(
    anthropic_vendor: AnthropicVendor, transport: Recorded
) -> None:
    transport.answers["claude-3-5-haiku"] = (200, "documented/anthropic/stream_tool_use.sse")

    chunks = await streamed(
        await anthropic_vendor.stream(target("ANTHROPIC", "claude-3-5-haiku"), chat(QUESTION, tools=(WEATHER,)))
    )

    assert "".join(chunk.text for chunk in chunks) == "Okay, let's check the weather."
    deltas = [delta for chunk in chunks for delta in chunk.tool_calls or []]
    # The tool_use block is content block 1 but the first tool call: index 0.
    assert deltas[0] == {
        "index": 0,
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert all(delta["index"] == 0 for delta in deltas)
    [whole] = joined(chunks)
    assert json.loads(whole["function"]["arguments"]) == {"location": "Boston, MA"}
    assert (chunks[-1].finish_reason, chunks[-1].prompt_tokens, chunks[-1].response_tokens) == ("tool_calls", 472, 89)


async def test_anthropic_gets_the_tool_turns_as_tool_use_and_tool_result_blocks(
    anthropic_vendor: AnthropicVendor, transport: Recorded
) -> None:
    transport.answers["claude-3-5-haiku"] = (200, "documented/anthropic/message_after_tool.json")
    system = {"role": "system", "content": "Be brief."}
    called = {**CALLED, "content": "Let me check."}

    result = await anthropic_vendor.complete(
        target("ANTHROPIC", "claude-3-5-haiku"), chat(system, QUESTION, called, ANSWERED, tools=(WEATHER,))
    )

    sent = transport.last_body()
    assert sent["system"] == "Be brief."
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "What is the weather in Boston?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "call_abc123",
                    "name": "get_weather",
                    "input": {"location": "Boston, MA"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_abc123", "content": '{"temperature": 22, "sky": "sunny"}'}
            ],
        },
    ]
    assert (result.text, result.finish_reason) == ("It is 22 degrees and sunny in Boston.", "stop")


# --- Gemini ------------------------------------------------------------------------------


@pytest.fixture
def google_vendor(transport: Recorded, policy: RetryPolicy) -> Iterator[GoogleVendor]:
    yield GoogleVendor(UpstreamClient(transport), policy)


GEMINI_WEATHER_PARAMETERS = {
    # additionalProperties left out, a nullable type instead of a list of types
    "type": "object",
    "properties": {"location": {"type": "string"}, "unit": {"type": "string", "nullable": True}},
    "required": ["location"],
}


async def test_gemini_gets_function_declarations_and_function_calls_come_back_as_tool_calls(
    google_vendor: GoogleVendor, transport: Recorded
) -> None:
    transport.answers["gemini-2.0-flash"] = (200, "documented/google/generate_function_call.json")
    choice = {"type": "function", "function": {"name": "get_weather"}}

    result = await google_vendor.complete(
        target("GOOGLE", "gemini-2.0-flash"), chat(QUESTION, tools=(WEATHER,), tool_choice=choice, seed=3)
    )

    sent = transport.last_body()
    assert sent["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "The current weather in a city",
                    "parameters": GEMINI_WEATHER_PARAMETERS,
                }
            ]
        }
    ]
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
    assert sent["generationConfig"]["seed"] == 3
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls is not None
    assert [call["index"] for call in result.tool_calls] == [0, 1]
    assert [call["function"]["name"] for call in result.tool_calls] == ["get_weather", "get_time"]
    assert json.loads(result.tool_calls[0]["function"]["arguments"]) == {"location": "Boston, MA"}
    # Gemini gives no ids: modelport makes distinct ones up.
    ids = [call["id"] for call in result.tool_calls]
    assert all(call_id.startswith("call_") for call_id in ids) and len(set(ids)) == 2


async def test_gemini_streams_a_function_call_whole(google_vendor: GoogleVendor, transport: Recorded) -> None:
    transport.answers["gemini-2.0-flash"] = (200, "documented/google/stream_function_call.sse")

    chunks = await streamed(
        await google_vendor.stream(target("GOOGLE", "gemini-2.0-flash"), chat(QUESTION, tools=(WEATHER,)))
    )

    assert "".join(chunk.text for chunk in chunks) == "Let me look that up."
    [whole] = joined(chunks)
    assert whole["function"]["name"] == "get_weather" and whole["id"].startswith("call_")
    assert json.loads(whole["function"]["arguments"]) == {"location": "Boston, MA"}
    assert (chunks[-1].finish_reason, chunks[-1].prompt_tokens, chunks[-1].response_tokens) == ("tool_calls", 50, 14)


async def test_gemini_gets_the_tool_turns_as_function_call_and_function_response(
    google_vendor: GoogleVendor, transport: Recorded
) -> None:
    transport.answers["gemini-2.0-flash"] = (200, "documented/google/generate_after_tool.json")

    result = await google_vendor.complete(
        target("GOOGLE", "gemini-2.0-flash"), chat(QUESTION, CALLED, ANSWERED, tools=(WEATHER,))
    )

    assert transport.last_body()["contents"] == [
        {"role": "user", "parts": [{"text": "What is the weather in Boston?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"location": "Boston, MA"}}}]},
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"temperature": 22, "sky": "sunny"}}}],
        },
    ]
    assert (result.text, result.finish_reason) == ("It is 22 degrees and sunny in Boston.", "stop")


async def test_gemini_json_schema_becomes_response_mime_type_and_schema(
    google_vendor: GoogleVendor, transport: Recorded
) -> None:
    transport.answers["gemini-2.0-flash"] = (200, "documented/google/generate_json.json")
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}

    result = await google_vendor.complete(
        target("GOOGLE", "gemini-2.0-flash"), chat(QUESTION, response_format=response_format)
    )

    config = transport.last_body()["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"] == {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    assert json.loads(result.text) == {"name": "Ada", "age": 36}


async def test_gemini_refuses_a_schema_with_ref(google_vendor: GoogleVendor) -> None:
    schema = {"$ref": "#/$defs/person", "$defs": {"person": {"type": "object"}}}
    with pytest.raises(InvalidRequest, match=r"\$ref"):
        await google_vendor.complete(
            target("GOOGLE", "gemini-2.0-flash"),
            chat(QUESTION, response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}),
        )


# --- what each adapter refuses (400 naming the parameter and the vendor) -----------------


@pytest.mark.parametrize(
    ("capabilities", "extra", "refused"),
    [
        (openai.OPENAI_CHAT, {"n": 2}, "n"),
        (openai.OPENAI_REASONING, {"logit_bias": {"1": 1.0}}, "logit_bias"),
        (openai.OPENAI_COMPLETIONS, {"tools": (WEATHER,)}, "tools"),
        (anthropic.CAPABILITIES, {"response_format": {"type": "json_object"}}, "response_format"),
        (anthropic.CAPABILITIES, {"seed": 1}, "seed"),
        (google.CAPABILITIES, {"logit_bias": {"1": 1.0}}, "logit_bias"),
        (llmengine_v1.CAPABILITIES, {"tools": (WEATHER,)}, "tools"),
        (llmengine_v1.CAPABILITIES, {"response_format": {"type": "json_object"}}, "response_format"),
        (embedded.CAPABILITIES, {"n": 3}, "n"),
    ],
)
def test_parameters_a_vendor_cannot_honour_are_refused(
    capabilities: Capabilities, extra: dict[str, Any], refused: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        check_supported(None, capabilities, drop_unsupported=False, call=chat(QUESTION, **extra))
    assert raised.value.detail.startswith(f"{refused} ")
    assert f"vendor {capabilities.vendor}" in raised.value.detail


@pytest.mark.parametrize(
    ("capabilities", "extra"),
    [
        (openai.OPENAI_CHAT, {"tools": (WEATHER,), "tool_choice": "auto", "seed": 1, "logit_bias": {"1": 2.0}}),
        (anthropic.CAPABILITIES, {"tools": (WEATHER,), "tool_choice": "none"}),
        (google.CAPABILITIES, {"tools": (WEATHER,), "response_format": {"type": "json_object"}, "seed": 1}),
        (embedded.CAPABILITIES, {"response_format": {"type": "json_object"}, "seed": 1, "logit_bias": {"1": 2.0}}),
        (embedded.CAPABILITIES, {"tools": (WEATHER,), "tool_choice": "required"}),
        # The defaults ask for nothing: every vendor takes them.
        (llmengine_v1.CAPABILITIES, {"n": 1, "response_format": {"type": "text"}}),
    ],
)
def test_parameters_a_vendor_honours_pass(capabilities: Capabilities, extra: dict[str, Any]) -> None:
    assert check_supported(None, capabilities, drop_unsupported=False, call=chat(QUESTION, **extra)) == set()
