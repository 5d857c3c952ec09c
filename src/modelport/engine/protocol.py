"""What the gateway and an engine process say to each other, and how it travels.

An engine process serves one GGUF file on a Unix stream socket. Each message is a
4-byte big-endian length followed by that many bytes of JSON. A plain stream socket
rather than ZeroMQ because the end of the stream *is* the news a gateway must act on
at once: when the engine dies, every connection to it reads EOF in the same instant,
and the requests in flight fail there and then (ZeroMQ hides a dead peer behind its
automatic reconnects). JSON through orjson, already the gateway's encoder, is as fast
as msgpack for these small messages.

Gateway → engine:
  {"op": "submit", "id": 7, "text": "...", "special": true, "sampling": {...}, "account": "..."}
  {"op": "submit", "id": 7, "tokens": [1, 2, ...], "sampling": {...}, "account": "..."}
                                                      a prompt as the model's own token ids
  {"op": "embed", "id": 8, "texts": ["...", ...]}   sentence vectors (engine/embedding.py)
  {"op": "embed", "id": 8, "texts": [], "tokens": [[1, 2, ...], ...]}   inputs as token ids
  {"op": "count", "id": 9, "text": "...", "special": true}   a prompt's tokens, nothing generated
  {"op": "cancel", "id": 7}
  {"op": "stats"}
Engine → gateway:
  {"op": "hello", "info": {...}}                      once, when the connection opens
  {"op": "step", "events": [[7, text, logprobs, finish, prompt_tokens, response_tokens,
                              cached_prompt_tokens], ...]}
                                                      one message per engine step, every
                                                      sequence of this connection in it
  {"op": "step", "events": [[7, {"error": "InvalidRequest", "detail": "...", "extra": {}}]]}
  {"op": "embedded", "id": 8, "vectors": [[...], ...], "tokens": 12}
                                                      an embed request's answer, all at once
  {"op": "counted", "id": 9, "tokens": 12}            a count request's answer
  {"op": "stats", "stats": {...}}

A frame one side cannot take (over MAX_MESSAGE_BYTES, not JSON, not a message of this
protocol) fails the request it carried, never the connection: the engine answers it
with an error event when its id can be read, and skips it otherwise.
"""

from __future__ import annotations

import asyncio
import re
import struct
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from modelport.errors import (
    ContextWindowExceeded,
    DeploymentUnavailable,
    EngineOverloaded,
    InvalidRequest,
    ModelportError,
)
from modelport.generation import GenerationChunk, Sampling, TokenAlternative, TokenLogprob

HEADER = struct.Struct(">I")
# A prompt is at most a context window of text; 64 MiB is far above any real message.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# The errors an engine may report for one request; anything else arrives as 503.
_ERRORS: dict[str, type[ModelportError]] = {
    cls.__name__: cls for cls in (InvalidRequest, ContextWindowExceeded, EngineOverloaded, DeploymentUnavailable)
}


class ModelLoadError(Exception):
    """The file cannot be served: missing, unreadable, or the build computes garbage.
    Restarting the engine would not help."""


class ProtocolError(Exception):
    """The other side sent something that is not a message of this protocol."""


def encode(message: dict[str, Any]) -> bytes:
    body = orjson.dumps(message)
    return HEADER.pack(len(body)) + body


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None once the other side has closed the connection."""
    try:
        header = await reader.readexactly(HEADER.size)
        (length,) = HEADER.unpack(header)
        if length > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"a message of {length} bytes is over the limit")
        body = await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    message: dict[str, Any] = orjson.loads(body)
    return message


# Enough of a refused frame's start to read the request id the gateway writes second
# (`{"op":"submit","id":7,...`).
_HEAD_BYTES = 256
_REQUEST_ID = re.compile(rb'"id"\s*:\s*(\d{1,15})\b')


@dataclass(frozen=True, slots=True)
class RefusedFrame:
    """A frame that is not a message this side takes (too large, or not a JSON object).
    Only the request it carried is refused (when its id can be read from its start);
    the connection, and every other request on it, goes on: the length prefix keeps
    the framing intact."""

    request_id: int | None
    reason: str


class MessageBuffer:
    """Reassembles messages from the bytes a non-blocking socket hands over."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._skipping = 0  # bytes of an oversized frame still to throw away as they arrive
        self._skipped: RefusedFrame | None = None

    def feed(self, data: bytes) -> list[dict[str, Any] | RefusedFrame]:
        self._data += data
        messages: list[dict[str, Any] | RefusedFrame] = []
        while True:
            if self._skipping:
                dropped = min(self._skipping, len(self._data))
                del self._data[:dropped]
                self._skipping -= dropped
                if self._skipping or self._skipped is None:
                    break
                messages.append(self._skipped)
                self._skipped = None
            if len(self._data) < HEADER.size:
                break
            (length,) = HEADER.unpack_from(self._data)
            if length > MAX_MESSAGE_BYTES:
                # Its start names the request; the rest is never held in memory.
                if len(self._data) < HEADER.size + _HEAD_BYTES:
                    break
                head = bytes(self._data[HEADER.size : HEADER.size + _HEAD_BYTES])
                del self._data[: HEADER.size]
                self._skipping = length
                self._skipped = RefusedFrame(
                    _request_id(head),
                    f"a message of {length} bytes is over the engine protocol's limit of {MAX_MESSAGE_BYTES}",
                )
                continue
            end = HEADER.size + length
            if len(self._data) < end:
                break
            body = bytes(self._data[HEADER.size : end])
            del self._data[:end]
            try:
                message = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                messages.append(RefusedFrame(_request_id(body[:_HEAD_BYTES]), f"a message that is not JSON: {exc}"))
                continue
            if not isinstance(message, dict):
                messages.append(RefusedFrame(None, "a message that is not a JSON object"))
                continue
            messages.append(message)
        return messages


def _request_id(head: bytes) -> int | None:
    found = _REQUEST_ID.search(head)
    return int(found.group(1)) if found else None


def encode_request(message: dict[str, Any], what: str) -> bytes:
    """A request's frame; 400 for one the engine would refuse, before it is sent (issue
    21: one oversized grammar used to end the connection, and every stream on it)."""
    frame = encode(message)
    if len(frame) - HEADER.size > MAX_MESSAGE_BYTES:
        raise InvalidRequest(
            f"{what} comes to {len(frame) - HEADER.size} bytes as a message to the embedded engine, over "
            f"the engine protocol's limit of {MAX_MESSAGE_BYTES} (MAX_MESSAGE_BYTES in engine/protocol.py)"
        )
    return frame


# --- the pieces of a message ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextPrompt:
    """A prompt the engine tokenizes; `special`: control tokens in it are matched (a
    rendered chat template's role markers), else they are plain text."""

    text: str
    special: bool = False


@dataclass(frozen=True, slots=True)
class TokenPrompt:
    """A prompt as the model's own token ids (OpenAI's legacy completions take them),
    evaluated as given: no tokenizing, no template. How many there can be is bounded
    before they get here: by the request body's size (MODELPORT_MAX_BODY_BYTES), by the
    limits' prompt-token bound (each id is at least a byte of the prompt written out,
    compat/openai.py), by MAX_MESSAGE_BYTES on this wire, and in the engine by the
    context window (engine/model.py), which also checks each id against the vocabulary."""

    ids: tuple[int, ...]


EnginePrompt = TextPrompt | TokenPrompt


def prompt_to_wire(prompt: EnginePrompt) -> dict[str, Any]:
    if isinstance(prompt, TokenPrompt):
        return {"tokens": list(prompt.ids)}
    return {"text": prompt.text, "special": prompt.special}


def prompt_from_wire(message: dict[str, Any]) -> EnginePrompt:
    """A submit message's prompt; ValueError for ids that are not integers (the engine
    refuses that request alone, engine/process.py)."""
    tokens = message.get("tokens")
    if tokens is None:
        return TextPrompt(str(message["text"]), special=bool(message.get("special")))
    if not isinstance(tokens, list) or not all(type(token) is int for token in tokens):
        raise ValueError("a prompt's tokens are a list of integers")
    return TokenPrompt(tuple(tokens))


def sampling_to_wire(sampling: Sampling) -> dict[str, Any]:
    return asdict(sampling)


def sampling_from_wire(data: dict[str, Any]) -> Sampling:
    return Sampling(
        **{
            **data,
            "stop_sequences": tuple(data.get("stop_sequences") or ()),
            "logit_bias": tuple((int(token), float(bias)) for token, bias in data.get("logit_bias") or ()),
        }
    )


def chunk_to_wire(request_id: int, chunk: GenerationChunk) -> list[Any]:
    logprobs = None
    if chunk.logprobs is not None:
        logprobs = [[entry.token, entry.logprob, entry.bytes, _alternatives(entry)] for entry in chunk.logprobs]
    return [
        request_id,
        chunk.text,
        logprobs,
        chunk.finish_reason,
        chunk.prompt_tokens,
        chunk.response_tokens,
        chunk.cached_prompt_tokens,  # the reused prefix: prompt tokens not evaluated again
    ]


def _alternatives(entry: TokenLogprob) -> list[list[Any]]:
    return [[alt.token, alt.logprob, alt.bytes] for alt in entry.top_logprobs]


def chunk_from_wire(event: list[Any]) -> GenerationChunk:
    _, text, logprobs, finish_reason, prompt_tokens, response_tokens, cached_prompt_tokens = event
    entries = None
    if logprobs is not None:
        entries = [
            TokenLogprob(
                token=token,
                logprob=logprob,
                bytes=piece,
                top_logprobs=[TokenAlternative(token=t, logprob=lp, bytes=b) for t, lp, b in alternatives],
            )
            for token, logprob, piece, alternatives in logprobs
        ]
    return GenerationChunk(
        text=text,
        logprobs=entries,
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        response_tokens=response_tokens,
        cached_prompt_tokens=cached_prompt_tokens,
    )


def error_to_wire(request_id: int, error: ModelportError) -> list[Any]:
    name = type(error).__name__ if type(error).__name__ in _ERRORS else DeploymentUnavailable.__name__
    return [request_id, {"error": name, "detail": error.detail, "extra": error.extra}]


def error_from_wire(event: list[Any]) -> ModelportError:
    data = event[1]
    cls = _ERRORS.get(data.get("error"), DeploymentUnavailable)
    return cls(str(data.get("detail", "the embedded engine failed")), **(data.get("extra") or {}))


def is_error(event: list[Any]) -> bool:
    return len(event) == 2
