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

A grammar must never be able to take the engine down (issue 21): that converter wrote
`maxLength: 40000` as 40,000 nested optional groups, and llama.cpp's parser, which
recurses once per group, overflowed its stack (SIGSEGV, for every tenant of that
model). So repetition is written with GBNF's own `{m,n}`, which llama.cpp expands
without recursion, and every schema and grammar is held to `GrammarBounds` (the Bounds
settings) before it is sent: schema bytes and depth, each repetition count (llama.cpp
refuses more than 2000, MAX_REPETITION_THRESHOLD in its llama-grammar.cpp, and quietly
drops a larger upper bound), and the grammar's bytes and parenthesis nesting.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
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

# The schema keywords whose number becomes a repetition count (or may, in a converter
# that honours it: min/maxProperties are ignored by this one today).
_COUNT_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")

# GBNF string literals and character classes, whose contents are not structure.
_GBNF_TERMINAL = re.compile(r'"(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]', re.DOTALL)
_GBNF_STRUCTURE = re.compile(r"[()]|\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


@dataclass(frozen=True, slots=True)
class GrammarBounds:
    """What one schema may cost; Settings' Bounds section (config.py) sets them."""

    schema_bytes: int = 64 * 1024
    schema_depth: int = 64  # JSON levels: a nested object schema takes two (properties, name)
    repetition: int = 2000
    grammar_bytes: int = 1024 * 1024
    grammar_nesting: int = 64

    @classmethod
    def from_settings(cls, settings: Any) -> GrammarBounds:
        return cls(
            schema_bytes=settings.max_schema_bytes,
            schema_depth=settings.max_schema_depth,
            repetition=settings.max_grammar_repetition,
            grammar_bytes=settings.max_grammar_bytes,
            grammar_nesting=settings.max_grammar_nesting,
        )


DEFAULT_BOUNDS = GrammarBounds()


def _braced_repetition(
    item_rule: str,
    min_items: int,
    max_items: int | None,
    separator_rule: str | None = None,
    item_rule_is_literal: bool = False,  # the converter's signature; a literal repeats like any item
) -> str:
    """`item` repeated min..max times (max None: unbounded), as llama.cpp's newer
    converter writes it: `item{m,n}`, never nested groups. With a separator:
    `item (sep item){m-1,n-1}`, optional as a whole when min is 0."""
    for count in (min_items, max_items):
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise ValueError(f"a repetition count must be a whole number of 0 or more, not {count!r}")
    if max_items is not None and min_items > max_items:
        # llama.cpp computes max - min unsigned: {5,3} would ask it for 2**64 rules.
        raise ValueError(f"a repetition of at least {min_items} and at most {max_items} is empty")
    if max_items == 0:
        return ""
    if min_items == 0 and max_items == 1:
        return f"{item_rule}?"
    if separator_rule:
        rest = _braced_repetition(
            f"({separator_rule} {item_rule})", max(min_items - 1, 0), None if max_items is None else max_items - 1
        )
        both = f"{item_rule} {rest}".rstrip()
        return f"({both})?" if min_items == 0 else both
    if max_items is None:
        return (
            f"{item_rule}*" if min_items == 0 else f"{item_rule}+" if min_items == 1 else f"{item_rule}{{{min_items},}}"
        )
    if min_items == max_items:
        return f"{item_rule}{{{min_items}}}"
    return f"{item_rule}{{{min_items},{max_items}}}"


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
    # The converter's methods look the name up in their module when they run.
    module._build_repetition = _braced_repetition  # type: ignore[attr-defined]
    # Its number rules were built with nesting when the module loaded ("up to 15 digits",
    # 15 groups deep); the same language, flat.
    rule = module.BuiltinRule
    module.PRIMITIVE_RULES["decimal-part"] = rule("[0-9]{1,16}", [])
    module.PRIMITIVE_RULES["integral-part"] = rule("[0-9] | [1-9] [0-9]{0,15}", [])
    return module


def grammar_for(response_format: dict[str, Any] | None, bounds: GrammarBounds = DEFAULT_BOUNDS) -> str | None:
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
    return schema_grammar(schema, param="response_format", bounds=bounds)


def schema_grammar(schema: Any, *, param: str, bounds: GrammarBounds = DEFAULT_BOUNDS) -> str:
    """The GBNF grammar of the JSON documents that a JSON schema allows; 400 naming
    `param` (the request field the schema came from) if it cannot be one, or if the
    schema or its grammar is over one of `bounds`."""
    _check_schema(schema, param, bounds)
    try:
        grammar: str = _converter().json_schema_to_gbnf(json.dumps(schema))
    except InvalidRequest:
        raise
    except Exception as exc:  # the converter raises bare ValueErrors, KeyErrors... on what it cannot express
        raise InvalidRequest(
            f"{param}: this JSON schema cannot be turned into a grammar for constrained decoding: "
            f"{type(exc).__name__}: {str(exc)[:300]}",
            param=param,
        ) from exc
    grammar = grammar.replace(_LOOSE_CHAR, _JSON_CHAR)
    _check_grammar(grammar, param, bounds)
    return grammar


def _check_schema(schema: Any, param: str, bounds: GrammarBounds) -> None:
    """Depth first (measured without recursion, so a deep schema costs nothing to
    refuse), then the repetition counts it asks for, then its size."""
    for path, node, depth in _walk(schema):
        if depth > bounds.schema_depth:
            raise InvalidRequest(
                f"{param}: the JSON schema nests deeper than {bounds.schema_depth} levels (at {path or '/'}); "
                "MODELPORT_MAX_SCHEMA_DEPTH bounds it",
                param=param,
            )
        if isinstance(node, dict):
            for keyword in _COUNT_KEYWORDS:
                count = node.get(keyword)
                if isinstance(count, int) and not isinstance(count, bool) and count > bounds.repetition:
                    raise InvalidRequest(
                        f"{param}: {keyword} {count} at {path or '/'} is above {bounds.repetition}, the most "
                        "repetitions a grammar may ask for (MODELPORT_MAX_GRAMMAR_REPETITION)",
                        param=param,
                    )
    size = len(json.dumps(schema).encode())
    if size > bounds.schema_bytes:
        raise InvalidRequest(
            f"{param}: the JSON schema is {size} bytes; MODELPORT_MAX_SCHEMA_BYTES allows {bounds.schema_bytes}",
            param=param,
        )


def _walk(schema: Any) -> Iterator[tuple[str, Any, int]]:
    """Every value in a JSON document with its JSON pointer and depth, without recursion."""
    todo: list[tuple[str, Any, int]] = [("", schema, 1)]
    while todo:
        path, node, depth = todo.pop()
        yield path, node, depth
        if isinstance(node, dict):
            todo.extend((f"{path}/{key}", value, depth + 1) for key, value in node.items())
        elif isinstance(node, list):
            todo.extend((f"{path}/{index}", value, depth + 1) for index, value in enumerate(node))


def _check_grammar(grammar: str, param: str, bounds: GrammarBounds) -> None:
    """The produced grammar, as llama.cpp's parser will read it: its size, how deep
    its groups nest (the parser recurses once per level) and every `{m,n}` count,
    whichever schema keyword or pattern quantifier wrote it."""
    size = len(grammar.encode())
    if size > bounds.grammar_bytes:
        raise InvalidRequest(
            f"{param}: the grammar for this JSON schema would be {size} bytes; "
            f"MODELPORT_MAX_GRAMMAR_BYTES allows {bounds.grammar_bytes}",
            param=param,
        )
    depth = deepest = 0
    for match in _GBNF_STRUCTURE.finditer(_GBNF_TERMINAL.sub("", grammar)):
        token = match.group(0)
        if token == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif token == ")":
            depth -= 1
        else:
            counts = [int(number) for number in match.groups() if number]
            if max(counts) > bounds.repetition:
                raise InvalidRequest(
                    f"{param}: the JSON schema asks for a repetition of {max(counts)} (a pattern's {token}?); "
                    f"MODELPORT_MAX_GRAMMAR_REPETITION allows {bounds.repetition}",
                    param=param,
                )
    if deepest > bounds.grammar_nesting:
        raise InvalidRequest(
            f"{param}: the grammar for this JSON schema nests {deepest} groups deep; "
            f"MODELPORT_MAX_GRAMMAR_NESTING allows {bounds.grammar_nesting}",
            param=param,
        )
