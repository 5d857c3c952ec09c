"""Reshaping a chat for vendors that keep the system prompt apart and want turns to
alternate (Anthropic, Gemini): system messages anywhere in the history are lifted
out, and consecutive turns of the same role are merged, their parts kept in order.

Function calling in OpenAI's shape becomes two neutral parts each adapter renders in
its vendor's terms: an assistant turn's `tool_calls` become `tool_call` parts
({"type": "tool_call", "id", "name", "arguments": parsed JSON}), and a `tool` turn
becomes a user turn with a `tool_result` part ({"type": "tool_result", "id", "name",
"content"}), its function name found from the call it answers (Gemini needs it)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from modelport.errors import InvalidRequest
from modelport.generation import GenerationCall


@dataclass(slots=True)
class Turn:
    role: str  # "user" | "assistant"
    # {"type": "text", "text"}, image parts, or the tool parts of the module docstring
    parts: list[dict[str, Any]] = field(default_factory=list)


def conversation(call: GenerationCall) -> tuple[str | None, list[Turn]]:
    """The system text and the turns of a call; a plain completion is one user turn."""
    messages = call.messages if call.messages is not None else ({"role": "user", "content": call.prompt or ""},)
    return split_conversation(messages)


def split_conversation(messages: tuple[dict[str, Any], ...]) -> tuple[str | None, list[Turn]]:
    system: list[str] = []
    turns: list[Turn] = []
    names: dict[str, str] = {}  # tool call id -> function name
    for message in messages:
        content = message.get("content")
        role = message["role"]
        if content is None or content == "":
            parts = []
        else:
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        if role == "system" or role == "developer":
            system.extend(part["text"] for part in parts if part.get("type") == "text")
            continue
        if role == "tool":
            call_id = str(message.get("tool_call_id") or "")
            parts = [{"type": "tool_result", "id": call_id, "name": names.get(call_id), "content": _text(parts)}]
            role = "user"
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            names[str(call.get("id"))] = str(function.get("name"))
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": _arguments(function.get("arguments")),
                }
            )
        if turns and turns[-1].role == role:
            turns[-1].parts.extend(parts)
        else:
            turns.append(Turn(role=role, parts=parts))
    return ("\n\n".join(system) if system else None), turns


def _text(parts: list[dict[str, Any]]) -> str:
    return "".join(part.get("text", "") for part in parts if part.get("type") == "text")


def _arguments(arguments: Any) -> Any:
    """A tool call's arguments: OpenAI sends a JSON string; other vendors take the object."""
    if not isinstance(arguments, str):
        return arguments or {}
    if not arguments.strip():
        return {}
    try:
        return json.loads(arguments)
    except ValueError:
        message = "an assistant tool call's function.arguments is not valid JSON"
        raise InvalidRequest(message, param="messages") from None
