"""The exact response cache (issue 24, item 8; SPEC 10) through the real application, on
SQLite and PostgreSQL, in front of an upstream answered in-process that counts its calls:
a hit is an answer the upstream was not asked for.

The stores themselves (LRU by bytes, TTL, Redis's eviction, Redis unreachable) are
tested in tests/inference/test_response_cache_stores.py."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from modelport.inference.calls import V4_WINDOW
from modelport.inference.response_cache import MemoryStore
from modelport.inference.service import TextRequest
from modelport.schemas.inference import ChatCompletionRequest
from modelport.store.tables import UsageRecord
from tests.conftest import ADMIN_KEY, in_process, own_database, sqlite_settings

IN_PRICE, OUT_PRICE, HIT_PRICE = 0.001, 0.002, 0.0005
# Every answer: 10 prompt tokens, 5 generated.
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
GENERATED_COST = 10 * IN_PRICE + 5 * OUT_PRICE
TTL = 3600


@dataclass
class Upstream:
    """An OpenAI-compatible upstream that answers `echo: <last message>` and counts the
    calls per prompt; a prompt starting with `fail` fails its first call."""

    calls: Counter[str]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        prompt = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
        self.calls[prompt] += 1
        if prompt.startswith("fail") and self.calls[prompt] == 1:
            return httpx.Response(500, json={"error": {"message": "upstream broke"}})
        text = f"echo: {prompt}"
        if body.get("stream"):
            events = [
                {"choices": [{"index": 0, "delta": {"content": "echo: "}, "finish_reason": None}]},
                {"choices": [{"index": 0, "delta": {"content": prompt}, "finish_reason": None}]},
                {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                {"choices": [], "usage": USAGE},
            ]
            frames = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
            return httpx.Response(200, content=frames.encode(), headers={"content-type": "text/event-stream"})
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        return httpx.Response(
            200,
            json={
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": "up",
                "choices": [choice],
                "usage": USAGE,
            },
        )


@dataclass
class Served:
    app: FastAPI
    client: httpx.AsyncClient
    upstream: Upstream


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    data = tmp_path_factory.mktemp("response-cache")
    upstream = Upstream(Counter())
    async with own_database(request.param, data) as url:
        settings = sqlite_settings(
            data, database_url=url, upstream_attempts=1, usage_flush_seconds=60, auth_failures_per_minute=0
        )
        async with in_process(settings, upstream=httpx.MockTransport(upstream)) as (app, client):
            yield Served(app, client, upstream)


async def _model(client: httpx.AsyncClient, vendor: str = "OPENAI", **parameters: Any) -> tuple[str, str]:
    """(name, deployment id) of a new priced chat model on the upstream, with `parameters`
    added to its model_creation_parameters."""
    name = f"cached-{uuid.uuid4().hex[:8]}"
    created = await client.post(
        "/v4/models",
        json={"name": name, "model_type": "CHAT_COMPLETION", "model_vendor": vendor,
              "model_creation_parameters": {"base_url": "http://upstream.test/v1", "model": "up",
                                            "input_cost_per_token": IN_PRICE, "output_cost_per_token": OUT_PRICE,
                                            **parameters}},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    deployment = await client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "d"})
    assert deployment.status_code == 200, deployment.text
    return name, deployment.json()["id"]


def _prompt() -> str:
    return f"question {uuid.uuid4().hex[:8]}"


async def _v4(
    client: httpx.AsyncClient, deployment: str, prompt: str, headers: dict[str, str] | None = None, **body: Any
) -> httpx.Response:
    sent = {"chat_history": [], "prompt": prompt, "temperature": 0, "max_tokens": 5, **body}
    return await client.post(f"/v4/models/{deployment}/chat-completions", json=sent, headers=headers)


async def _v1(client: httpx.AsyncClient, model: str, prompt: str, **body: Any) -> httpx.Response:
    sent = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0, **body}
    return await client.post("/v1/chat/completions", json=sent)


def _streamed_text(answer: httpx.Response) -> str:
    """The content of an OpenAI chat stream; it must end with [DONE]."""
    lines = [line.removeprefix("data: ") for line in answer.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]", answer.text
    chunks = [json.loads(line) for line in lines[:-1]]
    reasons = [c["choices"][0].get("finish_reason") for c in chunks if c["choices"]]
    assert [reason for reason in reasons if reason] == ["stop"], answer.text
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


async def _usage(app: FastAPI, deployment: str) -> list[tuple[int, int, float, int]]:
    """(prompt tokens, response tokens, cost, status) of each usage record, oldest first."""
    await app.state.usage.flush()
    async with app.state.sessions() as session:
        rows = await session.execute(
            select(UsageRecord.prompt_tokens, UsageRecord.response_tokens, UsageRecord.cost, UsageRecord.status)
            .where(UsageRecord.deployment_id == deployment)
            .order_by(UsageRecord.id)
        )
    return [(p, r, round(c, 9), s) for p, r, c, s in rows.all()]


async def _key(client: httpx.AsyncClient, **fields: Any) -> tuple[str, str]:
    created = await client.post("/v4/api-keys", json={"role": "member", **fields})
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["key"]


# --- hit, miss, bypass --------------------------------------------------------------------


async def test_a_repeated_request_is_a_hit_without_an_upstream_call_and_no_cache_bypasses_it(
    served: Served,
) -> None:
    _, deployment = await _model(served.client, cache_ttl_seconds=TTL)
    prompt = _prompt()
    first = await _v4(served.client, deployment, prompt)
    assert first.status_code == 200, first.text
    assert first.headers["x-modelport-cache"] == "miss"
    second = await _v4(served.client, deployment, prompt)
    assert second.status_code == 200, second.text
    assert second.headers["x-modelport-cache"] == "hit"
    assert second.json() == first.json()  # the same body, usage included
    assert served.upstream.calls[prompt] == 1

    fresh = await _v4(served.client, deployment, prompt, headers={"cache-control": "no-cache"})
    assert fresh.headers["x-modelport-cache"] == "bypass"
    assert fresh.json() == first.json()
    assert served.upstream.calls[prompt] == 2


async def test_a_model_without_the_setting_caches_nothing(served: Served) -> None:
    _, deployment = await _model(served.client)
    prompt = _prompt()
    for _ in range(2):
        answer = await _v4(served.client, deployment, prompt)
        assert answer.status_code == 200 and "x-modelport-cache" not in answer.headers, answer.headers
    assert served.upstream.calls[prompt] == 2


async def test_a_non_deterministic_request_is_never_cached_and_a_seeded_one_is(served: Served) -> None:
    name, deployment = await _model(served.client, cache_ttl_seconds=TTL)
    warm = _prompt()
    for _ in range(2):
        answer = await _v4(served.client, deployment, warm, temperature=0.7)
        assert answer.status_code == 200 and "x-modelport-cache" not in answer.headers, answer.headers
    assert served.upstream.calls[warm] == 2

    seeded = _prompt()
    states = [(await _v1(served.client, name, seeded, temperature=0.9, seed=7)).headers["x-modelport-cache"]
              for _ in range(2)]  # fmt: skip
    assert states == ["miss", "hit"] and served.upstream.calls[seeded] == 1
    several = _prompt()
    for _ in range(2):  # two choices are not one answer to replay
        answer = await _v1(served.client, name, several, n=2)
        assert "x-modelport-cache" not in answer.headers, answer.text


# --- streams ------------------------------------------------------------------------------


async def test_a_hit_streams_from_a_whole_answer_and_a_whole_answer_comes_from_a_stream(served: Served) -> None:
    name, _ = await _model(served.client, cache_ttl_seconds=TTL)
    whole_first = _prompt()
    whole = await _v1(served.client, name, whole_first)
    assert whole.headers["x-modelport-cache"] == "miss"
    streamed = await _v1(served.client, name, whole_first, stream=True, stream_options={"include_usage": True})
    assert streamed.status_code == 200, streamed.text
    assert streamed.headers["x-modelport-cache"] == "hit"
    assert _streamed_text(streamed) == whole.json()["choices"][0]["message"]["content"] == f"echo: {whole_first}"
    usage = [json.loads(line[6:]) for line in streamed.text.splitlines() if '"usage"' in line][-1]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (10, 5)  # what the generation reported
    assert served.upstream.calls[whole_first] == 1

    stream_first = _prompt()
    miss = await _v1(served.client, name, stream_first, stream=True)
    assert miss.headers["x-modelport-cache"] == "miss"
    assert _streamed_text(miss) == f"echo: {stream_first}"
    hit = await _v1(served.client, name, stream_first)
    assert hit.headers["x-modelport-cache"] == "hit"
    assert hit.json()["choices"][0]["message"]["content"] == f"echo: {stream_first}"
    assert hit.json()["choices"][0]["finish_reason"] == "stop"
    assert hit.json()["usage"]["completion_tokens"] == 5
    assert served.upstream.calls[stream_first] == 1


async def test_every_text_surface_answers_from_the_cache(served: Served) -> None:
    """/v1/completions, /v1/messages and /v1/responses go through the same hook (an OTHER
    deployment: an OPENAI one would be passed /v1/responses whole, uncached)."""
    name, _ = await _model(served.client, "OTHER", cache_ttl_seconds=TTL)
    surfaces = {
        "/v1/completions": lambda p: {"model": name, "prompt": p, "temperature": 0, "max_tokens": 5},
        "/v1/messages": lambda p: {"model": name, "max_tokens": 5, "temperature": 0,
                                   "messages": [{"role": "user", "content": p}]},
        "/v1/responses": lambda p: {"model": name, "input": p, "temperature": 0, "store": False},
    }  # fmt: skip
    for path, body in surfaces.items():
        prompt = _prompt()
        first = await served.client.post(path, json=body(prompt))
        assert first.status_code == 200, (path, first.text)
        streamed = await served.client.post(path, json={**body(prompt), "stream": True})
        assert streamed.status_code == 200, (path, streamed.text)
        assert (first.headers["x-modelport-cache"], streamed.headers["x-modelport-cache"]) == ("miss", "hit"), path
        assert prompt in streamed.text and "event: error" not in streamed.text, (path, streamed.text)
        assert served.upstream.calls[prompt] == 1, path


# --- isolation ----------------------------------------------------------------------------


async def test_equal_bodies_written_differently_hit_and_different_ones_miss(served: Served) -> None:
    name, _ = await _model(served.client, cache_ttl_seconds=TTL)
    twin, _ = await _model(served.client, cache_ttl_seconds=TTL)  # the same settings: only the deployment differs
    prompt = _prompt()
    compact = json.dumps({"model": name, "temperature": 0, "messages": [{"role": "user", "content": prompt}]})
    spaced = (
        '{ "messages" : [ { "content" : ' + json.dumps(prompt) + ' , "role" : "user" } ] ,\n'
        '  "temperature" : 0.0, "model": "' + name + '" }'
    )
    headers = {"content-type": "application/json"}
    first = await served.client.post("/v1/chat/completions", content=compact, headers=headers)
    second = await served.client.post("/v1/chat/completions", content=spaced, headers=headers)
    assert (first.headers["x-modelport-cache"], second.headers["x-modelport-cache"]) == ("miss", "hit")
    assert served.upstream.calls[prompt] == 1

    assert (await _v1(served.client, name, prompt, max_tokens=6)).headers["x-modelport-cache"] == "miss"
    assert (await _v1(served.client, twin, prompt)).headers["x-modelport-cache"] == "miss"
    assert served.upstream.calls[prompt] == 3


async def test_another_account_never_reads_this_accounts_answers(served: Served) -> None:
    prompt = _prompt()
    name, _ = await _model(served.client, cache_ttl_seconds=TTL)
    assert (await _v1(served.client, name, prompt)).headers["x-modelport-cache"] == "miss"
    account = await served.client.post("/accounts", json={"account_name": f"other-{uuid.uuid4().hex[:8]}"})
    assert account.status_code == 200, account.text
    other = {"x-selected-account-id": account.json()["account_id"]}
    # The same model, by name, in the other account: its own entry.
    created = await served.client.post(
        "/v4/models",
        headers=other,
        json={"name": name, "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI",
              "model_creation_parameters": {"base_url": "http://upstream.test/v1", "model": "up",
                                            "cache_ttl_seconds": TTL}},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    made = await served.client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "d"}, headers=other)
    assert made.status_code == 200, made.text
    sent = {"model": name, "messages": [{"role": "user", "content": prompt}], "temperature": 0}
    answers = [await served.client.post("/v1/chat/completions", json=sent, headers=other) for _ in range(2)]
    assert [answer.headers["x-modelport-cache"] for answer in answers] == ["miss", "hit"]
    assert served.upstream.calls[prompt] == 2


# --- what is never kept -------------------------------------------------------------------


async def test_an_error_is_never_cached(served: Served) -> None:
    _, deployment = await _model(served.client, cache_ttl_seconds=TTL)
    prompt = f"fail {uuid.uuid4().hex[:8]}"
    failed = await _v4(served.client, deployment, prompt)
    assert failed.status_code >= 500, failed.text
    answered = await _v4(served.client, deployment, prompt)
    assert answered.status_code == 200 and answered.headers["x-modelport-cache"] == "miss", answered.text
    assert served.upstream.calls[prompt] == 2
    assert (await _v4(served.client, deployment, prompt)).headers["x-modelport-cache"] == "hit"


async def test_a_stream_its_client_abandoned_is_never_cached(served: Served) -> None:
    """The service's stream closed after its first piece, as the HTTP layer closes it when
    the client goes away."""
    _, deployment = await _model(served.client, cache_ttl_seconds=TTL)
    prompt = _prompt()
    principal = await served.app.state.catalogue.access.principal(ADMIN_KEY, None)
    request = ChatCompletionRequest(chat_history=[], prompt=prompt, temperature=0, max_tokens=5, stream=True)
    text = TextRequest(request, ({"role": "user", "content": prompt},), window=V4_WINDOW)
    pieces = await served.app.state.service.generate_stream_at(principal, deployment, text)
    assert pieces.cache == "miss"
    first = await anext(pieces)
    assert first.text
    await pieces.aclose()
    assert (await _v4(served.client, deployment, prompt)).headers["x-modelport-cache"] == "miss"
    assert served.upstream.calls[prompt] == 2


# --- usage, price and limits --------------------------------------------------------------


async def test_a_hit_is_recorded_with_no_tokens_at_its_own_price(served: Served) -> None:
    _, deployment = await _model(served.client, cache_ttl_seconds=TTL, cache_hit_cost=HIT_PRICE)
    prompt = _prompt()
    miss = await _v4(served.client, deployment, prompt)
    hit = await _v4(served.client, deployment, prompt)
    assert float(miss.headers["x-modelport-cost"]) == pytest.approx(GENERATED_COST)
    assert float(hit.headers["x-modelport-cost"]) == pytest.approx(HIT_PRICE)
    assert await _usage(served.app, deployment) == [(10, 5, round(GENERATED_COST, 9), 200), (0, 0, HIT_PRICE, 200)]


async def test_hits_count_as_requests_for_rpm_but_never_against_tpm(served: Served) -> None:
    _, deployment = await _model(served.client, cache_ttl_seconds=TTL)
    # 40 tokens a minute: a request is let in while the minute holds fewer. The miss
    # uses 15; 20 hits would be 300 more if they counted, and the last request refused.
    _, tpm_key = await _key(served.client, tpm_limit=40)
    prompt = _prompt()
    as_tpm_key = {"x-api-key": tpm_key}
    assert (await _v4(served.client, deployment, prompt, headers=as_tpm_key)).headers["x-modelport-cache"] == "miss"
    for _ in range(20):
        hit = await _v4(served.client, deployment, prompt, headers=as_tpm_key)
        assert hit.status_code == 200 and hit.headers["x-modelport-cache"] == "hit", hit.text
    assert served.upstream.calls[prompt] == 1
    fresh = await _v4(served.client, deployment, _prompt(), headers=as_tpm_key)
    assert fresh.status_code == 200, fresh.text  # the hits left the window as the miss left it

    _, rpm_key = await _key(served.client, rpm_limit=3)
    as_rpm_key = {"x-api-key": rpm_key}
    statuses = [(await _v4(served.client, deployment, prompt, headers=as_rpm_key)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


# --- the key's setting --------------------------------------------------------------------


async def test_a_keys_setting_turns_the_cache_on_and_is_shown_and_changed_like_its_limits(served: Served) -> None:
    _, deployment = await _model(served.client)  # the model caches nothing
    key_id, key = await _key(served.client, cache_ttl_seconds=600)
    listed = {item["id"]: item for item in (await served.client.get("/v4/api-keys")).json()}
    assert listed[key_id]["cache_ttl_seconds"] == 600
    prompt = _prompt()
    as_key = {"x-api-key": key}
    states = [(await _v4(served.client, deployment, prompt, headers=as_key)).headers.get("x-modelport-cache")
              for _ in range(2)]  # fmt: skip
    assert states == ["miss", "hit"]
    # Another key of the account with no setting: the model's (none) applies to it.
    assert "x-modelport-cache" not in (await _v4(served.client, deployment, prompt)).headers

    cleared = await served.client.patch(f"/v4/api-keys/{key_id}", json={"cache_ttl_seconds": None})
    assert cleared.status_code == 200 and cleared.json()["cache_ttl_seconds"] is None, cleared.text
    # The audit log keeps the change, as it keeps the limits'.
    events = (await served.client.get("/v4/audit-events", params={"object_id": key_id})).json()["items"]
    changes = [(event["before"], event["after"]) for event in events if event["action"] == "update"]
    assert ({"cache_ttl_seconds": 600}, {"cache_ttl_seconds": None}) in changes, events
    created = [event["after"] for event in events if event["action"] == "create"]
    assert created and created[0]["cache_ttl_seconds"] == 600, events


@pytest.mark.parametrize("value", [0, -1, 30 * 86400 + 1, "a day", 1.5])
async def test_a_ttl_out_of_bounds_is_a_422_naming_the_field(served: Served, value: object) -> None:
    created = await served.client.post("/v4/api-keys", json={"role": "member", "cache_ttl_seconds": value})
    assert created.status_code == 422, created.text
    assert created.json()["errors"][0]["loc"][-1] == "cache_ttl_seconds", created.text
    key_id, _ = await _key(served.client)
    updated = await served.client.patch(f"/v4/api-keys/{key_id}", json={"cache_ttl_seconds": value})
    assert updated.status_code == 422 and "cache_ttl_seconds" in updated.text, updated.text

    model = await served.client.post(
        "/v4/models",
        json={"name": f"bad-{uuid.uuid4().hex[:8]}", "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI",
              "model_creation_parameters": {"base_url": "http://upstream.test/v1", "model": "up",
                                            "cache_ttl_seconds": value}},
    )  # fmt: skip
    assert model.status_code == 422 and "cache_ttl_seconds" in model.text, model.text


# --- expiry, with the store's clock -------------------------------------------------------


async def test_an_answer_expires_after_its_ttl(served: Served, tmp_path: Path) -> None:
    now = [1000.0]
    cache = served.app.state.response_cache
    kept, cache.store = cache.store, MemoryStore(clock=lambda: now[0])
    try:
        _, deployment = await _model(served.client, cache_ttl_seconds=60)
        prompt = _prompt()
        assert (await _v4(served.client, deployment, prompt)).headers["x-modelport-cache"] == "miss"
        now[0] += 59
        assert (await _v4(served.client, deployment, prompt)).headers["x-modelport-cache"] == "hit"
        now[0] += 1
        assert (await _v4(served.client, deployment, prompt)).headers["x-modelport-cache"] == "miss"
        assert served.upstream.calls[prompt] == 2
    finally:
        cache.store = kept
