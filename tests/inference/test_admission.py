"""What admission reserves (issue 21, finding 4): everything that becomes prompt, and a
prompt the gateway rendered, before it is sent. And the render pool's fair shares
(finding 8), on its own."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from modelport.errors import RateLimited
from modelport.generation import GenerationCall, Sampling
from modelport.inference.admission import LimitGate
from modelport.limits.base import Limiter, LimitExceeded
from modelport.limits.memory import MemoryLimiter
from modelport.limits.pricing import prompt_token_bound, rendered_prompt_token_bound
from modelport.limits.redis import RedisLimiter
from modelport.principal import Limits, Principal
from modelport.prompts.render_pool import RenderPool
from modelport.vendors.base import Target
from tests.redis_server import OwnRedis

HI = ({"role": "user", "content": "hi"},)


def _call(messages: tuple[dict[str, Any], ...] = HI, **fields: Any) -> GenerationCall:
    return GenerationCall(sampling=Sampling(temperature=0.0, max_tokens=5), messages=messages, **fields)


def test_tools_response_format_kwargs_and_tool_calls_are_reserved_as_prompt() -> None:
    plain = prompt_token_bound(_call())
    # 3.1 MB of tools were reserved as 28 tokens: they are prompt, written by the template.
    tools = tuple(
        {"type": "function", "function": {"name": f"f{i}", "description": "x" * 1000, "parameters": {}}}
        for i in range(3000)
    )
    assert prompt_token_bound(_call(tools=tools)) >= 3_000_000 + plain
    schema = {"type": "json_schema", "json_schema": {"name": "n", "schema": {"description": "y" * 50_000}}}
    assert prompt_token_bound(_call(response_format=schema)) >= 50_000 + plain
    assert prompt_token_bound(_call(chat_template_kwargs={"document": "z" * 50_000})) >= 50_000 + plain
    calling = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "a" * 20_000}}],
    }
    assert prompt_token_bound(_call((calling,))) >= 20_000


def test_one_token_a_byte_bounds_text_that_tokenizes_badly() -> None:
    # Emoji are four bytes and often more than one token each: still within the bound.
    assert prompt_token_bound(_call(({"role": "user", "content": "\U0001f600" * 1000},))) >= 4000


PRICE = 1e-6  # per prompt token
BUDGET = 0.001
TARGET = Target(
    deployment_id="d",
    model_type="CHAT_COMPLETION",
    model_vendor="LLMENGINE",
    parameters={"input_cost_per_token": PRICE, "output_cost_per_token": PRICE},
)


def _principal(key_id: str, **limits: Any) -> Principal:
    limited = Limits(**limits)
    return Principal(
        identity_id="i", identity_type="user", account_id="a", role="member", key_id=key_id, key_limits=limited
    )


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    # Only the Redis cases start (and need) a Redis server; the in-process ones never do.
    made: Limiter = (
        MemoryLimiter() if request.param == "memory" else RedisLimiter(request.getfixturevalue("own_redis").url)
    )
    yield made
    await made.aclose()


async def test_a_rendered_prompt_is_reserved_before_it_is_sent_and_given_back_at_settlement(
    limiter: Limiter,
) -> None:
    gate = LimitGate(limiter)
    principal = _principal(f"k-{uuid.uuid4().hex}", max_budget=BUDGET)
    rendered = rendered_prompt_token_bound("lorem ipsum " * 2600)  # 31,216 tokens at most: $0.031
    first = await gate.admit(principal, TARGET, _call(), "r1")
    second = await gate.admit(principal, TARGET, _call(), "r2")
    assert first is not None and second is not None  # the messages alone cost little
    await gate.reserve_rendered(first, TARGET, rendered)
    assert first.top_ups and first.top_ups[0].demand.cost == pytest.approx((rendered - 18) * PRICE)
    # The first prompt took the budget: the second is refused before it is sent.
    with pytest.raises(LimitExceeded) as refused:
        await gate.reserve_rendered(second, TARGET, rendered)
    assert refused.value.limit == "max_budget"
    # A prompt no larger than reserved takes nothing more.
    await gate.reserve_rendered(first, TARGET, rendered)
    assert len(first.top_ups) == 1
    real = 7800 * PRICE + 5 * PRICE
    gate.settle(first, tokens=7805, cost=real)
    gate.settle(second, tokens=0, cost=0.0)
    await gate.drain()
    # Spend is what the first really cost: every reservation, top-ups included, was
    # given back; within the bound of the budget and one request's reservation.
    assert real < BUDGET + first.demand.cost + first.top_ups[0].demand.cost
    with pytest.raises(LimitExceeded) as spent:
        await gate.admit(principal, TARGET, _call(), "r3")
    assert f"spent and reserved ${real:.6f}" in spent.value.detail


async def test_tpm_counts_the_rendered_prompt_too(limiter: Limiter) -> None:
    gate = LimitGate(limiter)
    principal = _principal(f"k-{uuid.uuid4().hex}", tpm_limit=1000)
    assert gate.counts_prompt(principal, TARGET)
    admission = await gate.admit(principal, TARGET, _call(), "r1")
    await gate.reserve_rendered(admission, TARGET, 5000)
    with pytest.raises(LimitExceeded) as refused:
        await gate.admit(principal, TARGET, _call(), "r2")
    assert refused.value.limit == "tpm_limit"
    # A key that counts neither tokens nor cost needs no render to reserve.
    assert not gate.counts_prompt(_principal("k", rpm_limit=5), TARGET)


async def test_an_account_over_its_render_share_waits_then_gets_429_naming_the_setting() -> None:
    pool = RenderPool(threads=4, per_account=2, queue=64)
    release = threading.Event()

    def slow() -> str:
        release.wait(10)
        return "slow"

    try:
        held = [asyncio.create_task(pool.run("flood", slow)) for _ in range(2)]
        await asyncio.sleep(0)
        # The third render of that account waits for a slot, then is refused...
        with pytest.raises(RateLimited) as refused:
            await pool.run("flood", lambda: "third")
        assert "template_renders_per_account" in refused.value.detail
        assert refused.value.headers() == {"Retry-After": "1"}
        # ...while another account renders at once.
        assert await asyncio.wait_for(pool.run("other", lambda: "other"), 5) == "other"
        # A render whose request went away keeps its slot until its thread is done.
        held[0].cancel()
        with pytest.raises(RateLimited):
            await pool.run("flood", lambda: "still full")
        release.set()
        assert await held[1] == "slow"
        assert await asyncio.wait_for(pool.run("flood", lambda: "next"), 5) == "next"
    finally:
        release.set()
        pool.shutdown()


async def test_the_render_queue_is_bounded_for_all_accounts_together() -> None:
    pool = RenderPool(threads=1, per_account=2, queue=3)
    release = threading.Event()

    def held() -> str:
        release.wait(10)
        return "done"

    try:
        waiting = [asyncio.create_task(pool.run(account, held)) for account in ("a", "b", "c")]
        await asyncio.sleep(0)
        with pytest.raises(RateLimited) as refused:
            await pool.run("d", lambda: "d")
        assert "template_render_queue" in refused.value.detail
        release.set()
        assert await asyncio.gather(*waiting) == ["done"] * 3
    finally:
        release.set()
        pool.shutdown()
