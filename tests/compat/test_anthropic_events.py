"""Anthropic's event stream from the service's pieces: each thinking block, run of text and
tool call is a content block of its own, in the order the model produced them (thinking
may come again after a tool call: interleaved thinking), with its deltas at its index;
a whole answer puts the reasoning first. Joined reasoning deltas make whole blocks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from modelport.compat import anthropic as translate
from modelport.generation import join_reasoning
from modelport.inference.metering import Generated
from modelport.schemas import anthropic as wire

BODY = wire.MessagesBody.model_validate(
    {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "Weather?"}]}
)
PIECES = [
    Generated(text="", reasoning=[{"index": 0, "type": "thinking"}]),
    Generated(text="", reasoning=[{"index": 0, "type": "thinking", "thinking": "Call the tool."}]),
    Generated(text="", reasoning=[{"index": 0, "type": "thinking", "signature": "s1"}]),
    Generated(text="", tool_calls=[{"index": 0, "id": "toolu_1", "type": "function",
                                    "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]),
    Generated(text="", reasoning=[{"index": 1, "type": "redacted_thinking", "data": "opaque"}]),
    Generated(text="", reasoning=[{"index": 2, "type": "thinking", "thinking": "Now answer.", "signature": "s2"}]),
    Generated(text="Cold."),
    Generated(text="", finish_reason="stop", prompt_tokens=10, response_tokens=5),
]  # fmt: skip


async def _pieces() -> AsyncIterator[Generated]:
    for piece in PIECES:
        yield piece


async def test_each_block_has_its_index_in_the_order_produced() -> None:
    events = [event async for _, event in translate.message_events(BODY, _pieces())]
    starts = [
        (event["index"], event["content_block"]["type"]) for event in events if event["type"] == "content_block_start"
    ]
    assert starts == [(0, "thinking"), (1, "tool_use"), (2, "redacted_thinking"), (3, "thinking"), (4, "text")]
    deltas = [(event["index"], event["delta"]) for event in events if event["type"] == "content_block_delta"]
    assert deltas == [
        (0, {"type": "thinking_delta", "thinking": "Call the tool."}),
        (0, {"type": "signature_delta", "signature": "s1"}),
        (1, {"type": "input_json_delta", "partial_json": '{"city": "Oslo"}'}),
        (3, {"type": "thinking_delta", "thinking": "Now answer."}),
        (3, {"type": "signature_delta", "signature": "s2"}),
        (4, {"type": "text_delta", "text": "Cold."}),
    ]
    # Every block is closed once, before the next opens.
    stops = [event["index"] for event in events if event["type"] == "content_block_stop"]
    assert stops == [0, 1, 2, 3, 4]
    assert events[-1] == {"type": "message_stop"}


def test_reasoning_deltas_join_into_whole_blocks_and_lead_a_whole_answer() -> None:
    joined: list[dict[str, Any]] = []
    for piece in PIECES:
        join_reasoning(joined, piece.reasoning or [])
    assert joined == [
        {"index": 0, "type": "thinking", "thinking": "Call the tool.", "signature": "s1"},
        {"index": 1, "type": "redacted_thinking", "data": "opaque"},
        {"index": 2, "type": "thinking", "thinking": "Now answer.", "signature": "s2"},
    ]
    whole = translate.message(BODY, Generated(text="Cold.", reasoning=joined, finish_reason="stop"))
    assert [block.type for block in whole.content] == ["thinking", "redacted_thinking", "thinking", "text"]
