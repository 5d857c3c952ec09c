"""Token counts for a streamed answer whose vendor reported none (SPEC 3.7, last paragraph).

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

from modelport.generation import GenerationCall

BYTES_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4  # role markers and separators a chat template adds


def estimate_text_tokens(text: str) -> int:
    return max(1, -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN))


def estimate_prompt_tokens(call: GenerationCall) -> int:
    if call.messages is None:
        return estimate_text_tokens(call.prompt or "")
    total = 0
    for message in call.messages:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        total += estimate_text_tokens(str(content or "")) + TOKENS_PER_MESSAGE
    return total
