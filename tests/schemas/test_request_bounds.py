"""Bounds on what a request may carry, checked without the app: sampling numbers, nulls in
fields an update cannot clear, free-form JSON, content types and NUL escapes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modelport.api.limits import _nul_in_body, is_json_media_type
from modelport.schemas.catalogue import DeploymentCreate, DeploymentUpdate, ModelUpdate
from modelport.schemas.inference import MAX_MAX_TOKENS, MAX_TOP_K, ChatCompletionRequest
from modelport.schemas.json_value import MAX_JSON_DEPTH

BASE = '"chat_history": [], "prompt": "hi"'


def parse(extra: str) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate_json("{" + BASE + ", " + extra + "}")


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ('"top_k": 1e30', "top_k"),
        (f'"top_k": {MAX_TOP_K + 1}', "top_k"),
        ('"top_k": NaN', "top_k"),
        ('"top_k": Infinity', "top_k"),
        (f'"max_tokens": {MAX_MAX_TOKENS + 1}', "max_tokens"),
        ('"max_tokens": 100000000000000000000000', "max_tokens"),
        ('"temperature": NaN', "temperature"),
        ('"top_p": NaN', "top_p"),
        ('"frequency_penalty": -Infinity', "frequency_penalty"),
        ('"presence_penalty": NaN', "presence_penalty"),
        ('"model_request_parameters": {"bindings": {"x": NaN}}', "model_request_parameters"),
        ('"chat_template_kwargs": {"x": [1, Infinity]}', "chat_template_kwargs"),
    ],
)
def test_sampling_numbers_out_of_range_name_the_field(extra: str, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse(extra)
    assert any(error["loc"][0] == field for error in caught.value.errors())


def test_the_largest_allowed_values_are_accepted() -> None:
    request = parse(f'"top_k": {MAX_TOP_K}.0, "max_tokens": {MAX_MAX_TOKENS}')
    assert (request.top_k, request.max_tokens) == (MAX_TOP_K, MAX_MAX_TOKENS)


@pytest.mark.parametrize(
    ("model", "field"), [(ModelUpdate, "name"), (ModelUpdate, "model_type"), (DeploymentUpdate, "name")]
)
def test_an_update_cannot_null_a_required_field(model: type[ModelUpdate | DeploymentUpdate], field: str) -> None:
    with pytest.raises(ValidationError, match=f"{field} cannot be null") as caught:
        model.model_validate_json(f'{{"{field}": null}}')
    assert caught.value.errors()[0]["loc"] == (field,)
    assert model.model_validate_json("{}").model_dump(exclude_unset=True) == {}


@pytest.mark.parametrize(
    "metadata",
    [
        {"x": float("nan")},
        {"x": [float("inf")]},
        {"x": 2**64},
        {"x": -(2**63) - 1},
    ],
)
def test_free_form_json_must_be_storable(metadata: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DeploymentCreate.model_validate({"name": "d", "deployment_metadata": metadata})


def test_free_form_json_nesting_is_bounded() -> None:
    def nested(depth: int) -> dict[str, object]:
        value: dict[str, object] = {}
        for _ in range(depth - 1):
            value = {"a": value}
        return value

    assert DeploymentCreate.model_validate({"name": "d", "deployment_metadata": nested(MAX_JSON_DEPTH)})
    with pytest.raises(ValidationError, match="nested deeper"):
        DeploymentCreate.model_validate({"name": "d", "deployment_metadata": nested(MAX_JSON_DEPTH + 1)})
    # Far deeper than Python's recursion limit: refused, not a RecursionError.
    with pytest.raises(ValidationError, match="nested deeper"):
        DeploymentCreate.model_validate({"name": "d", "deployment_metadata": nested(5000)})


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ('application/json; charset="UTF-8"', True),
        ("APPLICATION/JSON", True),
        ("application/vnd.api+json", True),
        ("application/problem+json; charset=utf8", True),
        ("application/json; charset=iso-8859-1", False),
        ("text/json", False),
        ("text/plain", False),
        ("application/jsonp", False),
        ("multipart/form-data; boundary=x", False),
        ("", False),
    ],
)
def test_json_media_types(content_type: str, accepted: bool) -> None:
    assert is_json_media_type(content_type) is accepted


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"a": "x"}', None),
        (b'{"a": "\\u0000"}', ["body", "a"]),
        (b'{"a": {"b": ["ok", "x\\u0000y"]}}', ["body", "a", "b", "1"]),
        (b'{"a\\u0000": 1}', ["body", "a\\u0000"]),
        (b'{"a": "\\\\u0000"}', None),  # an escaped backslash, then the text u0000
        (b'{"a": "\\\\\\u0000"}', ["body", "a"]),  # an escaped backslash, then a NUL
        (b'{"a": "\\u0000"', ["body"]),  # not JSON: the parser will say why, later
    ],
)
def test_nul_escapes_in_json_bodies(body: bytes, where: list[str] | None) -> None:
    assert _nul_in_body(body) == where
