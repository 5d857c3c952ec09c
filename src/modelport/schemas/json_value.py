"""`JsonObject`: a free-form JSON object in a request (settings, metadata, template
arguments) that modelport stores or passes on as it came, so it has to be JSON that
every database and every JSON encoder takes back: finite numbers only (Python's parser
reads NaN, Infinity and 1e400, which PostgreSQL and strict encoders refuse), integers
within 64 bits, and a bounded nesting depth (the encoders recurse)."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

MAX_JSON_DEPTH = 64
# orjson (the upstream request encoder) takes integers in [-2**63, 2**64) only.
JSON_INT_MIN, JSON_INT_MAX = -(2**63), 2**63 - 1


def check_json_value(value: Any) -> Any:
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise PydanticCustomError("finite_number", "numbers must be finite (NaN and Infinity are not JSON)")
        if isinstance(item, int) and not JSON_INT_MIN <= item <= JSON_INT_MAX:
            raise PydanticCustomError("int_too_large", "integers must fit in 64 bits")
        if isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise PydanticCustomError(
                    "json_too_deep", "JSON nested deeper than {max_depth} levels", {"max_depth": MAX_JSON_DEPTH}
                )
            pending.extend((inner, depth + 1) for inner in (item.values() if isinstance(item, dict) else item))
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(check_json_value)]
JsonInt = Annotated[int, Field(ge=JSON_INT_MIN, le=JSON_INT_MAX)]
