"""Request bodies are checked at the edge (422), with defaults from SPEC.md 3.1."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modelport.schemas.inference import ChatCompletionRequest, CompletionRequest

BASE = '"chat_history": [], "prompt": "hi"'


def parse(extra: str = "") -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate_json("{" + BASE + (", " + extra if extra else "") + "}")


def test_defaults() -> None:
    request = parse()
    assert request.temperature == 0.2
    assert request.stream is False
    assert request.max_tokens is None
    # Only what the caller sent counts as asked for (defaults are not "used").
    assert request.explicit_parameters() == {"chat_history", "prompt"}
    assert "top_k" in parse('"top_k": 3').explicit_parameters()


def test_history_roles_and_content_parts() -> None:
    request = ChatCompletionRequest.model_validate_json(
        '{"prompt": "and now?", "chat_history": ['
        '{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"},'
        '{"role": "user", "content": [{"type": "text", "text": "t"},'
        '{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}'
    )
    assert [message.role for message in request.chat_history] == ["system", "assistant", "user"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"prompt": "hi"}', "chat_history"),
        ('{"chat_history": []}', "prompt"),
        ("{" + BASE + ', "temperature": 2.5}', "temperature"),
        ("{" + BASE + ', "temperature": -0.1}', "temperature"),
        ("{" + BASE + ', "temperature": "0.5"}', "temperature"),
        ("{" + BASE + ', "stop_sequences": ["a", "b", "c", "d", "e"]}', "stop_sequences"),
        ("{" + BASE + ', "stop_sequences": [""]}', "stop_sequences"),
        ("{" + BASE + ', "max_tokens": 0}', "max_tokens"),
        ("{" + BASE + ', "top_p": 0}', "top_p"),
        ("{" + BASE + ', "top_p": 1.5}', "top_p"),
        ("{" + BASE + ', "top_k": 0}', "top_k"),
        ("{" + BASE + ', "top_k": 2.5}', "top_k"),
        ("{" + BASE + ', "frequency_penalty": 3}', "frequency_penalty"),
        ("{" + BASE + ', "presence_penalty": -2.5}', "presence_penalty"),
        ("{" + BASE + ', "top_logprobs": 21, "logprobs": true}', "top_logprobs"),
        ("{" + BASE + ', "reasoning_effort": "extreme"}', "reasoning_effort"),
        ("{" + BASE + ', "temprature": 0.5}', "temprature"),
        ('{"prompt": "hi", "chat_history": [{"role": "robot", "content": "x"}]}', "chat_history"),
        ('{"prompt": "hi", "chat_history": [{"role": "user"}]}', "chat_history"),
    ],
)
def test_schema_violations_name_the_field(body: str, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest.model_validate_json(body)
    assert any(field in [str(part) for part in error["loc"]] for error in caught.value.errors())


def test_top_logprobs_without_logprobs_is_refused() -> None:
    with pytest.raises(ValidationError, match="top_logprobs requires logprobs"):
        parse('"top_logprobs": 2')
    with pytest.raises(ValidationError, match="top_logprobs requires logprobs"):
        parse('"top_logprobs": 2, "logprobs": false')
    assert parse('"top_logprobs": 2, "logprobs": true').top_logprobs == 2


def test_malformed_json_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate_json('{"prompt": "hi", "chat_history": [')


def test_whole_float_top_k_is_accepted() -> None:
    # The SDK types top_k as a float, so 40.0 must work.
    assert parse('"top_k": 40.0').top_k == 40.0


def test_completion_requests_have_no_history() -> None:
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate_json('{"prompt": "hi", "chat_history": []}')
    assert CompletionRequest.model_validate_json('{"prompt": "hi"}').prompt == "hi"
