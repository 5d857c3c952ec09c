"""OpenAI's chat stream: a content delta is made from a template (`compat/openai.py`),
byte for byte what the chunk's model writes, whatever the model name and the text hold;
the whole stream reads the same as the one made of models (`templated=False`, what
several choices are merged from); and a delta with log-probabilities, the role, tool
calls, the finish reason and the usage still go through the model."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelport.api.sse import data_event
from modelport.compat import openai
from modelport.generation import TokenLogprob
from modelport.inference.metering import Generated
from modelport.schemas import openai as wire
from modelport.schemas.inference import EncodedEvent

TEXTS = ["Hello", "", " ", 'say "hi"', "back\\slash", "line\nbreak\ttab\r", "\x00\x01\x1f\x7f", "é ü 中文 🎉",
         "\u2028\u2029", "</script>", "a" * 5000]  # fmt: skip


def _body(model: str = "m", **fields: Any) -> wire.ChatCompletionBody:
    return wire.ChatCompletionBody.model_validate(
        {"model": model, "messages": [{"role": "user", "content": "hi"}], **fields}
    )


async def _pieces(*pieces: Generated) -> AsyncGenerator[Generated, None]:
    for piece in pieces:
        yield piece


@given(model=st.text(), text=st.text(), created=st.integers(min_value=0, max_value=2**53))
def test_a_content_delta_is_the_bytes_the_model_writes(model: str, text: str, created: int) -> None:
    identity = {"id": "chatcmpl-" + "0" * 24, "created": created, "model": model}
    head, tail = openai.content_delta_template(identity)
    model_chunk = wire.ChatCompletionChunk(
        **identity, choices=[wire.ChunkChoice(index=0, delta=wire.ChunkDelta(content=text))]
    )
    assert head + orjson.dumps(text) + tail == model_chunk.model_dump_json(exclude_none=True).encode()


@pytest.mark.parametrize("fields", [{}, {"stream_options": {"include_usage": True}}, {"logprobs": True}])
@pytest.mark.parametrize("model", ["m", 'a "quoted" \\ model 🎉'])
async def test_the_stream_reads_the_same_as_the_models(fields: dict[str, Any], model: str) -> None:
    logprob = TokenLogprob(token="a", logprob=-0.5, bytes=[97], top_logprobs=[])
    pieces = [Generated(text=text) for text in TEXTS]
    pieces += [Generated(text="", logprobs=[logprob]), Generated(text="x", logprobs=[logprob])]
    pieces += [Generated(text="", finish_reason="stop", prompt_tokens=3, response_tokens=2)]
    body = _body(model, **fields)
    templated = [event async for event in openai.chat_chunks(body, _pieces(*pieces))]
    models = [event async for event in openai.chat_chunks(body, _pieces(*pieces), templated=False)]
    assert all(isinstance(event, wire.ChatCompletionChunk) for event in models)
    # Each stream has an id of its own; the rest is the same, byte for byte.
    written = [data_event(event).replace(models[0].id.encode(), b"ID") for event in models]
    ours = [data_event(event).replace(templated[0].id.encode(), b"ID") for event in templated]  # type: ignore[union-attr]
    assert ours == written
    encoded = [event for event in templated if isinstance(event, EncodedEvent)]
    # Every content delta but those with log-probabilities, when they are asked for.
    assert len(encoded) == (0 if fields.get("logprobs") else len([text for text in TEXTS if text]) + 2)
