"""Request bodies that routes parse by hand (`api.deps.parse_body`, one pydantic-core pass
instead of FastAPI's), declared to OpenAPI all the same, so that `/docs` shows them and
the fuzz test (`tests/api/test_schemathesis.py`) draws them.

A route passes `declared_body(Model, prefix)` as its `openapi_extra`; `api.app` calls
`add_schemas`, which puts the models' JSON schemas (their nested definitions included)
in the document's components, where the declared `$ref` points. Each surface names its
schemas with its own prefix: the OpenAI surface's `TextPart` is not the v4 `TextPart`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

# Every (model, prefix) a route declared with `declared_body`, in the order declared.
BODY_MODELS: list[tuple[type[BaseModel], str]] = []


def declared_body(model: type[BaseModel], prefix: str) -> dict[str, Any]:
    """The `openapi_extra` that declares `model` as the route's required JSON body, its
    schema named `{prefix}{Model}` in the components."""
    if (model, prefix) not in BODY_MODELS:
        BODY_MODELS.append((model, prefix))
    schema = {"$ref": f"#/components/schemas/{prefix}{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def add_schemas(schemas: dict[str, Any]) -> None:
    """Put every declared body's schema, and the schemas it refers to, in `schemas`
    (the document's `components.schemas`)."""
    for model, prefix in BODY_MODELS:
        found = model.model_json_schema(ref_template=f"#/components/schemas/{prefix}{{model}}")
        for name, schema in {**found.pop("$defs", {}), model.__name__: found}.items():
            schemas.setdefault(f"{prefix}{name}", schema)


__all__ = ["BODY_MODELS", "add_schemas", "declared_body"]
