"""The v4 stream's text events, made from a template (`compat/sgp.py`): byte for byte
what the event's model writes, whatever the prompt and the text hold; and every event
that carries more than text (the last one, logprobs) still made by the model."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from modelport.api.sse import data_event
from modelport.compat import sgp
from modelport.generation import TokenLogprob
from modelport.inference.metering import Generated
from modelport.schemas.inference import ChatCompletionRequest, CompletionRequest, CompletionResponse, EncodedEvent

TEXTS = ["Hello", "", " ", 'say "hi"', "back\\slash", "line\nbreak\ttab\r", "\x00\x01\x1f\x7f", "é ü 中文 🎉",
         "\u2028\u2029", "</script>", "a" * 5000]  # fmt: skip


async def _pieces(*pieces: Generated) -> AsyncGenerator[Generated, None]:
    for piece in pieces:
        yield piece


@pytest.mark.parametrize("prompt", ["Say hello.", 'quote " and \\ and \n', "🎉" * 3, ""])
async def test_a_text_event_is_the_bytes_the_model_writes(prompt: str) -> None:
    request = ChatCompletionRequest(chat_history=[], prompt=prompt)
    pieces = [Generated(text=text) for text in TEXTS]
    events = [event async for event in sgp.completion_events(request, _pieces(*pieces))]
    assert all(isinstance(event, EncodedEvent) for event in events)
    expected = [data_event(CompletionResponse(completions=[[prompt, [text]]])) for text in TEXTS]
    assert [data_event(event) for event in events] == expected


async def test_the_last_event_and_logprobs_still_go_through_the_model() -> None:
    last = Generated(text="", finish_reason="stop", prompt_tokens=3, response_tokens=2)
    plain = CompletionRequest(prompt="hi")
    events = [event async for event in sgp.completion_events(plain, _pieces(Generated(text="a"), last))]
    assert isinstance(events[0], EncodedEvent) and isinstance(events[1], CompletionResponse)
    assert events[1].finish_reason == "stop" and events[1].response_tokens == 2

    with_logprobs = CompletionRequest(prompt="hi", logprobs=True)
    entry = TokenLogprob(token="a", logprob=-0.5, bytes=[97], top_logprobs=[])
    [event] = [
        event async for event in sgp.completion_events(with_logprobs, _pieces(Generated(text="a", logprobs=[entry])))
    ]
    assert isinstance(event, CompletionResponse) and event.choices is not None
