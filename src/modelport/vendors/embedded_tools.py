"""Function calling on the embedded model, by constrained decoding.

A small local model has no tool-call format it was trained on and could be parsed
from reliably, so modelport gives it one and enforces it: the tools are described in
a system message, and a grammar lets the model answer only with
`{"name": <one of the tools>, "arguments": <that tool's parameters schema>}`. The
answer is then always a well-formed call, returned as one OpenAI tool call with finish
reason `tool_calls`.

Which requests are honoured, and how:
- `tool_choice` "required" or naming a function: the call is forced, as asked.
- `tool_choice` "none": no call is forced, nor are the tools described; the model
  answers in text (after earlier tool turns, say).
- `tool_choice` "auto", or none given with tools (OpenAI's default): the model decides,
  as llama.cpp's server lets it. The grammar admits either a call (the forced call's
  form) or text that does not open with `{`; so an answer that opens with `{` is held
  back until it ends and returned as the call it parses as, and any other answer streams
  as text from its first non-blank character. A call that does not parse (cut by
  max_tokens or a stop sequence) comes back as the text it is, never as an error.
One call per answer (no parallel calls). Stop sequences do not apply to a forced call
(they could cut its JSON). A call cut by max_tokens comes back as text with finish
reason `length`, as any cut answer does.

Earlier turns are rendered for any chat template: an assistant's tool calls become its
text (the same JSON the model is asked to write), a tool's result becomes a user turn.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace
from typing import Any

from modelport.engine.grammar import DEFAULT_BOUNDS, GrammarBounds, schema_grammar
from modelport.errors import InvalidRequest
from modelport.generation import GenerationCall, GenerationChunk, Sampling
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
    return None


def offered_function_names(call: GenerationCall) -> list[str] | None:
    """The functions the model may call, or answer in text instead ("auto", or no
    tool_choice with tools); None when it may not decide (no tools, "none", forced)."""
    if not call.tools or call.tool_choice not in (None, "auto"):
        return None
    return [_function(tool)["name"] for tool in call.tools]


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
                + '\nTo call one, answer with only a JSON object: {"name": <function name>, "arguments": {...}}.'
                + ("" if call.tool_choice == "required" or isinstance(call.tool_choice, dict) else _OR_TEXT),
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


_OR_TEXT = "\nIf no function is needed, answer in plain text."

# The grammar's rules for "a call or text": its own names, which the JSON schema
# converter never writes (it names rules after properties, with `-kv` and such).
_CALL_RULE = "modelport-call"
_TEXT_RULE = "modelport-text"


def call_or_text_grammar(call_grammar: str) -> str:
    """A grammar that admits what `call_grammar` does (a call, opening with `{`) or any
    text that opens with another character: the model decides, the gateway tells which
    it wrote from its first character (`decided_tool_call`)."""
    renamed = re.sub(r"^root ::=", f"{_CALL_RULE} ::=", call_grammar, count=1, flags=re.MULTILINE)
    assert renamed != call_grammar, "the converter names its start rule root"
    return f"{renamed.rstrip()}\nroot ::= {_CALL_RULE} | {_TEXT_RULE}\n{_TEXT_RULE} ::= [^{{\\x00] [^\\x00]*\n"


def auto_sampling(
    sampling: Sampling, call: GenerationCall, names: list[str], grammar_bounds: GrammarBounds = DEFAULT_BOUNDS
) -> Sampling:
    """Sampling when the model decides: a call's grammar or free text; the request's
    stop sequences and logprobs stay (they apply to a text answer)."""
    forced = call_sampling(sampling, call, names, grammar_bounds)
    assert forced.grammar is not None
    return replace(sampling, grammar=call_or_text_grammar(forced.grammar))


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


async def decided_tool_call(chunks: ChunkStream, names: list[str]) -> ChunkStream:
    """The engine's answer when the model decides: text passes as it comes once its
    first non-blank character is not `{`; an answer that opens with `{` is held to its
    end, and returned as one OpenAI tool call if it parses as a call of one of `names`,
    else as the text it is (with everything the engine said about it)."""
    held: list[GenerationChunk] = []
    try:
        async for chunk in chunks:
            held.append(chunk)
            opening = "".join(piece.text for piece in held).lstrip()
            if opening and not opening.startswith("{"):
                break  # text: what was held, then the rest as it comes
            if chunk.finish_reason is None:
                continue
            called = _parsed_call("".join(piece.text for piece in held), names)
            if called is None or chunk.finish_reason != "stop":
                for piece in held:
                    yield piece
            else:
                yield replace(chunk, text="", logprobs=None, tool_calls=[called], finish_reason="tool_calls")
            return
        for piece in held:
            yield piece
        async for chunk in chunks:
            yield chunk
    finally:
        await chunks.aclose()


def _parsed_call(answer: str, names: list[str]) -> dict[str, Any] | None:
    """`answer` as one OpenAI tool call, or None if it is not a call of one of `names`."""
    try:
        called = json.loads(answer)
    except ValueError:
        return None
    if not isinstance(called, dict) or called.get("name") not in names or not isinstance(called.get("arguments"), dict):
        return None
    return {
        "index": 0,
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": called["name"], "arguments": json.dumps(called["arguments"], ensure_ascii=False)},
    }


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type", "function") != "function" or not isinstance(tool.get("function"), dict):
        raise InvalidRequest("the embedded model takes function tools only", param="tools")
    function: dict[str, Any] = tool["function"]
    if not function.get("name"):
        raise InvalidRequest("every tool needs function.name", param="tools")
    return function
