"""Health probes, /metrics with the embedded engine, and database URLs as people write
them: through the real app, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from modelport.config import Settings, normalise_database_url


def samples(text: str, name: str) -> list[Any]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


async def test_liveness_and_readiness(client: httpx.AsyncClient) -> None:
    live = await client.get("/health/live", headers={"x-api-key": ""})
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    ready = await client.get("/health/ready", headers={"x-api-key": ""})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "reasons": []})


async def test_readiness_names_an_unreachable_limits_redis_without_failing(tmp_path: Path) -> None:
    """Every replica shares the one Redis: failing readiness for it would empty the load
    balancer, so it is a warning (host and port, never the password), still 200."""
    from tests.conftest import in_process, sqlite_settings
    from tests.servers import free_port

    port = free_port()  # nothing listens there
    settings = sqlite_settings(tmp_path, redis_url=f"redis://:hunter2@127.0.0.1:{port}/0")
    async with in_process(settings) as (_app, client):
        ready = await client.get("/health/ready")
    assert ready.status_code == 200
    [warning] = ready.json()["warnings"]
    assert f"Redis at 127.0.0.1:{port} cannot be reached" in warning and "hunter2" not in warning
    assert "max_budget" in warning  # what fails closed meanwhile


async def test_readiness_is_503_with_the_reason_when_the_database_is_gone(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    from modelport.store import db

    working = app.state.db_engine
    app.state.db_engine = db.make_engine("postgresql+asyncpg://nobody@127.0.0.1:1/nothing")
    try:
        ready = await client.get("/health/ready")
    finally:
        await app.state.db_engine.dispose()
        app.state.db_engine = working
    assert ready.status_code == 503
    assert ready.json()["status"] == "not ready"
    assert any("database" in reason for reason in ready.json()["reasons"])
    assert (await client.get("/health/live")).status_code == 200  # alive all the same: no restart


async def test_readiness_ignores_a_tenants_failed_deployment_and_waits_for_required_engines(
    app: FastAPI, client: httpx.AsyncClient, deployment_id: str, model_dir: Path
) -> None:
    """Issue 21, findings 1 and 7: one tenant's broken model took every route of the
    gateway out of the load balancer. Only engines the operator requires count."""
    account = (
        await client.post("/accounts", json={"account_name": f"readiness-tenant-{uuid.uuid4().hex[:8]}"})
    ).json()["account_id"]
    tenant = {"x-selected-account-id": account}
    model = await client.post(
        "/v4/models",
        json={"name": "readiness-broken", "model_type": "CHAT_COMPLETION", "model_vendor": "LLMENGINE"},
        headers=tenant,
    )
    broken = model_dir / "readiness-broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)  # a GGUF header llama.cpp cannot load
    created = await client.post(
        f"/v4/models/{model.json()['id']}/deployments",
        json={"name": "broken", "vendor_configuration": {"checkpoint_path": str(broken)}},
        headers=tenant,
    )
    assert created.json()["status"] == "FAILED"
    settings = app.state.settings
    try:
        ready = await client.get("/health/ready")
        assert (ready.status_code, ready.json()["reasons"]) == (200, [])
        assert (await client.get("/health")).json()["status"] == "degraded"  # still shown there
        settings.ready_requires_engines = [deployment_id, "readiness-broken"]  # an id and a model name
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        [reason] = ready.json()["reasons"]
        assert "readiness-broken.gguf is failed" in reason and str(model_dir) not in reason
        settings.ready_requires_engines = ["no-such-deployment"]
        ready = await client.get("/health/ready")
        assert ready.status_code == 503 and "names no deployment" in ready.json()["reasons"][0]
        settings.ready_requires_engines = [deployment_id]  # the bootstrap chat model: ready
        assert (await client.get("/health/ready")).status_code == 200
    finally:
        settings.ready_requires_engines = []
        await client.delete(f"/v4/models/{model.json()['id']}/deployments/{created.json()['id']}", headers=tenant)


METRICS = (
    "modelport_engine_running_sequences",
    "modelport_engine_queue_depth",
    "modelport_engine_kv_cache_usage_ratio",
)


async def test_metrics_show_the_engines_queue_running_sequences_and_kv_use(
    app: FastAPI, client: httpx.AsyncClient, deployment_id: str
) -> None:
    """The gauges report real work, not a constant: one more request than an account may
    run at once is sent together, and scrapes taken while they generate must see the
    engine's sequences running, one waiting, and KV cells reserved; once all have
    answered, a scrape sees none of it."""
    model = "SmolLM2-135M-Instruct.Q4_1.gguf"

    def gauges(text: str) -> dict[str, float]:
        return {name: s.value for name in METRICS for s in samples(text, name) if s.labels["model"] == model}

    share = app.state.settings.engine.sequences_per_account  # this engine runs that many of one account's
    url = f"/v4/models/{deployment_id}/chat-completions"
    body = {"chat_history": [], "prompt": "Count from 1 to 500.", "temperature": 0, "max_tokens": 32}

    async def send(index: int) -> httpx.Response:
        # As the vendors' SDKs do, a 429 is sent again after its Retry-After: on a busy
        # machine the account's two template renders at a time (TEMPLATE_RENDERS_PER_ACCOUNT)
        # can still be under way when the next of these requests arrives.
        while True:
            answer = await client.post(url, json={**body, "stream": index % 2 == 1})
            if answer.status_code != 429 or "template_renders_per_account" not in answer.text:
                return answer
            await asyncio.sleep(float(answer.headers["retry-after"]))

    answers = [asyncio.create_task(send(index)) for index in range(share + 1)]
    scraped: list[dict[str, float]] = []
    try:
        while not all(answer.done() for answer in answers):
            scraped.append(gauges((await client.get("/metrics")).text))
    finally:
        finished = await asyncio.gather(*answers, return_exceptions=True)
    assert all(isinstance(answer, httpx.Response) and answer.status_code == 200 for answer in finished), [
        (answer.status_code, answer.text[:300]) if isinstance(answer, httpx.Response) else repr(answer)
        for answer in finished
    ]
    # At some scrape the account's share runs and the one request over it waits (the
    # queue is briefly longer as requests arrive, before the engine's next step admits them).
    running, waiting, kv = METRICS
    assert any(seen[running] == share and seen[waiting] == 1 for seen in scraped), scraped
    assert all(0.0 <= seen[kv] <= 1.0 for seen in scraped)
    assert any(seen[kv] > 0.0 for seen in scraped)
    # Once all have answered the gauges go back to 0 (polled: on a busy machine the
    # engine's next report can come a scrape later than the last answer).
    deadline = asyncio.get_running_loop().time() + 30
    while (after := gauges((await client.get("/metrics")).text)) != dict.fromkeys(METRICS, 0.0):
        assert asyncio.get_running_loop().time() < deadline, after
        await asyncio.sleep(0.1)
    text = (await client.get("/metrics")).text
    # A fresh install runs two engines: this chat model's and the embedding model's.
    assert [s.value for s in samples(text, "modelport_engine_up")] == [1.0, 1.0]
    ttft = [
        s
        for s in samples(text, "gen_ai_server_time_to_first_token_seconds_count")
        if s.labels["deployment"] == deployment_id
    ]
    assert ttft and ttft[0].value >= 1


async def test_limit_rejections_have_a_counter_for_the_limits_code(
    client: httpx.AsyncClient, deployment_id: str
) -> None:
    """A real 429 from a key's exhausted rpm_limit is counted once, under that limit."""

    def rejected(text: str, limit: str) -> float:
        counted = [s.value for s in samples(text, "modelport_limit_rejections_total") if s.labels["limit"] == limit]
        return counted[0] if counted else 0.0

    created = await client.post("/v4/api-keys", json={"role": "member", "name": "one-a-minute", "rpm_limit": 1})
    assert created.status_code == 201, created.text
    limited = {"x-api-key": created.json()["key"]}
    body = {"chat_history": [], "prompt": "Hi", "max_tokens": 1}
    route = f"/v4/models/{deployment_id}/chat-completions"
    before = (await client.get("/metrics")).text
    assert (await client.post(route, json=body, headers=limited)).status_code == 200
    refused = await client.post(route, json=body, headers=limited)
    assert refused.status_code == 429 and "rpm_limit" in refused.json()["detail"]
    after = (await client.get("/metrics")).text
    assert rejected(after, "rpm_limit") == rejected(before, "rpm_limit") + 1
    # Nothing else was refused, so no other limit moved.
    others = {s.labels["limit"] for s in samples(after, "modelport_limit_rejections_total")} - {"rpm_limit"}
    assert all(rejected(after, limit) == rejected(before, limit) for limit in others)


@pytest.mark.parametrize(
    ("written", "used"),
    [
        ("postgresql://u:p@db:5432/modelport", "postgresql+asyncpg://u:p@db:5432/modelport"),
        ("postgres://u@db/modelport?ssl=require", "postgresql+asyncpg://u@db/modelport?ssl=require"),
        ("postgresql+asyncpg://u@db/m", "postgresql+asyncpg://u@db/m"),
        ("sqlite:////var/lib/modelport.db", "sqlite+aiosqlite:////var/lib/modelport.db"),
        ("sqlite+aiosqlite:///m.db", "sqlite+aiosqlite:///m.db"),
    ],
)
def test_database_urls_as_people_write_them(written: str, used: str) -> None:
    assert normalise_database_url(written) == used
    assert Settings(database_url=written).database_url == used


@pytest.mark.parametrize("url", ["mysql://u@db/m", "postgresql+psycopg2://u@db/m", "modelport.db", ""])
def test_an_unknown_scheme_is_refused_naming_what_works(url: str) -> None:
    with pytest.raises(ValueError, match=r"use postgresql://"):
        normalise_database_url(url)


async def test_a_postgresql_url_written_plainly_reaches_the_database(database_url: str) -> None:
    """The `database_url` fixture's PostgreSQL leg, written the usual way, migrates and answers."""
    from modelport.store import db

    plain = database_url.replace("postgresql+asyncpg://", "postgresql://").replace("sqlite+aiosqlite://", "sqlite://")
    engine = db.make_engine(Settings(database_url=plain).database_url)
    try:
        await db.upgrade(engine)
        assert await db.read_generation(engine) >= 0
    finally:
        await engine.dispose()


async def test_the_consoles_queries_find_by_name_or_prefix_and_sum_usage(
    app: FastAPI, client: httpx.AsyncClient, deployment_id: str
) -> None:
    """What `modelport accounts/keys/usage` read, on both databases."""
    from datetime import UTC, datetime, timedelta

    from modelport.store import inventory

    since = datetime.now(UTC) - timedelta(days=1)

    async def deployment_usage() -> inventory.UsageRow:
        """This deployment's row, once every record so far is written (other tests share it)."""
        await app.state.usage.flush()
        async with app.state.sessions() as session:
            rows = await inventory.usage_since(session, since=since, account_id=None)
        unused = inventory.UsageRow(deployment_id, "", "", 0, 0, 0, 0)
        return next((row for row in rows if row.deployment_id == deployment_id), unused)

    before = await deployment_usage()
    body = {"chat_history": [], "prompt": "Hi", "temperature": 0, "max_tokens": 2}
    answer = await client.post(f"/v4/models/{deployment_id}/chat-completions", json=body)
    assert answer.status_code == 200
    after = await deployment_usage()

    async with app.state.sessions() as session:
        [default] = await inventory.find_accounts(session, "default")
        assert [a.id for a in await inventory.find_accounts(session, default.id[:6])] == [default.id]
        assert await inventory.find_accounts(session, "%") == []  # a LIKE wildcard is a character here
        [first_key] = await inventory.find_keys(session, "first admin key")
        assert [k.id for k in await inventory.find_keys(session, first_key.id[:8])] == [first_key.id]
        rows = {row.account.id: row for row in await inventory.accounts(session)}
        assert rows[default.id].deployments >= 1
        listed = await inventory.deployments(session, account_id=default.id)
        assert deployment_id in {deployment.id for deployment, _model in listed}
        models = await inventory.models(session, account_id=None)
        assert any(count >= 1 for _model, _account, count in models)
    # The deployment is shared with the other tests: what this request added is exactly it.
    added = (
        after.requests - before.requests,
        after.failures - before.failures,
        after.prompt_tokens - before.prompt_tokens,
        after.response_tokens - before.response_tokens,
    )
    answered = answer.json()
    assert answered["prompt_tokens"] > 0 and answered["response_tokens"] > 0
    assert added == (1, 0, answered["prompt_tokens"], answered["response_tokens"])
    assert after.account_name == "default"


def test_the_head_revision_read_from_file_names_is_alembics_own() -> None:
    """Start-up compares the database with `db.head_revision()` to skip loading Alembic;
    a migration file named against the rule would make it skip a needed upgrade."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from modelport.store import db

    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    assert db.head_revision() == ScriptDirectory.from_config(config).get_current_head()


async def test_start_up_migrates_only_a_database_that_is_behind(tmp_path: Path) -> None:
    from modelport.store import db

    engine = db.make_engine(f"sqlite+aiosqlite:///{tmp_path / 'modelport.db'}")
    try:
        assert not await db.schema_is_current(engine)  # new: no schema at all
        await db.upgrade(engine, "0006")
        assert not await db.schema_is_current(engine)  # one migration behind
        await db.upgrade(engine)
        assert await db.schema_is_current(engine)
        assert await db.current_revision(engine) == db.head_revision()
    finally:
        await engine.dispose()


async def test_browser_pages_of_the_configured_origins_may_call_the_api_and_no_others(tmp_path: Path) -> None:
    from tests.conftest import in_process, sqlite_settings

    preflight = {"origin": "https://chat.example.com", "access-control-request-method": "POST",
                 "access-control-request-headers": "authorization, content-type"}  # fmt: skip
    async with in_process(sqlite_settings(tmp_path / "closed")) as (_app, client):
        closed = await client.options("/v1/chat/completions", headers=preflight)
    assert "access-control-allow-origin" not in closed.headers  # off by default

    settings = sqlite_settings(tmp_path / "open", cors_origins=["https://chat.example.com"])
    async with in_process(settings) as (_app, client):
        allowed = await client.options("/v1/chat/completions", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://chat.example.com"
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        other = await client.options("/v1/chat/completions", headers={**preflight, "origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        listed = await client.get("/v1/models", headers={"origin": "https://chat.example.com"})
        assert listed.status_code == 200
        assert listed.headers["access-control-allow-origin"] == "https://chat.example.com"
        assert "x-request-id" in listed.headers["access-control-expose-headers"]
