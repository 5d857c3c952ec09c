"""OpenAI's Responses API <-> the one InferenceService.

A create body becomes one `TextRequest`: the conversation as OpenAI chat messages (what
every adapter takes), `instructions` first as a system message, `developer` turns as
system ones, `function_call` items as an assistant turn's `tool_calls` and
`function_call_output` items as `tool` messages; function tools as chat tools,
`text.format` as `response_format`, `max_output_tokens` as `max_tokens`, and the
sampling parameters through the v4 rules (`ChatCompletionRequest`), so ranges and vendor
abilities are checked once, the same way. What is only a hint no deployment here acts
on (built-in tools, `reasoning`, `include`, `prompt_cache_key`, ...) is left out of the
call and named in `TextRequest.dropped`, never silently.

The conversation is kept as items in the stored shape (`openai.types.responses`
`ResponseItem`: each with an id, messages with content parts), so that a stored
response's input items are listed as they are, and `previous_response_id` continues one
(its conversation, then its output, then the new input) with the same translation.

The answer, whole or streamed, is `compat/responses_answer.py`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from modelport.errors import InvalidRequest
from modelport.inference.service import CHAT_WINDOW, TextRequest
from modelport.observability.ids import hex_id
from modelport.schemas import responses as wire
from modelport.schemas.inference import ChatCompletionRequest

OPENAI_DEFAULT_TEMPERATURE = 1.0

Event = tuple[str, dict[str, Any]]
Item = dict[str, Any]


def new_id(prefix: str) -> str:
    return f"{prefix}_{hex_id()}"


# --- the input, as stored items ---------------------------------------------------------


def input_items(body: wire.ResponsesBody, earlier: list[Item] | None = None) -> list[Item]:
    """The body's `input` as items in the stored shape, each with an id. An
    `item_reference` names an item of the conversation continued (`earlier`)."""
    if isinstance(body.input, str):
        return [message_item("user", [{"type": "input_text", "text": body.input}])]
    items: list[Item] = []
    for index, item in enumerate(body.input):
        if isinstance(item, wire.MessageItem):
            items.append(message_item(item.role, _parts(item), item.id))
        elif isinstance(item, wire.FunctionCallItem):
            items.append(function_call_item(item.call_id, item.name, item.arguments, item.id))
        elif isinstance(item, wire.FunctionCallOutputItem):
            output = item.output if isinstance(item.output, str) else [part.model_dump() for part in item.output]
            items.append(
                {
                    "id": item.id or new_id("fco"),
                    "type": "function_call_output",
                    "call_id": item.call_id,
                    "output": output,
                    "status": "completed",
                }
            )
        elif isinstance(item, wire.ReasoningItem):
            items.append(item.model_dump())
        else:
            found = [known for known in earlier or [] if known.get("id") == item.id]
            if not found:
                raise InvalidRequest(
                    f"item_reference {item.id!r} names no item of the previous response's conversation",
                    param=f"input.{index}",
                )
            items.append(found[0])
    return items


def _parts(item: wire.MessageItem) -> list[dict[str, Any]]:
    if isinstance(item.content, str):
        kind = "output_text" if item.role == "assistant" else "input_text"
        return [text_part(kind, item.content)]
    return [
        text_part("output_text", part.text) if isinstance(part, wire.OutputText) else part.model_dump()
        for part in item.content
    ]


def text_part(kind: str, text: str) -> dict[str, Any]:
    if kind == "output_text":
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": kind, "text": text}


def message_item(role: str, content: list[dict[str, Any]], item_id: str | None = None) -> Item:
    return {"id": item_id or new_id("msg"), "type": "message", "role": role, "status": "completed", "content": content}


def function_call_item(call_id: str, name: str, arguments: str, item_id: str | None = None) -> Item:
    return {
        "id": item_id or new_id("fc"),
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


# --- the request ------------------------------------------------------------------------


def response_request(body: wire.ResponsesBody, conversation: list[Item]) -> TextRequest:
    """The call for `body`, whose whole conversation (a previous response's included) is
    `conversation`, in the stored item shape."""
    messages, dropped = chat_messages(body.instructions, conversation)
    if not any(message["role"] != "system" for message in messages):
        raise InvalidRequest("input is required: there is no message to answer", param="input")
    last = messages[-1]
    prompt = last["content"] if last["role"] == "user" and isinstance(last["content"], str) else ""
    values: dict[str, Any] = {
        "chat_history": [],
        "prompt": prompt,
        "temperature": OPENAI_DEFAULT_TEMPERATURE if body.temperature is None else body.temperature,
        "stream": body.stream,
    }
    if body.max_output_tokens is not None:
        values["max_tokens"] = body.max_output_tokens
    if body.top_p is not None:
        values["top_p"] = body.top_p
    try:
        request = ChatCompletionRequest.model_validate(values)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        name = {"max_tokens": "max_output_tokens"}.get(str(error["loc"][0]), str(error["loc"][0]))
        raise InvalidRequest(f"invalid {name}: {error['msg']}", param=name) from exc
    options, tools_dropped = _call_options(body)
    # Without max_output_tokens the answer may fill the window, as on OpenAI's chat route.
    dropped_all = (*dropped, *tools_dropped, *_hints(body))
    return TextRequest(request, tuple(messages), options, dropped=dropped_all, window=CHAT_WINDOW)


def _hints(body: wire.ResponsesBody) -> list[str]:
    """The hints set in `body` that no call here carries (OpenAI's names)."""
    hints = {
        "reasoning": body.reasoning,
        "include": body.include or None,
        "prompt_cache_key": body.prompt_cache_key,
        "prompt_cache_retention": body.prompt_cache_retention,
        "safety_identifier": body.safety_identifier,
        "user": body.user,
        "truncation": body.truncation,
        "service_tier": body.service_tier,
        "parallel_tool_calls": body.parallel_tool_calls,
        "max_tool_calls": body.max_tool_calls,
        "top_logprobs": body.top_logprobs,
        "text.verbosity": body.text.verbosity if body.text else None,
        "stream_options": body.stream_options,
        "client_metadata": body.client_metadata,
    }
    return [name for name, value in hints.items() if value is not None]


def _call_options(body: wire.ResponsesBody) -> tuple[dict[str, Any], list[str]]:
    options: dict[str, Any] = {}
    dropped: list[str] = []
    functions: list[dict[str, Any]] = []
    for tool in body.tools or []:
        if isinstance(tool, wire.FunctionTool):
            function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters or {"type": "object"}}
            if tool.description is not None:
                function["description"] = tool.description
            if tool.strict is not None:
                function["strict"] = tool.strict
            functions.append({"type": "function", "function": function})
        elif f"tools.{tool.type}" not in dropped:
            dropped.append(f"tools.{tool.type}")
    if functions:
        options["tools"] = tuple(functions)
    choice = body.tool_choice
    if isinstance(choice, wire.FunctionChoice):
        if not any(tool["function"]["name"] == choice.name for tool in functions):
            raise InvalidRequest(
                f"tool_choice names {choice.name!r}, which is not a function tool", param="tool_choice"
            )
        options["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif choice == "required" and not functions:
        raise InvalidRequest("tool_choice required needs at least one function tool", param="tool_choice")
    elif choice is not None and functions:
        options["tool_choice"] = choice
    text_format = body.text.format if body.text else None
    if isinstance(text_format, wire.TextFormatJsonObject):
        options["response_format"] = {"type": "json_object"}
    elif isinstance(text_format, wire.TextFormatJsonSchema):
        schema: dict[str, Any] = {"name": text_format.name, "schema": text_format.schema_}
        if text_format.strict is not None:
            schema["strict"] = text_format.strict
        if text_format.description is not None:
            schema["description"] = text_format.description
        options["response_format"] = {"type": "json_schema", "json_schema": schema}
    return options, dropped


def chat_messages(instructions: str | None, items: list[Item]) -> tuple[list[dict[str, Any]], list[str]]:
    """The conversation as OpenAI chat messages, and what of it no vendor is given."""
    messages: list[dict[str, Any]] = []
    dropped: list[str] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    for item in items:
        kind = item.get("type")
        if kind == "message":
            messages.append(_chat_message(item))
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            # The calls of one turn follow its text, as items; in a chat they are one turn.
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item["output"]
            content = output if isinstance(output, str) else "".join(_part_text(part) for part in output)
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": content})
        elif "input.reasoning" not in dropped:  # reasoning items: no vendor here takes them back
            dropped.append("input.reasoning")
    return messages, dropped


def _part_text(part: dict[str, Any]) -> str:
    return str(part.get("text") or part.get("refusal") or "")


def _chat_message(item: Item) -> dict[str, Any]:
    role = "system" if item["role"] == "developer" else item["role"]
    parts: list[dict[str, Any]] = item["content"]
    if role != "user":
        return {"role": role, "content": "".join(_part_text(part) for part in parts)}
    chat_parts: list[dict[str, Any]] = []
    for part in parts:
        if part["type"] == "input_image":
            if not part.get("image_url"):
                raise InvalidRequest("input_image needs an image_url here: file ids are not supported", param="input")
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            chat_parts.append({"type": "image_url", "image_url": image})
        else:
            chat_parts.append({"type": "text", "text": _part_text(part)})
    if all(part["type"] == "text" for part in chat_parts):
        return {"role": "user", "content": "".join(part["text"] for part in chat_parts)}
    return {"role": "user", "content": chat_parts}
