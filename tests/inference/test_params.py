"""Defaults, clamping and vendor abilities, applied before any vendor is called."""

from __future__ import annotations

import pytest

from modelport.errors import InvalidRequest, ValidationFailed
from modelport.inference.params import check_bindings, check_supported, effective_sampling
from modelport.schemas.inference import ChatCompletionRequest
from modelport.vendors.base import Capabilities

NARROW = Capabilities(
    vendor="ANTHROPIC", parameters=frozenset({"top_p", "top_k", "stop_sequences"}), max_temperature=1.0
)


def request(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"chat_history": [], "prompt": "hi", **fields})


def test_temperature_above_the_vendor_ceiling_is_clamped() -> None:
    assert effective_sampling(request(temperature=1.5), NARROW).temperature == 1.0
    assert effective_sampling(request(temperature=0.7), NARROW).temperature == 0.7


def test_unsupported_parameter_is_refused_naming_it_and_the_vendor() -> None:
    with pytest.raises(InvalidRequest, match=r"frequency_penalty is not supported by vendor ANTHROPIC"):
        check_supported(request(frequency_penalty=0.5), NARROW, drop_unsupported=False)


def test_unsupported_parameters_can_be_dropped_by_model_setting() -> None:
    dropped = check_supported(request(frequency_penalty=0.5, top_k=3), NARROW, drop_unsupported=True)
    assert dropped == {"frequency_penalty"}
    sampling = effective_sampling(request(frequency_penalty=0.5, top_k=3), NARROW, dropped=dropped)
    assert sampling.frequency_penalty is None
    assert sampling.top_k == 3


SCHEMA = [
    {"name": "region", "type": "str", "required": True},
    {"name": "retries", "type": "int", "required": False},
    {"name": "boost", "type": "float"},
    {"name": "verbose", "type": "bool"},
]


def test_bindings_of_the_declared_types_pass() -> None:
    bindings = {"region": "eu", "retries": 2, "boost": 1, "verbose": False}
    check_bindings(SCHEMA, bindings)  # no ValidationFailed


@pytest.mark.parametrize(
    ("bindings", "problem"),
    [
        ({"region": "eu", "colour": "red"}, "unknown parameter 'colour'"),
        ({"retries": 1}, "missing required parameter 'region'"),
        ({"region": 3}, "'region' must be of type str"),
        ({"region": "eu", "retries": True}, "'retries' must be of type int"),
        ({"region": "eu", "verbose": "yes"}, "'verbose' must be of type bool"),
    ],
)
def test_bad_bindings_are_refused(bindings: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationFailed, match=problem):
        check_bindings(SCHEMA, bindings)
