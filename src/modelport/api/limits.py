"""What a request may carry, enforced before any route runs: a cap on body size (413),
JSON bodies only (415), and no NUL characters anywhere (422)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.api import error_shapes
from modelport.errors import ModelportError, UnsupportedMediaType, ValidationFailed
from modelport.schemas.errors import validation_detail


async def _answer(send: Send, status: int, body: dict[str, Any], path: str) -> None:
    status, body = error_shapes.reshape(path, status, body)  # OpenAI's or Anthropic's shape on their routes
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _refuse(send: Send, error: ModelportError, path: str) -> None:
    await _answer(send, error.status_code, error.body(), path)


BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# What a multipart body carries beside its file: boundaries, part headers, other fields.
UPLOAD_ENVELOPE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Upload:
    """A route that takes a file: its bound, and the setting that names it."""

    max_bytes: int
    setting: str

    def refusal(self) -> str:
        return f"the file is larger than the limit of {self.max_bytes} bytes ({self.setting})"


NUL_MESSAGE = "NUL characters (\\u0000) are not allowed"
# A JSON string's escape for U+0000: `\u0000` whose backslash is not itself escaped
# (`\\u0000` is the six characters `\u0000`, not a NUL).
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def is_json_media_type(content_type: str) -> bool:
    """application/json or application/*+json, in UTF-8 (the only encoding JSON has)."""
    media, _, parameters = content_type.partition(";")
    kind, _, subtype = media.strip().lower().partition("/")
    if kind != "application" or not (subtype == "json" or subtype.endswith("+json")):
        return False
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return False
    return True


def _nul_refusal(loc: list[str]) -> ValidationFailed:
    body = validation_detail([{"loc": loc, "msg": NUL_MESSAGE, "type": "nul_character"}])
    return ValidationFailed(str(body["detail"]), errors=body["errors"])


def _nul_outside_body(scope: Scope) -> list[str] | None:
    if "\x00" in scope["path"]:
        return ["path"]
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        return ["query"]
    for name, value in scope["headers"]:
        # The byte as an int: CPython looks for one with memchr, but for a bytes
        # argument it goes through the buffer protocol, several times slower, and every
        # request has a dozen headers.
        if 0 in value or 0 in name:
            return ["header", name.decode("latin-1").replace("\x00", "")]
    return None


def _nul_in_body(body: bytes) -> list[str] | None:
    # A raw NUL byte is invalid JSON (the parser refuses it); an escaped one is not.
    if b"u0000" not in body or _NUL_ESCAPE.search(body) is None:
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return ["body"]
    return ["body", *(_nul_path(parsed) or [])]


def _nul_path(value: object) -> list[str] | None:
    """Where in a parsed JSON document the first NUL character is (a key or a string)."""
    if isinstance(value, str):
        return [] if "\x00" in value else None
    if isinstance(value, dict):
        for key, inner in value.items():
            if "\x00" in key:
                return [key.replace("\x00", "\\u0000")]
            found = _nul_path(inner)
            if found is not None:
                return [key, *found]
    if isinstance(value, list):
        for index, inner in enumerate(value):
            found = _nul_path(inner)
            if found is not None:
                return [str(index), *found]
    return None


class RequestGuard:
    """Refuses what no route can take, before routing, authentication or parsing:

    - a body larger than `max_bytes` (413), whether it declares its length or not;
    - a POST/PUT/PATCH body that is not JSON (415): every body modelport reads is JSON,
      and the inference routes parse theirs by hand, whatever the content type says;
    - a NUL character in the path, the query, a header or any JSON string or key (422):
      PostgreSQL cannot store or even compare text holding one.

    Not a middleware of its own: `api/front.py` runs its steps in this order (each
    refusal is answered on the `send` it is given):

    1. `upload_for`: an upload route (`uploads`: a POST path and its own bound,
       `/v1/files`) takes a multipart body, which is not read here but passed on by
       `pass_upload` as it arrives, counted: past its bound (or declaring a larger
       length) it is answered 413 at once, and the route sees the client gone;
    2. `refuse_before_body`: the declared length, and NULs outside the body;
    3. for a method with a body only, `read_body`: its content type, then the body read
       whole (it must be, to look for NULs), to be handed on as one message.
    """

    def __init__(self, max_bytes: int, uploads: Mapping[str, Upload] | None = None) -> None:
        self.max_bytes = max_bytes
        self.uploads = dict(uploads or {})

    def upload_for(self, scope: Scope) -> Upload | None:
        return self.uploads.get(scope["path"]) if scope["method"] == "POST" else None

    async def refuse_before_body(self, scope: Scope, send: Send) -> bool:
        """Whether the request was refused (and answered) for what it declares."""
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send, scope["path"])
            return True
        where = _nul_outside_body(scope)
        if where is not None:
            await _refuse(send, _nul_refusal(where), scope["path"])
            return True
        return False

    async def read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The request's body, read whole; None when it was refused (and answered) or the
        client went away before it finished sending."""
        content_type = next((value for name, value in scope["headers"] if name == b"content-type"), None)
        # What nearly every client sends is taken without being parsed.
        if (
            content_type is not None
            and content_type != b"application/json"
            and not is_json_media_type(content_type.decode("latin-1"))
        ):
            await _refuse(
                send,
                UnsupportedMediaType(
                    f"unsupported content type {content_type.decode('latin-1')!r}: "
                    "request bodies must be JSON (content-type: application/json)"
                ),
                scope["path"],
            )
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away before it finished sending
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send, scope["path"])
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and content_type is None:
            error = UnsupportedMediaType("a request body needs the header content-type: application/json")
            await _refuse(send, error, scope["path"])
            return None
        where = _nul_in_body(body) if body else None
        if where is not None:
            await _refuse(send, _nul_refusal(where), scope["path"])
            return None
        return body

    async def pass_upload(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, upload: Upload) -> None:
        """The request to an upload route, on to `app` with its body counted as it arrives."""
        limit = upload.max_bytes + UPLOAD_ENVELOPE_BYTES
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        where = _nul_outside_body(scope)
        if where is not None:
            await _refuse(send, _nul_refusal(where), scope["path"])
            return
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _answer(send, 413, {"detail": upload.refusal()}, scope["path"])
            return
        size = 0
        answered = False

        async def counted() -> Message:
            nonlocal size, answered
            if answered:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    answered = True
                    await _answer(send, 413, {"detail": upload.refusal()}, scope["path"])
                    return {"type": "http.disconnect"}
            return message

        async def unless_answered(message: Message) -> None:
            if not answered:
                await send(message)

        await app(scope, counted, unless_answered)

    async def _too_large(self, send: Send, path: str) -> None:
        detail = f"request body is larger than the limit of {self.max_bytes} bytes"
        await _answer(send, 413, {"detail": detail}, path)


def replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` for what follows the guard: the body it read, as one message, then
    whatever the client sends next (its disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
