"""Reshaping a chat for vendors that keep the system prompt apart and want turns to
alternate (Anthropic, Gemini): system messages anywhere in the history are lifted
out, and consecutive turns of the same role are merged, their parts kept in order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelport.generation import GenerationCall


@dataclass(slots=True)
class Turn:
    role: str  # "user" | "assistant"
    parts: list[dict[str, Any]] = field(default_factory=list)  # {"type": "text", "text"} or image parts


def conversation(call: GenerationCall) -> tuple[str | None, list[Turn]]:
    """The system text and the turns of a call; a plain completion is one user turn."""
    messages = call.messages if call.messages is not None else ({"role": "user", "content": call.prompt or ""},)
    return split_conversation(messages)


def split_conversation(messages: tuple[dict[str, Any], ...]) -> tuple[str | None, list[Turn]]:
    system: list[str] = []
    turns: list[Turn] = []
    for message in messages:
        content = message["content"]
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        if message["role"] == "system":
            system.extend(part["text"] for part in parts if part.get("type") == "text")
            continue
        if turns and turns[-1].role == message["role"]:
            turns[-1].parts.extend(parts)
        else:
            turns.append(Turn(role=message["role"], parts=parts))
    return ("\n\n".join(system) if system else None), turns
