"""One exception tree for everything modelport refuses or fails at.

Code raises these; a single handler in `api.app` turns them into the HTTP status and
JSON body of SPEC.md 3.4 (`{"detail": ...}`). Nothing below the HTTP layer knows HTTP.
"""

from __future__ import annotations

from typing import Any


class ModelportError(Exception):
    status_code = 500

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, **self.extra}

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(ModelportError):
    """The request is well formed but cannot be served by this deployment (400)."""

    status_code = 400


class TemplateRenderError(InvalidRequest):
    pass


class ContextWindowExceeded(InvalidRequest):
    pass


class Unauthenticated(ModelportError):
    status_code = 401


class Forbidden(ModelportError):
    status_code = 403


class NotFound(ModelportError):
    status_code = 404


class Conflict(ModelportError):
    status_code = 409


class ValidationFailed(ModelportError):
    """A value fails a rule the schema cannot express (422)."""

    status_code = 422


def field_errors(errors: list[dict[str, Any]]) -> ValidationFailed:
    """A 422 listing refused fields, each `{"loc": [...], "msg", "type"}`, in the shape
    pydantic's own refusals take."""
    from modelport.schemas.errors import validation_detail

    body = validation_detail(errors)
    return ValidationFailed(str(body["detail"]), errors=body["errors"])


def field_error(loc: list[str], msg: str, kind: str) -> ValidationFailed:
    return field_errors([{"loc": loc, "msg": msg, "type": kind}])


class DeploymentUnavailable(ModelportError):
    """Not ready, restarting or overloaded (503): worth asking again, after `Retry-After`
    seconds, which a client (the OpenAI and Anthropic SDKs among them) waits before its
    retry. Five seconds spans an engine restart's first backoffs and a model's load."""

    status_code = 503
    retry_after_seconds = 5

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


class EngineOverloaded(DeploymentUnavailable):
    # A full queue drains in about a second at the engine's usual pace.
    retry_after_seconds = 1


class RateLimited(ModelportError):
    status_code = 429

    def __init__(self, detail: str, *, retry_after: str | None = None, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": self.retry_after} if self.retry_after else {}


class UpstreamError(ModelportError):
    """The vendor failed or answered with an error (502)."""

    status_code = 502


class UpstreamTimeout(ModelportError):
    status_code = 504


class MissingCredential(DeploymentUnavailable):
    pass


class UnsupportedMediaType(ModelportError):
    """A request body in a format other than JSON (415)."""

    status_code = 415


class PayloadTooLarge(ModelportError):
    """A request body, or what it would store, over a bound (413)."""

    status_code = 413
