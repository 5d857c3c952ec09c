"""Cached input tokens, from each vendor's documented answer (whole and streamed) to the
usage record, its cost at the cache prices, `/v4/spend`, and each surface's own field,
read by the `openai` and `anthropic` SDKs with strict validation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2
import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI
from sqlalchemy import select

from modelport.store.tables import UsageRecord
from tests.conftest import ADMIN_KEY
from tests.vendors.conftest import deploy

INPUT, OUTPUT, CACHE_READ, CACHE_CREATION = 1e-6, 2e-6, 1e-7, 1.25e-6
QUESTION = [{"role": "user", "content": "Capital of France?"}]


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_TEST_KEY", "sk-ant-test-secret-0000")


@pytest.fixture(scope="module")
async def sdks(recorded_app: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient, Any, AsyncOpenAI, AsyncAnthropic]]:
    app, client, transport = recorded_app
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=60)
    # This anthropic SDK speaks through httpx2 (httpx's successor), which has the same ASGI transport.
    http2 = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), timeout=60)
    async with http, http2:
        yield (
            app,
            client,
            transport,
            AsyncOpenAI(
                base_url="http://modelport.test/v1",
                api_key=ADMIN_KEY,
                http_client=http,
                max_retries=0,
                _strict_response_validation=True,
            ),
            AsyncAnthropic(
                base_url="http://modelport.test",
                api_key=ADMIN_KEY,
                http_client=http2,
                max_retries=0,
                _strict_response_validation=True,
            ),
        )


def _name(fixture: str) -> str:
    """The model (and its upstream model) that answers with `fixture`."""
    return fixture.replace("/", "-").replace(".", "-")


async def _deployment(client: httpx.AsyncClient, transport: Any, vendor: str, fixture: str, **prices: float) -> str:
    """A model of `vendor` whose upstream answers with `fixture`; named after its upstream model."""
    upstream = _name(fixture)
    transport.answers[upstream] = (200, fixture)
    extra = {"api_key_env": "ANTHROPIC_TEST_KEY"} if vendor == "ANTHROPIC" else {}
    return await deploy(client, vendor=vendor, model=upstream, model_name=upstream, **extra, **prices)


async def _record(app: Any, deployment: str) -> UsageRecord:
    await app.state.usage.flush()
    async with app.state.sessions() as session:
        [record] = (
            (await session.execute(select(UsageRecord).where(UsageRecord.deployment_id == deployment))).scalars().all()
        )
    return record


async def _spend(client: httpx.AsyncClient, deployment: str) -> float:
    report = await client.get("/v4/spend")
    assert report.status_code == 200, report.text
    return float(report.json()["by_deployment"][deployment])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_anthropic_cache_reads_and_writes_are_counted_billed_and_returned(sdks: Any, stream: bool) -> None:
    app, client, transport, _openai, anthropic = sdks
    fixture = "documented/anthropic/stream_cached.sse" if stream else "documented/anthropic/message_cached.json"
    prices = {
        "input_cost_per_token": INPUT,
        "output_cost_per_token": OUTPUT,
        "cache_read_input_cost_per_token": CACHE_READ,
        "cache_creation_input_cost_per_token": CACHE_CREATION,
    }
    deployment = await _deployment(client, transport, "ANTHROPIC", fixture, **prices)
    model = _name(fixture)
    if stream:
        async with anthropic.messages.stream(model=model, max_tokens=50, messages=QUESTION) as events:
            message = await events.get_final_message()
    else:
        message = await anthropic.messages.create(model=model, max_tokens=50, messages=QUESTION)
    # Anthropic's own meaning: input_tokens is the part neither read from nor written to the cache.
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (20, 1200, 300)
    assert usage.output_tokens == 4

    record = await _record(app, deployment)
    assert (record.prompt_tokens, record.cached_prompt_tokens, record.cache_creation_tokens) == (1520, 1200, 300)
    expected = 20 * INPUT + 1200 * CACHE_READ + 300 * CACHE_CREATION + 4 * OUTPUT
    assert record.cost == pytest.approx(expected)
    assert await _spend(client, deployment) == pytest.approx(expected)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_openai_cached_tokens_are_counted_billed_and_returned(sdks: Any, stream: bool) -> None:
    app, client, transport, openai, _anthropic = sdks
    fixture = "documented/openai/chat_cached.sse" if stream else "documented/openai/chat_cached.json"
    prices = {"input_cost_per_token": INPUT, "output_cost_per_token": OUTPUT, "cache_read_input_cost_per_token": 5e-7}
    deployment = await _deployment(client, transport, "OPENAI", fixture, **prices)
    model = _name(fixture)
    if stream:
        chunks = [
            chunk
            async for chunk in await openai.chat.completions.create(
                model=model, messages=QUESTION, stream=True, stream_options={"include_usage": True}
            )
        ]
        usage = chunks[-1].usage
        assert transport.last_body()["stream_options"] == {"include_usage": True}
    else:
        usage = (await openai.chat.completions.create(model=model, messages=QUESTION)).usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert (usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens) == (1520, 1280)

    record = await _record(app, deployment)
    assert (record.prompt_tokens, record.cached_prompt_tokens, record.cache_creation_tokens) == (1520, 1280, 0)
    expected = 240 * INPUT + 1280 * 5e-7 + 4 * OUTPUT
    assert record.cost == pytest.approx(expected)
    assert await _spend(client, deployment) == pytest.approx(expected)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_gemini_cached_content_without_a_cache_price_costs_the_input_price(sdks: Any, stream: bool) -> None:
    app, client, transport, openai, _anthropic = sdks
    fixture = "documented/google/stream_cached.sse" if stream else "documented/google/generate_cached.json"
    prices = {"input_cost_per_token": INPUT, "output_cost_per_token": OUTPUT}
    deployment = await _deployment(client, transport, "GOOGLE", fixture, **prices)
    model = _name(fixture)
    if stream:
        chunks = [
            chunk
            async for chunk in await openai.chat.completions.create(
                model=model, messages=QUESTION, stream=True, stream_options={"include_usage": True}
            )
        ]
        usage = chunks[-1].usage
    else:
        usage = (await openai.chat.completions.create(model=model, messages=QUESTION)).usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert (usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens) == (1520, 1024)

    record = await _record(app, deployment)
    assert (record.prompt_tokens, record.cached_prompt_tokens, record.cache_creation_tokens) == (1520, 1024, 0)
    # No cache price set: the cached part costs what any input token costs.
    expected = 1520 * INPUT + 4 * OUTPUT
    assert record.cost == pytest.approx(expected)
    assert await _spend(client, deployment) == pytest.approx(expected)


async def test_an_answer_without_cache_counts_reports_zero_cached(sdks: Any) -> None:
    """A vendor that says nothing about caching (llama.cpp's server, a real answer of it):
    the surfaces' fields are 0, never absent."""
    _app, client, transport, openai, anthropic = sdks
    await _deployment(client, transport, "OPENAI", "recorded/llama-cpp-server/chat.json")
    answer = await openai.chat.completions.create(model="recorded-llama-cpp-server-chat-json", messages=QUESTION)
    assert answer.usage is not None and answer.usage.prompt_tokens_details is not None
    assert answer.usage.prompt_tokens_details.cached_tokens == 0
    message = await anthropic.messages.create(
        model="recorded-llama-cpp-server-chat-json", max_tokens=20, messages=QUESTION
    )
    assert (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens) == (0, 0)
    assert message.usage.input_tokens == answer.usage.prompt_tokens
