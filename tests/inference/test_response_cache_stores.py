"""The response cache's stores and its key (inference/response_cache.py): the in-process
LRU and the Redis one (against the real Redis at 127.0.0.1:6379, under a prefix of its
own) keep bytes within their bound by dropping the least recently used, forget an answer
after its TTL, and the Redis one answers a miss, quickly, when Redis cannot be reached."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from modelport.generation import GenerationCall, Sampling, TokenLogprob, VendorPassthrough
from modelport.inference.metering import Generated, joined
from modelport.inference.response_cache import (
    ENTRY_OVERHEAD_BYTES,
    MemoryStore,
    RedisStore,
    cache_key,
    decode,
    deterministic,
    encode,
    keepable,
    replay,
    ttl_for,
)
from modelport.principal import IdentityType, Principal, Role
from tests.prerequisites import unavailable
from tests.servers import free_port

REDIS_URL = "redis://127.0.0.1:6379/0"


def _call(prompt: str = "hi", **sampling: object) -> GenerationCall:
    return GenerationCall(
        sampling=Sampling(**{"temperature": 0.0, "max_tokens": 5, **sampling}),  # type: ignore[arg-type]
        messages=({"role": "user", "content": prompt},),
    )


def _principal(account: str = "a", key_ttl: int | None = None) -> Principal:
    return Principal("i", IdentityType.SERVICE_ACCOUNT, account, Role.MEMBER, cache_ttl_seconds=key_ttl)


# --- the key and what is kept -------------------------------------------------------------


def test_the_key_differs_by_account_deployment_and_call_and_not_by_key_order() -> None:
    base = cache_key("a", "d", _call())
    assert cache_key("b", "d", _call()) != base
    assert cache_key("a", "e", _call()) != base
    assert cache_key("a", "d", _call("ho")) != base
    reordered = GenerationCall(
        sampling=Sampling(max_tokens=5, temperature=0.0), messages=({"content": "hi", "role": "user"},)
    )
    assert cache_key("a", "d", reordered) == base


# A value other than `_call()`'s for every field of the call, and of its sampling.
_OTHER_CALL = {
    "messages": ({"role": "user", "content": "ho"},), "prompt": "hi", "prompt_token_ids": (1, 2), "echo": True,
    "chat_template": "{{ messages }}", "chat_template_kwargs": {"x": 1}, "tools": ({"type": "function"},),
    "tool_choice": "auto", "response_format": {"type": "json_object"}, "seed": 3, "logit_bias": {"1": 2.0}, "n": 2,
    "hints": {"verbosity": "low"}, "response_token_bound": 9,
    "passthrough": VendorPassthrough(vendor="ANTHROPIC", body={"thinking": {}}), "content_needs": {"audio": "x"},
}  # fmt: skip
_OTHER_SAMPLING = {
    "temperature": 0.5, "max_tokens": 6, "top_p": 0.9, "top_k": 3, "frequency_penalty": 0.1,
    "presence_penalty": 0.1, "stop_sequences": ("x",), "logprobs": True, "top_logprobs": 2,
    "reasoning_effort": "low", "seed": 1, "logit_bias": ((1, 2.0),), "grammar": "root ::= x",
}  # fmt: skip


def test_every_field_of_the_call_is_part_of_the_key() -> None:
    assert set(_OTHER_CALL) | {"sampling"} == {field.name for field in dataclasses.fields(GenerationCall)}
    assert set(_OTHER_SAMPLING) == {field.name for field in dataclasses.fields(Sampling)}
    base = _call()
    keys = {cache_key("a", "d", base)}
    keys |= {cache_key("a", "d", dataclasses.replace(base, **{name: value})) for name, value in _OTHER_CALL.items()}
    keys |= {
        cache_key("a", "d", dataclasses.replace(base, sampling=dataclasses.replace(base.sampling, **{name: value})))
        for name, value in _OTHER_SAMPLING.items()
    }
    assert len(keys) == 1 + len(_OTHER_CALL) + len(_OTHER_SAMPLING)


def test_only_a_deterministic_single_answer_is_cached() -> None:
    assert deterministic(_call())
    assert not deterministic(_call(temperature=0.5))
    assert deterministic(GenerationCall(sampling=Sampling(temperature=0.5, max_tokens=5), seed=3))
    assert not deterministic(GenerationCall(sampling=Sampling(temperature=0.0, max_tokens=5), n=2))


def test_the_keys_setting_wins_over_the_models() -> None:
    assert ttl_for(_principal(key_ttl=60), {"cache_ttl_seconds": 600}) == 60
    assert ttl_for(_principal(), {"cache_ttl_seconds": 600}) == 600
    assert ttl_for(_principal(), {}) is None
    assert ttl_for(_principal(), {"cache_ttl_seconds": 0}) is None  # stored out of bounds: off


async def test_a_stream_is_kept_whole_and_replayed_as_a_stream() -> None:
    entry = TokenLogprob(token="a", logprob=-0.1, bytes=[97])
    pieces = [
        Generated(text="a", logprobs=[entry]),
        Generated(text="b", tool_calls=[{"index": 0, "id": "t", "function": {"name": "f", "arguments": "{"}}]),
        Generated(text="", tool_calls=[{"index": 0, "function": {"arguments": "}"}}]),
        Generated(text="", finish_reason="tool_calls", prompt_tokens=3, response_tokens=2),
    ]
    whole = joined(pieces)
    assert keepable(whole)
    back = decode(encode(whole))
    assert (back.text, back.logprobs, back.finish_reason) == ("ab", [entry], "tool_calls")
    assert back.tool_calls == [
        {"index": 0, "id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]
    replayed = [piece async for piece in replay(back)]
    assert [piece.text for piece in replayed] == ["ab", ""]
    assert replayed[-1].finish_reason == "tool_calls" and replayed[-1].response_tokens == 2
    assert replayed[0].finish_reason is None
    assert not keepable(joined(pieces[:-1]))  # no finish reason: not kept
    cut = Generated(text="", finish_reason="stop", vendor_finished=False)
    assert not keepable(joined([pieces[0], cut]))  # the vendor never said it finished


async def test_a_replayed_stream_carries_every_field_of_the_answer() -> None:
    entry = TokenLogprob(token="a", logprob=-0.1, bytes=[97])
    answer = Generated(
        text="a", logprobs=[entry], finish_reason="tool_calls", prompt_tokens=3, response_tokens=2,
        tool_calls=[{"index": 0, "id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        stop_sequence="x", estimated=True, reasoning=[{"index": 0, "type": "thinking", "thinking": "hm"}],
        dropped=("seed",), cached_prompt_tokens=1, cache_creation_tokens=1, cost=0.5, vendor_finished=True,
        cache="hit",
    )  # fmt: skip
    expected = dataclasses.replace(answer)
    first, last = [piece async for piece in replay(answer)]
    content = ("text", "logprobs", "tool_calls", "reasoning")
    for field in dataclasses.fields(Generated):
        if field.name in content:
            assert getattr(first, field.name) == getattr(expected, field.name), field.name
        elif field.name != "prompt_counts":
            assert getattr(last, field.name) == getattr(expected, field.name), field.name
    assert (last.text, last.logprobs, last.tool_calls, last.reasoning) == ("", [], None, None)
    assert first.finish_reason is None and first.cost is None and first.prompt_counts is not None
    assert (first.prompt_counts.tokens, first.prompt_counts.cached, first.prompt_counts.created) == (3, 1, 1)


def test_an_entry_of_another_format_is_not_read_as_an_answer() -> None:
    with pytest.raises(ValueError):
        decode(b'{"text": "kept by an earlier version", "logprobs": []}')
    with pytest.raises(ValueError):
        decode(b'[1, "a format of the future"]')


# --- in process ---------------------------------------------------------------------------


async def test_the_memory_store_evicts_the_least_recently_used_past_its_bytes() -> None:
    entry = 100 + ENTRY_OVERHEAD_BYTES  # an answer of 100 bytes, and what keeping it costs
    store = MemoryStore(max_bytes=3 * entry, max_entry_bytes=200)
    for name in ("a", "b", "c"):
        await store.put(name, name.encode() * 100, 60)
    assert store.bytes == 3 * entry
    assert await store.get("a") == b"a" * 100  # a is now the most recently used
    await store.put("d", b"d" * 100, 60)
    assert await store.get("b") is None  # the least recently used went
    assert [await store.get(name) is not None for name in ("a", "c", "d")] == [True, True, True]
    assert store.bytes == 3 * entry
    await store.put("huge", b"x" * 201, 60)  # over one entry's bound: not kept, nothing dropped
    assert await store.get("huge") is None and store.bytes == 3 * entry


async def test_the_memory_stores_bound_is_on_the_memory_it_holds() -> None:
    """What the store counts is what its entries really take (answers as `encode` makes
    them, keys as the cache makes them): orjson's output once held 4 KiB for a 250-byte
    answer, so 64 MiB of counted answers was about a gigabyte."""
    answer = Generated(
        text="Hello! How can I help you today?", finish_reason="stop", prompt_tokens=9, response_tokens=8
    )
    store = MemoryStore(max_bytes=1 << 30)
    keys = [hashlib.sha256(str(index).encode()).hexdigest() for index in range(2000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for key in keys:
            await store.put(key, encode(answer), 60)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # The keys were made before: they are counted by the store, not traced here.
    assert held <= store.bytes, (held, store.bytes)
    assert store.bytes <= 2 * held  # and not wildly more


async def test_the_memory_store_forgets_an_answer_after_its_ttl() -> None:
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    await store.put("k", b"answer", 10)
    now[0] = 9.9
    assert await store.get("k") == b"answer"
    now[0] = 10.0
    assert await store.get("k") is None
    assert store.bytes == 0


# --- in Redis -----------------------------------------------------------------------------


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    prefix = f"modelport-test:{{rc-{uuid.uuid4().hex[:8]}}}:"
    client = Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except OSError as exc:
        unavailable("REDIS", f"no Redis at {REDIS_URL} ({exc})")
    try:
        yield prefix
    finally:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_the_redis_store_evicts_the_least_recently_used_past_its_bytes(redis_prefix: str) -> None:
    store = RedisStore(REDIS_URL, max_bytes=300, max_entry_bytes=200, timeout=2, prefix=redis_prefix)
    try:
        for name in ("a", "b", "c"):
            await store.put(name, name.encode() * 100, 60)
        assert await store.get("a") == b"a" * 100
        await store.put("d", b"d" * 100, 60)
        assert await store.get("b") is None
        assert [await store.get(name) for name in ("a", "c", "d")] == [b"a" * 100, b"c" * 100, b"d" * 100]
        await store.put("huge", b"x" * 201, 60)
        assert await store.get("huge") is None
        raw = Redis.from_url(REDIS_URL)
        assert int(await raw.get(redis_prefix + "bytes")) == 300
        assert await raw.zcard(redis_prefix + "lru") == 3
        assert 0 < await raw.pttl(redis_prefix + "entry:a") <= 60_000
        # Writing a key again replaces its bytes, not adds to them.
        await store.put("a", b"A" * 50, 60)
        assert int(await raw.get(redis_prefix + "bytes")) == 250
        await raw.aclose()
    finally:
        await store.aclose()


async def test_the_redis_store_forgets_an_answer_after_its_ttl(redis_prefix: str) -> None:
    store = RedisStore(REDIS_URL, timeout=2, prefix=redis_prefix)
    raw = Redis.from_url(REDIS_URL)
    try:
        await store.put("k", b"answer", 1)
        assert await store.get("k") == b"answer"
        deadline = time.monotonic() + 30
        while await raw.exists(redis_prefix + "entry:k"):  # Redis expires it after a second
            assert time.monotonic() < deadline, "Redis kept the entry past its TTL"
            await asyncio.sleep(0.1)
        assert await store.get("k") is None
        # Its bytes are given back once a lookup found it gone.
        assert int(await raw.get(redis_prefix + "bytes")) == 0
        assert await raw.zcard(redis_prefix + "lru") == 0
    finally:
        await raw.aclose()
        await store.aclose()


async def test_an_unreachable_redis_is_a_miss_never_an_error_or_a_hang() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.25, retry_seconds=60)
    try:
        await asyncio.wait_for(store.put("k", b"v", 60), timeout=10)
        assert await asyncio.wait_for(store.get("k"), timeout=10) is None
    finally:
        await store.aclose()
