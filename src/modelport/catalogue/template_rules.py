"""What a model made from a template must satisfy (SPEC 2, model templates): the
template's model type, its creation-parameter schema (required fields present, every
declared field of its type) and its request-parameter schema (which the model takes
over when it declares none). Pure rules, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelport.errors import field_errors
from modelport.store.tables import ModelTemplate

_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}


def _is(value: Any, kind: str) -> bool:
    # bool is an int in Python, never in a schema.
    return isinstance(value, _TYPES[kind]) and (kind == "bool" or not isinstance(value, bool))


def check_against_template(
    template: ModelTemplate,
    *,
    model_type: str,
    parameters: Mapping[str, Any] | None,
    request_schema: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """422 naming each field that breaks the template; returns the request schema the
    model is to have."""
    errors: list[dict[str, Any]] = []
    if model_type != template.model_type:
        errors.append(
            {
                "loc": ["body", "model_type"],
                "msg": f"template {template.id} is for {template.model_type} models",
                "type": "template_mismatch",
            }
        )
    given = dict(parameters or {})
    for field in (template.model_creation_parameters_schema or {}).get("parameters", []):
        name, kind = field["name"], field["type"]
        where = ["body", "model_creation_parameters", name]
        if name not in given:
            if field.get("required"):
                errors.append({"loc": where, "msg": "required by the model's template", "type": "missing"})
        elif not _is(given[name], kind):
            errors.append({"loc": where, "msg": f"the model's template declares it {kind}", "type": "template_type"})
    declared = {
        field["name"]: field["type"] for field in (template.model_request_parameters_schema or {}).get("parameters", [])
    }
    own = list((request_schema or {}).get("parameters", []))
    for index, field in enumerate(own):
        if declared.get(field["name"]) != field["type"]:
            errors.append(
                {
                    "loc": ["body", "request_schema", "parameters", str(index), "name"],
                    "msg": f"{field['name']!r} is not a {field['type']} request parameter of the model's template",
                    "type": "template_mismatch",
                }
            )
    if errors:
        raise field_errors(errors)
    if own or not template.model_request_parameters_schema:
        return dict(request_schema or {})
    # Request schemas hold {name, type, description, required}, as a model's own do.
    return {
        "parameters": [
            {
                "name": field["name"],
                "type": field["type"],
                "description": field.get("description") or None,
                "required": bool(field.get("required")),
            }
            for field in template.model_request_parameters_schema.get("parameters", [])
        ]
    }
