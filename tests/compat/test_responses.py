"""The Responses API's translation onto one TextRequest (`compat/responses.py`): the
conversation as chat messages, function tools and formats as call options, and every
hint no deployment acts on named in `TextRequest.dropped` instead of being sent."""

from __future__ import annotations

from typing import Any

import pytest

from modelport.compat import responses as translate
from modelport.errors import InvalidRequest
from modelport.inference.service import TextRequest
from modelport.schemas.responses import ResponsesBody


def _request(**fields: Any) -> TextRequest:
    body = ResponsesBody.model_validate({"model": "m", **fields})
    return translate.response_request(body, translate.input_items(body))


def test_codex_style_hints_and_built_in_tools_are_named_as_dropped() -> None:
    text = _request(
        input=[
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
            {"role": "developer", "content": [{"type": "input_text", "text": "Be careful."}]},
            {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        ],
        tools=[
            {"type": "function", "name": "shell", "parameters": {"type": "object"}, "strict": False},
            {"type": "web_search"},
            {"type": "namespace", "name": "mcp__files", "tools": [{"type": "function", "name": "read"}]},
            {"type": "web_search"},
        ],
        tool_choice="auto",
        parallel_tool_calls=False,
        reasoning={"summary": "auto", "effort": "medium"},
        include=["reasoning.encrypted_content"],
        prompt_cache_key="abc",
        store=False,
        stream=True,
        client_metadata={"x-codex-turn": "1"},
        text={"verbosity": "low"},
        safety_identifier="u1",
        truncation="auto",
        service_tier="auto",
    )
    assert set(text.dropped) == {
        "input.reasoning",
        "tools.web_search",
        "tools.namespace",
        "reasoning",
        "include",
        "prompt_cache_key",
        "client_metadata",
        "parallel_tool_calls",
        "text.verbosity",
        "safety_identifier",
        "truncation",
        "service_tier",
    }
    assert len(text.dropped) == len(set(text.dropped))
    assert text.messages == ({"role": "system", "content": "Be careful."}, {"role": "user", "content": "Hi"})
    assert text.options == {
        "tools": (
            {"type": "function", "function": {"name": "shell", "parameters": {"type": "object"}, "strict": False}},
        ),
        "tool_choice": "auto",
    }


def test_nothing_is_dropped_from_a_plain_request() -> None:
    text = _request(input="Hi", instructions="Be brief.", max_output_tokens=5, temperature=0.5, top_p=0.9)
    assert text.dropped == ()
    assert text.messages == ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"})
    assert (text.request.max_tokens, text.request.temperature, text.request.top_p) == (5, 0.5, 0.9)
    assert text.request.prompt == "Hi"


def test_without_max_output_tokens_the_call_sets_none() -> None:
    assert _request(input="Hi").request.max_tokens is None


def test_text_formats_become_response_formats() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    text = _request(
        input="Hi", text={"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}}
    )
    assert text.options == {
        "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}}
    }
    assert _request(input="Hi", text={"format": {"type": "json_object"}}).options == {
        "response_format": {"type": "json_object"}
    }
    assert _request(input="Hi", text={"format": {"type": "text"}}).options == {}


def test_a_turn_with_text_and_calls_is_one_assistant_message_and_images_are_parts() -> None:
    text = _request(
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "Look: "},
                                         {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Calling."}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{\"x\":1}"},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"}]},
        ]
    )  # fmt: skip
    assert text.messages == (
        {"role": "user", "content": [{"type": "text", "text": "Look: "},
                                     {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}]},
        {"role": "assistant", "content": "Calling.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{\"x\":1}"}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": "Hi", "top_p": 0.0}, "top_p"),
        ({"input": []}, "input"),
        ({"input": "Hi", "tools": [{"type": "web_search"}], "tool_choice": "required"}, "tool_choice"),
        ({"input": "Hi", "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]}, "input"),
    ],
)
def test_requests_no_call_can_carry_are_refused_naming_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        _request(**fields)
    assert refused.value.body()["param"] == param
