"""Error bodies in the shape of the surface a request came in on.

Every error starts as modelport's own body (`{"detail": ..., ...}`, SPEC 3.4). On the
OpenAI surface (`/v1/...` and the SGP beta `/v4/beta/...`) it becomes
`{"error": {"message", "type", "param", "code"}}`; on Anthropic's (`/v1/messages...`)
`{"type": "error", "error": {"type", "message"}}`. Statuses are kept, except that a 422
becomes the 400 `invalid_request_error` both vendors answer a malformed request with, so
their SDKs raise the same typed exception (`BadRequestError`) they would against the vendor.
"""

from __future__ import annotations

from typing import Any, Literal

Surface = Literal["sgp", "openai", "anthropic"]

_OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}
_OPENAI_CODES = {401: "invalid_api_key", 404: "not_found", 429: "rate_limit_exceeded"}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def surface_of(path: str) -> Surface:
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith(("/v1/", "/v4/beta/")):
        return "openai"
    return "sgp"


def reshape(path: str, status: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(status, body) for an error answered on `path`, from modelport's own body."""
    surface = surface_of(path)
    if surface == "sgp":
        return status, body
    message, param = _message_and_param(body)
    if status == 422:
        status = 400
    if surface == "anthropic":
        return status, anthropic_error(status, message)
    return status, openai_error(status, message, param=param)


def openai_error(status: int, message: str, *, param: str | None = None) -> dict[str, Any]:
    kind = _OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": _OPENAI_CODES.get(status)}}


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def _message_and_param(body: dict[str, Any]) -> tuple[str, str | None]:
    message = str(body.get("detail", "error"))
    param = body.get("param")
    errors = body.get("errors")
    if param is None and isinstance(errors, list) and errors:
        # The first refused field, without the "body" prefix: OpenAI's `param`.
        param = _parameter_path(errors[0].get("loc", []))
    unsupported = body.get("unsupported_parameters")
    if param is None and isinstance(unsupported, list) and unsupported:
        param = str(unsupported[0])
    return message, None if param is None else str(param)


# Parts of a pydantic error location that name a union member or a validator rather than
# a place in the body (`stop.list[str]`, `messages.0.user.content`).
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "system", "developer", "user",
                        "assistant", "tool", "text", "image", "image_url", "tool_use", "tool_result"})  # fmt: skip


def _parameter_path(location: list[object]) -> str | None:
    """OpenAI's `param`: the place in the body, `messages.0.content` style."""
    parts: list[str] = []
    for part in location:
        text = str(part)
        if text == "body":
            continue
        if text in _TYPE_TAGS or "[" in text or "-" in text:
            break
        parts.append(text)
    return ".".join(parts) or None
