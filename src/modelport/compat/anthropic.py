"""Anthropic's Messages shapes <-> the one InferenceService.

A Messages request becomes OpenAI-style messages (what every adapter takes): the
system prompt becomes a system message, `tool_use` blocks become assistant
`tool_calls`, `tool_result` blocks become `tool` messages, images become `image_url`
parts (base64 as data URLs), text documents become text. Tools and `tool_choice`
become the OpenAI ones. The sampling parameters go through the v4 rules as an SGP
request, so ranges, clamping and vendor abilities are checked once, the same way.

An ANTHROPIC deployment loses nothing: the request's own `system`, `messages`,
`tools`, `tool_choice` and every Anthropic-only field (`thinking`,
`context_management`, `output_config`, `metadata`, `cache_control`, ...) ride along
verbatim as the call's `VendorPassthrough`, with the `anthropic-beta` header, and
its adapter sends them as given (blocks with `cache_control`, thinking blocks with
their signatures, server tools, PDF documents). For any other vendor the hints among them
are left out and named in `TextRequest.dropped` (and the passthrough's `hints`, which a
deployment of the family does honour); the content no other vendor can take (`document`
blocks other than plain text, `search_result` blocks, images inside `tool_result`, server
tools, `mcp_servers`, `container`) is named in the call's `content_needs`, and a
deployment whose vendor's capabilities lack one answers 400 naming it.

Back: `Generated` pieces become a `message` with text and `tool_use` blocks, or the
event stream (`message_start`, `content_block_start`/`_delta`/`_stop`, `message_delta`,
`message_stop`). `message_start` waits for the first piece and reports the input tokens
it carries (`Generated.prompt_counts`: what Anthropic's own message_start said, the
embedded engine's tokenized prompt); a vendor that counts only at the end (OpenAI's
streams) leaves it 0 there. `message_delta` carries the final counts either way.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError

from modelport.errors import InvalidRequest
from modelport.generation import PromptCounts, VendorPassthrough
from modelport.inference.metering import Generated
from modelport.inference.service import TextRequest
from modelport.observability.ids import hex_id
from modelport.schemas import anthropic as wire
from modelport.schemas.inference import MAX_STOP_SEQUENCES, ChatCompletionRequest

ANTHROPIC_DEFAULT_TEMPERATURE = 1.0
# count_tokens builds a call like any other (it generates nothing): this is its max_tokens.
COUNTING_MAX_TOKENS = 1
ANTHROPIC = "ANTHROPIC"
# Sent verbatim to an ANTHROPIC deployment; hints for every other vendor (named when set).
_ANTHROPIC_ONLY = ("thinking", "context_management", "metadata", "service_tier")
# Sent verbatim to an ANTHROPIC deployment; content no other vendor takes (`_needs`).
_ANTHROPIC_CONTENT = ("container", "mcp_servers")
# The Anthropic rendering of what the call also carries in OpenAI's shapes.
_CONVERSATION = ("system", "messages", "tools", "tool_choice")

Event = tuple[str, dict[str, Any]]


def message_request(body: wire.MessagesBody | wire.CountTokensBody) -> TextRequest:
    messages = _messages(body)
    values: dict[str, Any] = {"chat_history": [], "prompt": _last_user_text(body.messages)}
    if isinstance(body, wire.MessagesBody):
        values.update(
            temperature=ANTHROPIC_DEFAULT_TEMPERATURE if body.temperature is None else body.temperature,
            max_tokens=body.max_tokens,
            stream=body.stream,
        )
        # Validated against the v4 bound of 4, then given all (the vendor's bound applies).
        stops = body.stop_sequences[:MAX_STOP_SEQUENCES] if body.stop_sequences else None
        optional = {"stop_sequences": stops, "top_p": body.top_p, "top_k": body.top_k}
        values.update({name: value for name, value in optional.items() if value is not None})
        if body.top_k is not None:
            values["top_k"] = float(body.top_k)
    else:
        values.update(temperature=0.0, max_tokens=COUNTING_MAX_TOKENS)
    try:
        request = ChatCompletionRequest.model_validate(values)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        raise InvalidRequest(f"invalid {'.'.join(map(str, error['loc']))}: {error['msg']}") from exc
    if isinstance(body, wire.MessagesBody) and body.stop_sequences:
        request = request.model_copy(update={"stop_sequences": body.stop_sequences})
    options: dict[str, Any] = {}
    functions = tuple(_function(tool) for tool in body.tools or [] if isinstance(tool, wire.Tool))
    if functions:
        options["tools"] = functions
    if body.tool_choice is not None:
        options["tool_choice"] = _tool_choice(body.tool_choice)
        if functions and body.tool_choice.disable_parallel_tool_use is not None:
            # OpenAI's name for it, for the vendors that take it (an ANTHROPIC deployment
            # gets the tool_choice as sent); the others leave it out and name it.
            options["hints"] = {"parallel_tool_calls": not body.tool_choice.disable_parallel_tool_use}
    if body.output_config is not None and body.output_config.format is not None:
        schema = body.output_config.format.schema_
        options["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    needs = _needs(body)
    if needs:
        options["content_needs"] = needs
    hints = _hints(body)
    options["passthrough"] = _passthrough(body, hints)
    return TextRequest(request, messages, options, dropped=hints)


def _passthrough(body: wire.CountTokensBody, hints: tuple[str, ...]) -> VendorPassthrough:
    """The request as Anthropic reads it: the conversation and the Anthropic-only fields,
    as the client sent them (explicit nulls, `citations: null` among them, included)."""
    fields = {*_CONVERSATION, *_ANTHROPIC_ONLY, *_ANTHROPIC_CONTENT, "output_config", "cache_control", "inference_geo"}
    sent = body.model_dump(include=fields, exclude_unset=True, by_alias=True)
    beta = body._anthropic_beta
    return VendorPassthrough(ANTHROPIC, body=sent, headers={"anthropic-beta": beta} if beta else {}, hints=hints)


def _hints(body: wire.CountTokensBody) -> tuple[str, ...]:
    """What another vendor's deployment does not get, by the name the client used."""
    names = [name for name in _ANTHROPIC_ONLY if getattr(body, name, None) is not None]
    if body.output_config is not None and body.output_config.effort is not None:
        names.append("output_config.effort")
    if _has_cache_control(body):
        names.append("cache_control")
    kinds = {
        block.type for message in body.messages if not isinstance(message.content, str) for block in message.content
    }
    for kind in ("thinking", "redacted_thinking", "server_tool_use"):
        if kind in kinds:
            names.append(f"messages.{kind}")
    return tuple(names)


def _needs(body: wire.CountTokensBody) -> dict[str, str]:
    """The content only an ANTHROPIC deployment takes (vendors/base.py ANTHROPIC_CONTENT),
    each as an error names it."""
    needs: dict[str, str] = {}
    blocks = [block for message in body.messages for block in _blocks(message)]
    results = [inner for block in blocks if isinstance(block, wire.ToolResultBlock)
               for inner in (block.content if isinstance(block.content, list) else [])]  # fmt: skip
    if any(_is_binary_document(block) for block in (*blocks, *results)):
        needs["document"] = "document blocks other than plain text (PDF, URL or content sources)"
    if any(isinstance(block, wire.SearchResultBlock) for block in (*blocks, *results)):
        needs["search_result"] = "search_result blocks"
    if any(isinstance(block, wire.ImageBlock) for block in results):
        needs["tool_result_image"] = "images inside tool_result blocks"
    server_tools = sorted({tool.type for tool in body.tools or [] if isinstance(tool, wire.ServerTool)})
    if server_tools:
        needs["server_tools"] = f"server tools ({', '.join(server_tools)})"
    for name in _ANTHROPIC_CONTENT:
        if getattr(body, name, None) is not None:
            needs[name] = name
    return needs


def _blocks(message: wire.Message) -> list[Any]:
    return [] if isinstance(message.content, str) else list(message.content)


def _has_cache_control(body: wire.CountTokensBody) -> bool:
    if body.cache_control is not None:
        return True
    if not isinstance(body.system, str) and any(block.cache_control for block in body.system or []):
        return True
    if any(isinstance(tool, wire.Tool) and tool.cache_control for tool in body.tools or []):
        return True
    return any(getattr(block, "cache_control", None) for message in body.messages for block in _blocks(message))


def _is_binary_document(block: Any) -> bool:
    return isinstance(block, wire.DocumentBlock) and _document_text(block) is None


def _document_text(block: wire.DocumentBlock) -> str | None:
    """A plain-text document's text (what any model can read); None for a PDF or a URL."""
    source = block.source
    if source.get("type") == "text" and isinstance(source.get("data"), str):
        return str(source["data"])
    return None


def _function(tool: wire.Tool) -> dict[str, Any]:
    function: dict[str, Any] = {
        "name": tool.name,
        "description": tool.description or "",
        "parameters": tool.input_schema,
    }
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def _tool_choice(choice: wire.ToolChoice) -> str | dict[str, Any]:
    if choice.type == "tool":
        if not choice.name:
            raise InvalidRequest("tool_choice of type tool needs the tool's name")
        return {"type": "function", "function": {"name": choice.name}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def _last_user_text(messages: list[wire.Message]) -> str:
    last = messages[-1]
    if last.role != "user":
        return ""
    if isinstance(last.content, str):
        return last.content
    return "".join(block.text for block in last.content if isinstance(block, wire.TextBlock))


def _messages(body: wire.CountTokensBody) -> tuple[dict[str, Any], ...]:
    out: list[dict[str, Any]] = []
    if body.system:
        system = body.system if isinstance(body.system, str) else "\n\n".join(block.text for block in body.system)
        out.append({"role": "system", "content": system})
    for message in body.messages:
        if isinstance(message.content, str):
            out.append({"role": message.role, "content": message.content})
        elif message.role == "system":
            out.append({"role": "system", "content": _result_text(message.content)})
        elif message.role == "assistant":
            out.append(_assistant(message.content))
        else:
            out.extend(_user(message.content))
    return tuple(out)


def _assistant(blocks: list[Any]) -> dict[str, Any]:
    # Thinking and server-tool blocks are Anthropic's alone (see `_hints`).
    text = "".join(block.text for block in blocks if isinstance(block, wire.TextBlock))
    turn: dict[str, Any] = {"role": "assistant", "content": text}
    calls = [
        {"id": block.id, "type": "function", "function": {"name": block.name, "arguments": json.dumps(block.input)}}
        for block in blocks
        if isinstance(block, wire.ToolUseBlock)
    ]
    if calls:
        turn["tool_calls"] = calls
    return turn


def _user(blocks: list[Any]) -> list[dict[str, Any]]:
    """Tool results first (as `tool` messages, where OpenAI keeps them), then the rest."""
    turns: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, wire.ToolResultBlock):
            result = block.content if isinstance(block.content, str) else _result_text(block.content or [])
            turns.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": result})
        elif isinstance(block, wire.TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, wire.DocumentBlock):
            text = _document_text(block)
            if text is not None:
                parts.append({"type": "text", "text": text})
        elif isinstance(block, wire.ImageBlock):
            source = block.source
            url = source.url if isinstance(source, wire.URLSource) else f"data:{source.media_type};base64,{source.data}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif isinstance(block, (wire.ToolUseBlock, wire.ServerToolUseBlock)):
            raise InvalidRequest("a user message cannot hold tool_use blocks; they belong to assistant messages")
        elif isinstance(block, (wire.ThinkingBlock, wire.RedactedThinkingBlock)):
            raise InvalidRequest("a user message cannot hold thinking blocks; they belong to assistant messages")
    if parts:
        only_text = all(part["type"] == "text" for part in parts)
        content: Any = "".join(part["text"] for part in parts) if only_text else parts
        turns.append({"role": "user", "content": content})
    return turns


def _result_text(blocks: list[Any]) -> str:
    texts = [block.text if isinstance(block, wire.TextBlock) else None for block in blocks]
    texts += [_document_text(block) for block in blocks if isinstance(block, wire.DocumentBlock)]
    return "".join(text for text in texts if text)


# --- responses --------------------------------------------------------------------------


def message_id() -> str:
    return f"msg_{hex_id()}"


def stop_reason(piece: Generated) -> wire.StopReason:
    if piece.finish_reason == "length":
        return "max_tokens"
    if piece.finish_reason == "tool_calls":
        return "tool_use"
    if piece.finish_reason == "content_filter":
        return "refusal"
    return "stop_sequence" if piece.stop_sequence else "end_turn"


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        parsed = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


Block = wire.ResponseThinking | wire.ResponseRedactedThinking | wire.ResponseText | wire.ResponseToolUse


def _reasoning_block(entry: dict[str, Any]) -> Block:
    if entry.get("type") == "redacted_thinking":
        return wire.ResponseRedactedThinking(data=str(entry.get("data") or ""))
    return wire.ResponseThinking(thinking=str(entry.get("thinking") or ""), signature=str(entry.get("signature") or ""))


def message(body: wire.MessagesBody, generated: Generated) -> wire.MessageResponse:
    # The reasoning first, as Claude answers (and as it must be sent back).
    content: list[Block] = [_reasoning_block(entry) for entry in generated.reasoning or []]
    if generated.text or not generated.tool_calls:
        content.append(wire.ResponseText(text=generated.text))
    for call in generated.tool_calls or []:
        function = call.get("function") or {}
        content.append(
            wire.ResponseToolUse(
                id=str(call.get("id") or f"toolu_{uuid.uuid4().hex}"),
                name=str(function.get("name") or ""),
                input=_tool_input(str(function.get("arguments") or "")),
            )
        )
    return wire.MessageResponse(
        id=message_id(),
        model=body.model,
        content=content,
        stop_reason=stop_reason(generated),
        stop_sequence=generated.stop_sequence,
        usage=usage_of(generated),
    )


async def message_events(body: wire.MessagesBody, pieces: AsyncIterator[Generated]) -> AsyncIterator[Event]:
    """Anthropic's event stream: a block per thinking block (`thinking_delta`s, then its
    `signature_delta`), per run of text and per tool call, in the order they come.
    `message_start` comes with the first piece, with the input tokens it knows."""
    first = await anext(aiter(pieces), None)
    start = wire.MessageResponse(
        id=message_id(),
        model=body.model,
        content=[],
        stop_reason=None,
        stop_sequence=None,
        usage=_start_usage(first),
    )
    yield "message_start", {"type": "message_start", "message": start.model_dump()}
    if first is not None:
        pieces = _prepended(first, pieces)
    index = -1  # the open content block
    open_kind: str | None = None
    tool_blocks: dict[int, int] = {}  # tool call index -> content block index
    thinking_blocks: dict[int, int] = {}  # reasoning index -> content block index

    def close() -> Event:
        return "content_block_stop", {"type": "content_block_stop", "index": index}

    async for piece in pieces:
        for entry in piece.reasoning or []:
            reasoning_index = int(entry.get("index", 0))
            if reasoning_index not in thinking_blocks:
                if open_kind is not None:
                    yield close()
                index, open_kind = index + 1, "thinking"
                thinking_blocks[reasoning_index] = index
                redacted = entry.get("type") == "redacted_thinking"
                block = {"type": "redacted_thinking", "data": entry.get("data") or ""} if redacted else {
                    "type": "thinking", "thinking": "", "signature": ""}  # fmt: skip
                yield "content_block_start", _block_start(index, block)
            at = thinking_blocks[reasoning_index]
            if entry.get("type") != "redacted_thinking":
                if entry.get("thinking"):
                    yield (
                        "content_block_delta",
                        _block_delta(at, {"type": "thinking_delta", "thinking": entry["thinking"]}),
                    )
                if entry.get("signature"):
                    delta = {"type": "signature_delta", "signature": entry["signature"]}
                    yield "content_block_delta", _block_delta(at, delta)
        if piece.text:
            if open_kind != "text":
                if open_kind is not None:
                    yield close()
                index, open_kind = index + 1, "text"
                yield "content_block_start", _block_start(index, {"type": "text", "text": ""})
            yield "content_block_delta", _block_delta(index, {"type": "text_delta", "text": piece.text})
        for call in piece.tool_calls or []:
            call_index = int(call.get("index", 0))
            function = call.get("function") or {}
            if call_index not in tool_blocks:
                if open_kind is not None:
                    yield close()
                index, open_kind = index + 1, "tool_use"
                tool_blocks[call_index] = index
                use: dict[str, Any] = {"type": "tool_use", "id": call.get("id") or f"toolu_{uuid.uuid4().hex}",
                       "name": function.get("name") or "", "input": {}}  # fmt: skip
                yield "content_block_start", _block_start(index, use)
            if function.get("arguments"):
                delta = {"type": "input_json_delta", "partial_json": function["arguments"]}
                yield "content_block_delta", _block_delta(tool_blocks[call_index], delta)
        if piece.finish_reason is not None:
            if open_kind in (None, "thinking"):  # an answer with no text still has its (empty) text block
                if open_kind is not None:
                    yield close()
                index, open_kind = index + 1, "text"
                yield "content_block_start", _block_start(index, {"type": "text", "text": ""})
            yield close()
            usage = usage_of(piece).model_dump()
            delta = {"stop_reason": stop_reason(piece), "stop_sequence": piece.stop_sequence}
            yield "message_delta", {"type": "message_delta", "delta": delta, "usage": usage}
            yield "message_stop", {"type": "message_stop"}


async def _prepended(first: Generated, rest: AsyncIterator[Generated]) -> AsyncIterator[Generated]:
    yield first
    async for piece in rest:
        yield piece


def _start_usage(first: Generated | None) -> wire.Usage:
    """message_start's usage: the prompt's counts as the first piece knows them (all of
    them when that piece is the last), output 0."""
    counts = first.prompt_counts if first is not None else None
    if counts is None and first is not None and first.finish_reason is not None and first.prompt_tokens is not None:
        counts = PromptCounts(first.prompt_tokens, first.cached_prompt_tokens or 0, first.cache_creation_tokens or 0)
    if counts is None:
        return wire.Usage(input_tokens=0, output_tokens=0)
    return wire.Usage(
        input_tokens=max(counts.tokens - counts.cached - counts.created, 0),
        output_tokens=0,
        cache_creation_input_tokens=counts.created,
        cache_read_input_tokens=counts.cached,
    )


def usage_of(generated: Generated) -> wire.Usage:
    """Anthropic's usage: `input_tokens` is the uncached part of the prompt; the cache
    reads and writes are counted in their own fields (modelport's `prompt_tokens` holds all)."""
    read, created = generated.cached_prompt_tokens or 0, generated.cache_creation_tokens or 0
    return wire.Usage(
        input_tokens=max((generated.prompt_tokens or 0) - read - created, 0),
        output_tokens=generated.response_tokens or 0,
        cache_creation_input_tokens=created,
        cache_read_input_tokens=read,
    )


def _block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def _block_delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}
