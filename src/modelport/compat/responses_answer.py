"""The Responses API's answer. `Generated` pieces become a `response` object (a
`message` item with `output_text`, one `function_call` item per tool call, `usage`), or the documented
stream of semantic events, each with its `sequence_number` from 0: `response.created`,
`response.in_progress`, then per output item `response.output_item.added`, its content
(`response.content_part.added`, `response.output_text.delta`/`.done`,
`response.content_part.done`, or `response.function_call_arguments.delta`/`.done`) and
`response.output_item.done`, and last `response.completed` (or `response.incomplete`).
A failure after the stream started ends it with an `error` event (`ResponseRun.error_event`).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import RootModel

from modelport.compat.responses import (
    OPENAI_DEFAULT_TEMPERATURE,
    Event,
    Item,
    function_call_item,
    message_item,
    new_id,
    text_part,
)
from modelport.inference.metering import Generated
from modelport.schemas import responses as wire


class ResponseJson(RootModel[dict[str, Any]]):
    """A response object, as built here, for `TextSurface` to write."""


@dataclass
class ResponseRun:
    """One response on its way: its identity, the conversation it answers, its stream's
    sequence numbers, and (once known) the response object, which `save` stores."""

    body: wire.ResponsesBody
    input_items: list[Item]
    conversation: list[Item]
    save: Callable[[ResponseRun], Awaitable[None]] | None = None
    id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))
    sequence_number: int = 0
    response: dict[str, Any] | None = None

    def _next(self) -> int:
        number = self.sequence_number
        self.sequence_number += 1
        return number

    def event(self, kind: str, **fields: Any) -> Event:
        return kind, {"type": kind, "sequence_number": self._next(), **fields}

    def error_event(self, status: int, message: str, code: str | None) -> dict[str, Any]:
        """OpenAI's `error` stream event (`ResponseErrorEvent`) for a failure midway."""
        return {
            "type": "error",
            "code": code or str(status),
            "message": message,
            "param": None,
            "sequence_number": self._next(),
        }

    def object(
        self,
        status: str,
        output: list[Item],
        usage: dict[str, Any] | None = None,
        incomplete: str | None = None,
    ) -> dict[str, Any]:
        """The `response` object, as `openai.types.responses.Response` reads it."""
        body = self.body
        text_format = body.text.format if body.text and body.text.format else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": None if incomplete is None else {"reason": incomplete},
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "max_tool_calls": body.max_tool_calls,
            "model": body.model,
            "output": output,
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": body.previous_response_id,
            "prompt_cache_key": body.prompt_cache_key,
            # Not applied here (named in x-modelport-dropped), so not shown as if it were.
            "reasoning": {"effort": None, "summary": None},
            "safety_identifier": body.safety_identifier,
            "service_tier": "default",
            "store": body.stored(),
            "temperature": OPENAI_DEFAULT_TEMPERATURE if body.temperature is None else body.temperature,
            "text": {
                "format": text_format.model_dump(by_alias=True) if text_format else {"type": "text"},
                "verbosity": body.text.verbosity if body.text and body.text.verbosity else "medium",
            },
            "tool_choice": _wire_choice(body.tool_choice),
            "tools": [tool.model_dump(by_alias=True) for tool in body.tools or []],
            "top_logprobs": body.top_logprobs or 0,
            "top_p": 1.0 if body.top_p is None else body.top_p,
            "truncation": body.truncation or "disabled",
            "usage": usage,
            "user": body.user,
            "metadata": body.metadata or {},
        }

    async def finished(self, piece: Generated, output: list[Item]) -> dict[str, Any]:
        """The final object, stored when the body asks for it."""
        incomplete = _incomplete_reason(piece)
        status = "completed" if incomplete is None else "incomplete"
        self.response = self.object(status, output, _usage(piece), incomplete)
        await self.keep()
        return self.response

    async def keep(self) -> None:
        """Store the answered response, unless the body said `store: false`."""
        if self.save is not None and self.response is not None and self.body.stored():
            await self.save(self)

    # TextSurface's two ways of answering -----------------------------------------------

    def whole(self, body: wire.ResponsesBody, generated: Generated) -> ResponseJson:
        """The whole answer; the route stores it (`save`) once written here."""
        output: list[Item] = []
        if generated.text or not generated.tool_calls:
            output.append(message_item("assistant", [text_part("output_text", generated.text)]))
        for call in generated.tool_calls or []:
            function = call.get("function") or {}
            call_id = str(call.get("id") or new_id("call"))
            output.append(function_call_item(call_id, str(function.get("name") or ""), _arguments(function)))
        incomplete = _incomplete_reason(generated)
        status = "completed" if incomplete is None else "incomplete"
        self.response = self.object(status, output, _usage(generated), incomplete)
        return ResponseJson(self.response)

    async def events(self, body: wire.ResponsesBody, pieces: AsyncIterator[Generated]) -> AsyncIterator[Event]:
        yield self.event("response.created", response=self.object("in_progress", []))
        yield self.event("response.in_progress", response=self.object("in_progress", []))
        output: list[Item] = []
        text_item: Item | None = None  # the message item text goes to, while open
        calls: dict[int, Item] = {}  # a tool call's index -> its open function_call item

        def close_text() -> list[Event]:
            nonlocal text_item
            if text_item is None:
                return []
            item, text_item = text_item, None
            return self._close_message(item, output.index(item))

        async for piece in pieces:
            if piece.text:
                if text_item is None:
                    text_item = message_item("assistant", [], new_id("msg"))
                    text_item["status"] = "in_progress"
                    output.append(text_item)
                    index = len(output) - 1
                    yield self.event("response.output_item.added", output_index=index, item=_copy(text_item))
                    part = text_part("output_text", "")
                    text_item["content"].append(part)
                    yield self.event(
                        "response.content_part.added",
                        item_id=text_item["id"],
                        output_index=index,
                        content_index=0,
                        part=_copy(part),
                    )
                part = text_item["content"][0]
                part["text"] += piece.text
                yield self.event(
                    "response.output_text.delta",
                    item_id=text_item["id"],
                    output_index=output.index(text_item),
                    content_index=0,
                    delta=piece.text,
                    logprobs=[],
                )
            for delta in piece.tool_calls or []:
                function = delta.get("function") or {}
                call_index = int(delta.get("index", 0))
                call = calls.get(call_index)
                if call is None:
                    for event in close_text():
                        yield event
                    call_id = str(delta.get("id") or new_id("call"))
                    call = function_call_item(call_id, str(function.get("name") or ""), "")
                    call["status"] = "in_progress"
                    calls[call_index] = call
                    output.append(call)
                    yield self.event("response.output_item.added", output_index=len(output) - 1, item=_copy(call))
                if function.get("arguments"):
                    call["arguments"] += function["arguments"]
                    yield self.event(
                        "response.function_call_arguments.delta",
                        item_id=call["id"],
                        output_index=output.index(call),
                        delta=function["arguments"],
                    )
            if piece.finish_reason is not None:
                if not output:  # an empty answer is still one message, with empty text
                    text_item = message_item("assistant", [text_part("output_text", "")])
                    output.append(text_item)
                    yield self.event(
                        "response.output_item.added",
                        output_index=0,
                        item={**_copy(text_item), "content": [], "status": "in_progress"},
                    )
                    yield self.event(
                        "response.content_part.added",
                        item_id=text_item["id"],
                        output_index=0,
                        content_index=0,
                        part=text_part("output_text", ""),
                    )
                for event in close_text():
                    yield event
                for call in calls.values():
                    index = output.index(call)
                    call["status"] = "completed"
                    yield self.event(
                        "response.function_call_arguments.done",
                        item_id=call["id"],
                        output_index=index,
                        name=call["name"],
                        arguments=call["arguments"],
                    )
                    yield self.event("response.output_item.done", output_index=index, item=_copy(call))
                response = await self.finished(piece, output)
                kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
                yield self.event(kind, response=response)

    def _close_message(self, item: Item, index: int) -> list[Event]:
        part = item["content"][0]
        item["status"] = "completed"
        return [
            self.event(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=part["text"],
                logprobs=[],
            ),
            self.event(
                "response.content_part.done", item_id=item["id"], output_index=index, content_index=0, part=_copy(part)
            ),
            self.event("response.output_item.done", output_index=index, item=_copy(item)),
        ]


def _copy(item: Item) -> Item:
    """A snapshot: an event shows the item as it was then, not as it ends."""
    return json.loads(json.dumps(item))  # type: ignore[no-any-return]


def _arguments(function: dict[str, Any]) -> str:
    return str(function.get("arguments") or "{}")


def _wire_choice(choice: wire.ToolChoice | None) -> Any:
    if choice is None:
        return "auto"
    return choice if isinstance(choice, str) else choice.model_dump()


def _incomplete_reason(piece: Generated) -> str | None:
    if piece.finish_reason == "length":
        return "max_output_tokens"
    if piece.finish_reason == "content_filter":
        return "content_filter"
    return None


def _usage(piece: Generated) -> dict[str, Any]:
    prompt, completion = piece.prompt_tokens or 0, piece.response_tokens or 0
    usage: dict[str, Any] = {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": piece.cached_prompt_tokens or 0,
            "cache_write_tokens": piece.cache_creation_tokens or 0,
        },
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }
    if piece.cost is not None:
        usage["cost"] = piece.cost  # modelport's (OpenRouter's name): US dollars at the deployment's prices
    return usage
