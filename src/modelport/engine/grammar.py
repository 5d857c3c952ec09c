"""`response_format` as a llama.cpp grammar (GBNF), built on the gateway's side.

The embedded engine honours `json_object` and `json_schema` by constrained decoding:
the sequence's sampler masks every token the grammar does not allow, so the answer
is JSON (matching the schema) whenever generation ends by itself.

The grammar is built here, in the gateway, so that a schema it cannot express is a
400 before anything is streamed. llama-cpp-python's converter (`llama_grammar`, a port
of llama.cpp's `json_schema_to_grammar.py`) is plain Python, but importing it as
`llama_cpp.llama_grammar` would run the package's `__init__`, which loads the native
library into the gateway, the process SPEC 4 keeps llama.cpp out of. So the module is
loaded from its file on its own.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from modelport.errors import InvalidRequest

# OpenAI's json_object mode promises a JSON object, of any shape.
_ANY_OBJECT: dict[str, Any] = {"type": "object"}

# The converter's string character allows raw control characters (a newline inside a
# string), which JSON forbids and strict parsers (Python's json) refuse; llama.cpp's
# newer converter excludes them, as this does.
_LOOSE_CHAR = r'char ::= [^"\\]'
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F]'


@functools.cache
def _converter() -> ModuleType:
    spec = importlib.util.find_spec("llama_cpp")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise InvalidRequest("response_format needs llama-cpp-python, which this server does not have")
    path = Path(next(iter(spec.submodule_search_locations))) / "llama_grammar.py"
    module_spec = importlib.util.spec_from_file_location("modelport_llama_grammar", path)
    if module_spec is None or module_spec.loader is None:
        raise InvalidRequest("response_format needs llama-cpp-python's grammar module, which is missing")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def grammar_for(response_format: dict[str, Any] | None) -> str | None:
    """The GBNF grammar for an OpenAI `response_format`; None for plain text.

    400 for a format or schema that cannot be turned into a grammar."""
    if response_format is None:
        return None
    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        schema: Any = _ANY_OBJECT
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise InvalidRequest(
                "response_format.json_schema must be an object with a `schema` object", param="response_format"
            )
        # OpenAI allows the schema to be left out: then any JSON object will do.
        schema = spec.get("schema") or _ANY_OBJECT
    else:
        raise InvalidRequest(
            f"response_format type {kind!r} is not supported; use text, json_object or json_schema",
            param="response_format",
        )
    return schema_grammar(schema, param="response_format")


def schema_grammar(schema: Any, *, param: str) -> str:
    """The GBNF grammar of the JSON documents that a JSON schema allows; 400 naming
    `param` (the request field the schema came from) if it cannot be one."""
    try:
        grammar: str = _converter().json_schema_to_gbnf(json.dumps(schema))
    except InvalidRequest:
        raise
    except Exception as exc:  # the converter raises bare ValueErrors, KeyErrors... on what it cannot express
        raise InvalidRequest(
            f"{param}: this JSON schema cannot be turned into a grammar for constrained decoding: "
            f"{type(exc).__name__}: {exc}",
            param=param,
        ) from exc
    return grammar.replace(_LOOSE_CHAR, _JSON_CHAR)
