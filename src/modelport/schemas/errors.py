"""Wire shapes of error answers: `{"detail": "..."}`, and for a 422 also `errors`, one
entry per refused field. Shared by the exception handlers, the request-hygiene
middleware (which answers before any route runs) and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    """Every error answer: what went wrong, in words."""

    detail: str


class FieldError(BaseModel):
    """One refused value: where it is (`["body", "top_k"]`, `["query", "page"]`), why, and
    a machine-readable kind."""

    loc: list[str]
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    """A 422: `detail` sums up every refused field; `errors` lists them one by one."""

    detail: str
    # One entry per refused field; absent where the refusal is about no single field.
    errors: list[FieldError] = Field(default_factory=list)


def validation_detail(errors: Iterable[Mapping[str, object]]) -> dict[str, object]:
    """The 422 body for pydantic-style errors (`loc`, `msg`, `type` each)."""
    fields = [
        {
            "loc": [str(part) for part in error.get("loc", ())],  # type: ignore[attr-defined]
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in errors
    ]
    summary = "; ".join(f"{'.'.join(item['loc']) or 'body'}: {item['msg']}" for item in fields)
    return {"detail": f"invalid request: {summary}", "errors": fields}
