"""How much of a call becomes prompt, and token counts for an answer whose vendor
reported none (SPEC 3.7, last paragraph).

Everything a call sends that a model reads counts as prompt: the messages' text and
their other fields (tool calls, tool-call ids, names), the `tools` (templates write
their JSON schemas into the prompt), `response_format` (vendors turn it into
instructions or a grammar) and `chat_template_kwargs` (a template may write any of
them). Images are left out: vendors price an image per image, not per byte.

OpenAI-compatible servers report usage at the end of a stream only when asked with
`stream_options.include_usage`, and some (llama.cpp's Python server) never do. Then:

* the answer's tokens are the number of streamed deltas that carried text: llama.cpp
  and vLLM send one token per delta, so this matches the non-streamed count there;
* the prompt's tokens cannot be counted without the upstream's tokenizer and chat
  template, so they are estimated from the text (about four bytes of English a token,
  plus a few tokens of template per message, as OpenAI's own guidance estimates).

Either way the usage record is marked `estimated`, so nobody mistakes it for a count.
"""

from __future__ import annotations

import json
from typing import Any

from modelport.generation import GenerationCall

BYTES_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4  # role markers and separators a chat template adds


def json_bytes(value: Any) -> int:
    """UTF-8 bytes of `value` written as compact JSON (0 for None)."""
    if value is None:
        return 0
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8"))


def message_bytes(message: dict[str, Any]) -> int:
    """The text of one message a template can write: its content's text parts and the
    JSON of its other fields (tool calls, ids; the role is in the per-message overhead)."""
    content = message.get("content")
    others = {name: value for name, value in message.items() if name not in ("role", "content")}
    total = json_bytes(others) if others else 0
    if isinstance(content, str):
        total += len(content.encode("utf-8"))
    elif isinstance(content, list):
        total += sum(len(str(part.get("text", "")).encode("utf-8")) for part in content if isinstance(part, dict))
    return total


def call_extras_bytes(call: GenerationCall) -> int:
    """Bytes of what becomes prompt besides the messages (see the module docstring)."""
    return json_bytes(call.tools) + json_bytes(call.response_format) + json_bytes(call.chat_template_kwargs)


def prompt_bytes(call: GenerationCall) -> tuple[int, int]:
    """(bytes of everything that becomes prompt, number of messages) of a call whose
    chat template is not known here (the upstream renders it)."""
    if call.messages is None:
        return len((call.prompt or "").encode("utf-8")) + call_extras_bytes(call), 0
    return sum(map(message_bytes, call.messages)) + call_extras_bytes(call), len(call.messages)


def estimate_text_tokens(text: str) -> int:
    return max(1, -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN))


def estimate_prompt_tokens(call: GenerationCall) -> int:
    size, messages = prompt_bytes(call)
    return max(1, -(-size // BYTES_PER_TOKEN)) + TOKENS_PER_MESSAGE * messages
