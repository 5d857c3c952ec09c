"""Function calling on the embedded model, by constrained decoding.

A small local model has no tool-call format it was trained on and could be parsed
from reliably, so modelport gives it one and enforces it: the tools are described in
a system message, and a grammar lets the model answer only with
`{"name": <one of the tools>, "arguments": <that tool's parameters schema>}`. The
answer is then always a well-formed call, returned as one OpenAI tool call with finish
reason `tool_calls`.

Which requests are honoured, and why:
- `tool_choice` "required" or naming a function: the call is forced, as asked.
- `tool_choice` "none": no call is forced, nor are the tools described; the model
  answers in text (after earlier tool turns, say).
- `tool_choice` "auto" (OpenAI's default when tools are given): refused with 400.
  Deciding *whether* to call is the judgement this model cannot be trusted with, and
  guessing it from the first token would stream text that might turn out to be a call.
One call per answer (no parallel calls). Stop sequences do not apply to a forced call
(they could cut its JSON). A call cut by max_tokens comes back as text with finish
reason `length`, as any cut answer does.

Earlier turns are rendered for any chat template: an assistant's tool calls become its
text (the same JSON the model is asked to write), a tool's result becomes a user turn.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from typing import Any

from modelport.engine.grammar import DEFAULT_BOUNDS, GrammarBounds, schema_grammar
from modelport.errors import InvalidRequest
from modelport.generation import GenerationCall, Sampling
from modelport.vendors.base import ChunkStream


def forced_function_names(call: GenerationCall) -> list[str] | None:
    """The functions the model must call one of; None when no call is forced."""
    if not call.tools:
        return None
    names = [_function(tool)["name"] for tool in call.tools]
    choice = call.tool_choice
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if name not in names:
            raise InvalidRequest(
                f"tool_choice names function {name!r}, which is not among the tools", param="tool_choice"
            )
        return [str(name)]
    if choice == "required":
        return names
    if choice == "none":
        return None
    raise InvalidRequest(
        'the embedded model calls tools only when told to: set tool_choice to "required" or to '
        '{"type": "function", "function": {"name": ...}} (or "none"); it does not decide by itself ("auto")',
        param="tool_choice",
    )


def tool_messages(call: GenerationCall, *, describe_tools: bool) -> tuple[dict[str, Any], ...]:
    """The chat as plain text turns any chat template renders, the tools described
    first when a call is forced (with tool_choice "none" they would only invite the
    model to write a call as text)."""
    assert call.messages is not None
    messages: list[dict[str, Any]] = []
    if call.tools and describe_tools:
        described = json.dumps([_function(tool) for tool in call.tools], ensure_ascii=False)
        messages.append(
            {
                "role": "system",
                "content": "You can call these functions:\n"
                + described
                + '\nTo call one, answer with only a JSON object: {"name": <function name>, "arguments": {...}}.',
            }
        )
    names: dict[str, str] = {}
    for message in call.messages:
        if message.get("tool_calls"):
            lines = []
            for tool_call in message["tool_calls"]:
                function = tool_call.get("function") or {}
                names[str(tool_call.get("id"))] = str(function.get("name"))
                arguments = function.get("arguments") or "{}"
                lines.append(f'{{"name": {json.dumps(function.get("name"))}, "arguments": {arguments}}}')
            text = (message.get("content") or "") + "\n".join(lines)
            messages.append({"role": "assistant", "content": text})
        elif message["role"] == "tool":
            name = names.get(str(message.get("tool_call_id")), "the function")
            messages.append({"role": "user", "content": f"{name} returned: {message.get('content') or ''}"})
        else:
            messages.append({**message, "content": message.get("content") or ""})
    return tuple(messages)


def call_sampling(
    sampling: Sampling, call: GenerationCall, names: list[str], grammar_bounds: GrammarBounds = DEFAULT_BOUNDS
) -> Sampling:
    """Sampling for a forced call: its grammar, no stop sequences, no logprobs."""
    functions = {str(_function(tool)["name"]): _function(tool) for tool in call.tools or ()}
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": name},
                "arguments": functions[name].get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for name in names
    ]
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return replace(
        sampling,
        grammar=schema_grammar(schema, param="tools", bounds=grammar_bounds),
        stop_sequences=(),
        logprobs=False,
        top_logprobs=0,
    )


async def as_tool_call(chunks: ChunkStream) -> ChunkStream:
    """The engine's answer to a forced call, as one OpenAI tool call at the end."""
    text: list[str] = []
    try:
        async for chunk in chunks:
            text.append(chunk.text)
            if chunk.finish_reason is None:
                continue
            answer = "".join(text)
            if chunk.finish_reason != "stop":  # cut short: not a call, say so as text
                yield replace(chunk, text=answer, logprobs=None)
                return
            try:
                called = json.loads(answer)  # the grammar makes it parse; this is a guard
            except ValueError:
                yield replace(chunk, text=answer, logprobs=None)
                return
            tool_call = {
                "index": 0,
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": called["name"], "arguments": json.dumps(called["arguments"], ensure_ascii=False)},
            }
            yield replace(chunk, text="", logprobs=None, tool_calls=[tool_call], finish_reason="tool_calls")
            return
    finally:
        await chunks.aclose()


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type", "function") != "function" or not isinstance(tool.get("function"), dict):
        raise InvalidRequest("the embedded model takes function tools only", param="tools")
    function: dict[str, Any] = tool["function"]
    if not function.get("name"):
        raise InvalidRequest("every tool needs function.name", param="tools")
    return function
