"""One line of a batch: read from its input file, checked, and what it came to.

A line that is not a request (not JSON, no `custom_id`, one already used, a `url` other
than the batch's endpoint, a body that is not an object, or asks to stream) fails alone,
into the error file; a line whose body the route refuses fails alone too, with the
route's own answer. Nothing a line holds fails its batch.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from modelport.principal import Principal

MAX_CUSTOM_ID_CHARS = 512
# The longest model name a batch keeps (`batches.model`).
MAX_MODEL_CHARS = 255


@dataclass(frozen=True, slots=True)
class LineAnswer:
    """What the route answered a line: its status, request id and JSON body."""

    status_code: int
    request_id: str | None
    body: Any
    retry_after: float | None = None  # seconds, when the answer said when to try again


class LineCall(Protocol):
    """Sends one line's body to the route `path`, as `principal` (api/batch_calls.py)."""

    async def __call__(self, principal: Principal, path: str, body: bytes) -> LineAnswer: ...


@dataclass(frozen=True, slots=True)
class Planned:
    """A line read from the input: its number (0-based, among the non-blank lines),
    custom_id, and either the body to send (and the model it names) or why it cannot be
    sent."""

    line: int
    custom_id: str | None
    body: bytes | None = None
    code: str | None = None
    message: str | None = None
    model: str | None = None


def request_id() -> str:
    return f"batch_req_{secrets.token_hex(16)}"


def _refused(line: int, custom_id: str | None, code: str, message: str) -> Planned:
    return Planned(line=line, custom_id=custom_id, code=code, message=message)


def plan_openai(line: int, raw: bytes, endpoint: str, seen: set[str]) -> Planned:
    """An OpenAI batch line: `{"custom_id", "method": "POST", "url", "body"}`."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        return _refused(line, None, "invalid_json", f"line {line + 1} is not valid JSON: {error}")
    if not isinstance(value, dict):
        return _refused(line, None, "invalid_request", f"line {line + 1} is not a JSON object")
    custom_id = _custom_id(value)
    if custom_id is None:
        return _refused(
            line,
            None,
            "missing_custom_id",
            f"line {line + 1} has no custom_id (a string of 1 to {MAX_CUSTOM_ID_CHARS})",
        )
    if custom_id in seen:
        return _refused(line, custom_id, "duplicate_custom_id", f"custom_id {custom_id!r} is used by an earlier line")
    seen.add(custom_id)
    method = value.get("method", "POST")
    if method != "POST":
        return _refused(line, custom_id, "invalid_method", f"method {method!r} is not supported: only POST")
    url = value.get("url")
    if url != endpoint:
        return _refused(line, custom_id, "invalid_url", f"url {url!r} is not the batch's endpoint {endpoint!r}")
    return _with_body(line, custom_id, value.get("body"))


def plan_anthropic(line: int, raw: bytes, seen: set[str]) -> Planned:
    """A request of an Anthropic batch, kept as `{"custom_id", "params"}` (its custom_ids
    were checked on creation; a duplicate fails here all the same)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        return _refused(line, None, "invalid_json", f"request {line + 1} is not valid JSON: {error}")
    custom_id = _custom_id(value) if isinstance(value, dict) else None
    if custom_id is None:
        return _refused(line, None, "missing_custom_id", f"request {line + 1} has no custom_id")
    if custom_id in seen:
        return _refused(
            line, custom_id, "duplicate_custom_id", f"custom_id {custom_id!r} is used by an earlier request"
        )
    seen.add(custom_id)
    return _with_body(line, custom_id, value.get("params"))


def _custom_id(value: dict[str, Any]) -> str | None:
    custom_id = value.get("custom_id")
    # PostgreSQL cannot store text holding a NUL: such a custom_id is no custom_id.
    if not isinstance(custom_id, str) or not 0 < len(custom_id) <= MAX_CUSTOM_ID_CHARS or "\x00" in custom_id:
        return None
    return custom_id


def _with_body(line: int, custom_id: str, body: Any) -> Planned:
    if not isinstance(body, dict):
        return _refused(line, custom_id, "invalid_body", "the request's body is not a JSON object")
    if body.get("stream"):
        return _refused(line, custom_id, "invalid_body", "a batch request cannot stream: remove `stream`")
    model = body.get("model")
    named = model.replace("\x00", "")[:MAX_MODEL_CHARS] if isinstance(model, str) else None
    return Planned(line=line, custom_id=custom_id, body=orjson.dumps(body), model=named or None)


async def first_model(planned: AsyncGenerator[Planned, None]) -> str | None:
    """The batch's model (OpenAI's `Batch.model`; OpenAI allows one model a batch): that
    of its first line that is a request naming one. Reads only up to that line."""
    async with contextlib.aclosing(planned):
        async for found in planned:
            if found.body is not None and found.model is not None:
                return found.model
    return None
