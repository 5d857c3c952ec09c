"""The engine's check of logit_bias token ids against a model's vocabulary (run by the
engine, and by the embedded vendor before a stream starts)."""

from __future__ import annotations

import pytest

from modelport.engine.sampler import check_token_ids
from modelport.errors import InvalidRequest


def test_token_ids_outside_the_vocabulary_are_a_400_naming_them() -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_token_ids(((5, 1.0), (100, -1.0), (-1, 2.0)), 100)
    assert refused.value.status_code == 400
    assert refused.value.body()["param"] == "logit_bias"
    assert "vocabulary of 100: -1, 100" in refused.value.detail


def test_token_ids_inside_the_vocabulary_pass() -> None:
    check_token_ids(((0, 1.0), (99, -1.0)), 100)
