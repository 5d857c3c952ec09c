"""An account's own limits and budget, shared by all its keys (issue 24, 3; SPEC 10),
through the real application on SQLite and PostgreSQL: who may set and read them, that
they hold for the account's keys together beside each key's own, and that `/v4/spend`
shows both budgets."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from modelport.api.app import create_app
from modelport.config import Settings
from tests.api.test_limits import REAL_COST, FakeClock, _answer, _chat, _deployment, _settled
from tests.cli.test_keys_rotate import modelport
from tests.conftest import ADMIN_KEY


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
async def served(database_url: str, clock: FakeClock) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = Settings(
        database_url=database_url, api_key=ADMIN_KEY, embedded_engine=False, upstream_attempts=1, usage_flush_seconds=60
    )
    application = create_app(settings, upstream_transport=httpx.MockTransport(_answer), limits_clock=clock)
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://modelport.test",
            headers={"x-api-key": ADMIN_KEY},
        ) as client,
    ):
        yield application, client


class Team:
    """A fresh account, selected on every request of `client` (the operator's)."""

    def __init__(self, client: httpx.AsyncClient, account_id: str) -> None:
        self.id = account_id
        self.client = client

    async def key(self, role: str = "member", **limits: Any) -> tuple[str, str]:
        created = await self.client.post("/v4/api-keys", json={"role": role, "name": role, **limits})
        assert created.status_code == 201, created.text
        return created.json()["id"], created.json()["key"]

    async def set_limits(self, **limits: Any) -> dict[str, Any]:
        answer = await self.client.patch(f"/v4/accounts/{self.id}/limits", json=limits)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


@pytest.fixture
async def team(served: tuple[FastAPI, httpx.AsyncClient]) -> AsyncIterator[Team]:
    _, client = served
    created = await client.post("/accounts", json={"account_name": f"team-{uuid.uuid4().hex[:8]}"})
    assert created.status_code == 200, created.text
    account_id = created.json()["account_id"]
    async with httpx.AsyncClient(
        transport=client._transport,
        base_url="http://modelport.test",
        headers={"x-api-key": ADMIN_KEY, "x-selected-account-id": account_id},
    ) as selected:
        yield Team(selected, account_id)


async def test_operators_set_an_accounts_limits_its_admins_read_them_nobody_else(
    served: tuple[FastAPI, httpx.AsyncClient], team: Team
) -> None:
    _, client = served
    shown = await team.set_limits(rpm_limit=4, max_budget=0.5, budget_duration="1h")
    assert (shown["rpm_limit"], shown["max_budget"], shown["budget_duration"]) == (4, 0.5, "1h")
    assert shown["budget"]["spent"] == 0 and shown["budget"]["remaining"] == 0.5
    assert shown["tpm_limit"] is None
    cleared = await team.set_limits(rpm_limit=None)  # null clears one; the others stay
    assert (cleared["rpm_limit"], cleared["max_budget"]) == (None, 0.5)

    _, admin = await team.key("admin")
    _, member = await team.key("member")
    as_admin = {"x-api-key": admin}
    read = await client.get(f"/v4/accounts/{team.id}/limits", headers=as_admin)
    assert read.status_code == 200 and read.json()["max_budget"] == 0.5
    # The account's own admin may not raise what bounds all its keys.
    raised = await client.patch(f"/v4/accounts/{team.id}/limits", json={"max_budget": 1e6}, headers=as_admin)
    assert raised.status_code == 403 and "operators" in raised.json()["detail"]
    assert (await client.get(f"/v4/accounts/{team.id}/limits", headers={"x-api-key": member})).status_code == 403
    # An admin of another account learns nothing of this one: 404, as for no account.
    other = await client.post("/accounts", json={"account_name": f"other-{uuid.uuid4().hex[:8]}"})
    other_admin = await client.post(
        "/v4/api-keys",
        json={"role": "admin", "name": "other"},
        headers={"x-selected-account-id": other.json()["account_id"]},
    )
    as_other = {"x-api-key": other_admin.json()["key"]}
    assert (await client.get(f"/v4/accounts/{team.id}/limits", headers=as_other)).status_code == 404
    assert (await client.patch(f"/v4/accounts/{team.id}/limits", json={}, headers=as_other)).status_code == 404
    assert (await team.client.get("/v4/accounts/no-such-account/limits")).status_code == 404

    for bad, field in (({"budget_duration": "soon"}, "budget_duration"), ({"rpm_limit": -1}, "rpm_limit")):
        refused = await team.client.patch(f"/v4/accounts/{team.id}/limits", json=bad)
        assert refused.status_code == 422 and field in refused.text
    unknown = await team.client.patch(f"/v4/accounts/{team.id}/limits", json={"max_budgets": 1})
    assert unknown.status_code == 422 and "max_budgets" in unknown.text


async def test_an_accounts_rpm_holds_for_all_its_keys_together(
    served: tuple[FastAPI, httpx.AsyncClient], team: Team
) -> None:
    _, client = served
    deployment = await _deployment(team.client)
    keys = [(await team.key())[1] for _ in range(2)]
    await team.set_limits(rpm_limit=4)
    answers = [await _chat(client, deployment, keys[index % 2]) for index in range(4)]
    assert [answer.status_code for answer in answers] == [200] * 4
    # The account's remaining requests, since no key has a limit of its own.
    assert [answer.headers["x-ratelimit-remaining-requests"] for answer in answers] == ["3", "2", "1", "0"]
    for key in keys:
        refused = await _chat(client, deployment, key)
        assert refused.status_code == 429
        assert refused.json()["detail"].startswith("account rpm_limit exceeded")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
    # Another account's keys are not counted with these.
    other = await _deployment(client)
    assert (await _chat(client, other, ADMIN_KEY)).status_code == 200


async def test_an_accounts_budget_is_shared_by_its_keys_and_spend_shows_both_budgets(
    served: tuple[FastAPI, httpx.AsyncClient], team: Team, clock: FakeClock
) -> None:
    app, client = served
    deployment = await _deployment(team.client)
    generous_id, generous = await team.key(max_budget=1.0, budget_duration="1d")
    _, plain = await team.key()
    await team.set_limits(max_budget=0.05, budget_duration="1h")
    clock.now = time.time()  # the account's budget windows count from that change
    served_count = 0
    while True:
        answer = await _chat(client, deployment, (generous, plain)[served_count % 2])
        if answer.status_code != 200:
            break
        served_count += 1
        await _settled(app)
    # Admitted while the account's spend < $0.05: 0, 0.02, 0.04; the key with a
    # budget of its own was stopped by the account's all the same.
    assert served_count == 3
    assert answer.status_code == 429 and answer.json()["detail"].startswith("account max_budget exceeded")
    assert (await _chat(client, deployment, generous)).status_code == 429

    report = (await team.client.get("/v4/spend")).json()
    assert report["budget"]["spent"] == pytest.approx(3 * REAL_COST)
    assert report["budget"]["max_budget"] == 0.05 and report["budget"]["remaining"] == 0
    assert report["key_budgets"][generous_id]["spent"] == pytest.approx(2 * REAL_COST)
    assert report["key_budgets"][generous_id]["max_budget"] == 1.0
    limits = (await team.client.get(f"/v4/accounts/{team.id}/limits")).json()
    assert limits["budget"]["spent"] == pytest.approx(3 * REAL_COST)

    clock.now += 3600  # the hour is over: the account's budget starts again
    assert (await _chat(client, deployment, plain)).status_code == 200
    await team.set_limits(max_budget=None)  # cleared: only the keys' own limits remain
    assert (await team.client.get("/v4/spend")).json()["budget"] is None


async def test_the_cli_shows_sets_and_clears_an_accounts_limits(
    served: tuple[FastAPI, httpx.AsyncClient], team: Team, database_url: str
) -> None:
    _, client = served
    deployment = await _deployment(team.client)
    _, key = await team.key()
    name = team.id  # the command takes an account's name, id or unique id prefix
    shown = await asyncio.to_thread(modelport, database_url, "accounts", "limits", name)
    assert shown.returncode == 0 and shown.stdout.strip() == f"account {team.id}: no limits", shown.stderr
    limited = await asyncio.to_thread(
        modelport, database_url, "accounts", "limits", name, "--rpm-limit", "1", "--max-budget", "5",
        "--budget-duration", "30d",
    )  # fmt: skip
    assert limited.returncode == 0, limited.stderr
    assert (
        "rpm_limit=1" in limited.stdout and "max_budget=5.0" in limited.stdout and "budget: $0.000000" in limited.stdout
    )
    read = (await team.client.get(f"/v4/accounts/{team.id}/limits")).json()
    assert (read["rpm_limit"], read["max_budget"], read["budget_duration"]) == (1, 5.0, "30d")
    deadline = asyncio.get_running_loop().time() + 30  # the app sees the command's change at its cache refresh
    statuses = []
    while statuses[-2:] != [200, 429]:
        assert asyncio.get_running_loop().time() < deadline, statuses
        statuses.append((await _chat(client, deployment, key)).status_code)
    for bad, said in (
        (["--budget-duration", "soon"], "--budget-duration"),
        (["--clear", "cache_ttl_seconds"], "not a limit"),
    ):
        refused = await asyncio.to_thread(modelport, database_url, "accounts", "limits", name, *bad)
        assert refused.returncode == 1 and said in refused.stderr, refused.stderr
    cleared = await asyncio.to_thread(modelport, database_url, "accounts", "limits", name, "--clear", "rpm_limit")
    assert cleared.returncode == 0 and "rpm_limit" not in cleared.stdout, cleared.stdout
