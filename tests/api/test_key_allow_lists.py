"""Keys limited to some models and deployments (issue 24, item 1; SPEC 10), through the real
application on SQLite and PostgreSQL, with an OpenAI-compatible upstream answered in-process.

What a limited key may not use is, for it, exactly as absent as something that does not
exist: the same 404 and body as an unknown id or name, and no trace in any listing."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from modelport.config import Settings
from tests.api.test_catalogue import USAGE_QUERY
from tests.cli.test_keys_rotate import modelport
from tests.conftest import ADMIN_KEY, in_process

MESSAGES = [{"role": "user", "content": "hi"}]


def _upstream(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    if request.url.path.endswith("/embeddings"):
        data = [{"object": "embedding", "index": i, "embedding": [0.6, 0.8]} for i in range(len(body["input"]))]
        usage = {"prompt_tokens": 3, "total_tokens": 3}
        return httpx.Response(200, json={"object": "list", "data": data, "model": "up", "usage": usage})
    return httpx.Response(
        200,
        json={
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "up",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        },
    )


@pytest.fixture(scope="module")
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=database_url, api_key=ADMIN_KEY, embedded_engine=False, upstream_attempts=1,
        auth_failures_per_minute=0,
    )  # fmt: skip
    async with in_process(settings, upstream=httpx.MockTransport(_upstream)) as (_, http):
        yield http


@dataclass(frozen=True)
class Catalogue:
    """Two chat models (`allowed` with one deployment, `other` with two) and an embedding model."""

    allowed: str
    allowed_deployment: str
    other: str
    other_deployments: tuple[str, str]
    embedding: str
    embedding_deployment: str

    @property
    def deployments(self) -> set[str]:
        return {self.allowed_deployment, *self.other_deployments, self.embedding_deployment}


async def _model(client: httpx.AsyncClient, prefix: str, model_type: str, deployments: int) -> tuple[str, list[str]]:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    parameters = {"base_url": "http://upstream.test/v1", "model": "up"}
    made = await client.post(
        "/v4/models",
        json={"name": name, "model_type": model_type, "model_vendor": "OTHER", "model_creation_parameters": parameters},
    )
    assert made.status_code == 200, made.text
    ids = []
    for n in range(deployments):
        deployment = await client.post(f"/v4/models/{made.json()['id']}/deployments", json={"name": f"d{n}"})
        assert deployment.status_code == 200, deployment.text
        ids.append(str(deployment.json()["id"]))
    return name, ids


@pytest.fixture(scope="module")
async def catalogue(client: httpx.AsyncClient) -> Catalogue:
    allowed, [allowed_deployment] = await _model(client, "allowed", "CHAT_COMPLETION", 1)
    other, [first, second] = await _model(client, "other", "CHAT_COMPLETION", 2)
    embedding, [embedding_deployment] = await _model(client, "embed", "EMBEDDING", 1)
    return Catalogue(allowed, allowed_deployment, other, (first, second), embedding, embedding_deployment)


async def _key(client: httpx.AsyncClient, **lists: Any) -> dict[str, Any]:
    created = await client.post("/v4/api-keys", json={"role": "member", "name": "limited", **lists})
    assert created.status_code == 201, created.text
    return dict(created.json())


async def _v4_chat(client: httpx.AsyncClient, key: str, deployment: str) -> httpx.Response:
    return await client.post(
        f"/v4/models/{deployment}/chat-completions",
        json={"chat_history": [], "prompt": "hi", "max_tokens": 5},
        headers={"x-api-key": key},
    )


async def _v1_chat(client: httpx.AsyncClient, key: str, model: str) -> httpx.Response:
    return await client.post(
        "/v1/chat/completions", json={"model": model, "messages": MESSAGES}, headers={"x-api-key": key}
    )


def _as_unknown(answer: httpx.Response, hidden: str, unknown: str) -> tuple[int, str]:
    """The answer's status and body with the hidden name replaced by the unknown one: equal
    to the unknown one's answer when nothing tells the two apart."""
    return answer.status_code, answer.text.replace(hidden, unknown)


async def _seen(client: httpx.AsyncClient, key: str) -> dict[str, Any]:
    """What every listing shows `key`: model names and deployment ids."""
    headers = {"x-api-key": key}
    v1 = (await client.get("/v1/models", headers=headers)).json()
    anthropic = (await client.get("/v1/models", headers={**headers, "anthropic-version": "2023-06-01"})).json()
    v4 = (await client.get("/v4/models", params={"view": "Deployments", "limit": 1000}, headers=headers)).json()
    deployments = (await client.get("/v4/model-deployments", params={"limit": 1000}, headers=headers)).json()
    return {
        "v1": sorted(card["id"] for card in v1["data"]),
        "anthropic": sorted(info["id"] for info in anthropic["data"]),
        "v4": sorted(model["name"] for model in v4["items"]),
        "v4 deployments": sorted(d["id"] for model in v4["items"] for d in model.get("deployments") or []),
        "v4 counts": sorted(model["deployment_count"] for model in v4["items"]),
        "deployments": sorted(d["id"] for d in deployments["items"]),
    }


async def test_a_key_limited_to_a_model_calls_it_and_nothing_else_exists_for_it(
    client: httpx.AsyncClient, catalogue: Catalogue
) -> None:
    key = (await _key(client, models=[catalogue.allowed, catalogue.embedding]))["key"]
    assert (await _v4_chat(client, key, catalogue.allowed_deployment)).status_code == 200
    assert (await _v1_chat(client, key, catalogue.allowed)).status_code == 200
    assert (await _v1_chat(client, key, f"other/{catalogue.allowed}")).status_code == 200
    embedded = await client.post(
        "/v1/embeddings", json={"model": catalogue.embedding, "input": ["a"]}, headers={"x-api-key": key}
    )
    assert embedded.status_code == 200, embedded.text

    # Another deployment: the same 404 and body as an id that does not exist, on v4 and v1.
    hidden, unknown = catalogue.other_deployments[0], str(uuid.uuid4())
    refused = await _v4_chat(client, key, hidden)
    assert refused.status_code == 404
    assert _as_unknown(refused, hidden, unknown) == _as_unknown(await _v4_chat(client, key, unknown), "", "")
    by_id = await _v1_chat(client, key, hidden)
    assert _as_unknown(by_id, hidden, unknown) == _as_unknown(await _v1_chat(client, key, unknown), "", "")
    # Another model by name (and vendor/name): the same as a name that does not exist.
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    for name in (catalogue.other, f"other/{catalogue.other}"):
        by_name = await _v1_chat(client, key, name)
        assert by_name.status_code == 404
        assert _as_unknown(by_name, name, missing) == _as_unknown(await _v1_chat(client, key, missing), "", "")

    # The admin, with no list, still calls it.
    assert (await client.post("/v1/chat/completions", json={"model": catalogue.other, "messages": MESSAGES})).is_success


async def test_every_listing_shows_a_limited_key_only_what_it_may_use(
    client: httpx.AsyncClient, catalogue: Catalogue
) -> None:
    key = (await _key(client, models=[catalogue.allowed]))["key"]
    assert await _seen(client, key) == {
        "v1": [catalogue.allowed],
        "anthropic": [catalogue.allowed],
        "v4": [catalogue.allowed],
        "v4 deployments": [catalogue.allowed_deployment],
        "v4 counts": [1],
        "deployments": [catalogue.allowed_deployment],
    }
    headers = {"x-api-key": key}
    admin_models = (await client.get("/v4/models", params={"limit": 1000})).json()["items"]
    ids = {model["name"]: model["id"] for model in admin_models}
    hidden_model, hidden_deployment = ids[catalogue.other], catalogue.other_deployments[0]
    allowed_model = ids[catalogue.allowed]

    for path in (
        f"/v4/models/{allowed_model}",
        f"/v4/models/{catalogue.allowed}/usage-statistics?{USAGE_QUERY}",
        f"/v4/model-deployments/{catalogue.allowed_deployment}/usage-statistics?{USAGE_QUERY}",
    ):
        answer = await client.get(path, headers=headers)
        assert answer.status_code == 200, (path, answer.text)
    for path in (
        f"/v4/models/{hidden_model}",
        f"/v4/models/{hidden_model}/deployments",
        f"/v4/models/{hidden_model}/deployments/{hidden_deployment}",
        f"/v4/models/{allowed_model}/deployments/{hidden_deployment}",
        f"/v1/models/{catalogue.other}",
        f"/v1/models/{hidden_deployment}",
        f"/v4/models/{catalogue.other}/usage-statistics?{USAGE_QUERY}",
        f"/v4/model-deployments/{hidden_deployment}/usage-statistics?{USAGE_QUERY}",
    ):
        answer = await client.get(path, headers=headers)
        assert answer.status_code == 404, (path, answer.text)
    # The key may read its own model's deployments; none of another's.
    assert (await client.get(f"/v1/models/{catalogue.allowed_deployment}", headers=headers)).status_code == 200


async def test_a_deployments_only_list_reaches_its_model_by_name_through_that_deployment_only(
    client: httpx.AsyncClient, catalogue: Catalogue
) -> None:
    chosen = catalogue.other_deployments[1]
    created = await _key(client, deployments=[chosen])
    key = created["key"]
    assert (created["models"], created["deployments"]) == (None, [chosen])
    assert (await _v4_chat(client, key, chosen)).status_code == 200
    assert (await _v4_chat(client, key, catalogue.other_deployments[0])).status_code == 404
    assert (await _v4_chat(client, key, catalogue.allowed_deployment)).status_code == 404
    # By name: the model is there, served by the listed deployment (never the other one).
    for _ in range(3):
        assert (await _v1_chat(client, key, catalogue.other)).status_code == 200
    assert (await _v1_chat(client, key, catalogue.allowed)).status_code == 404
    seen = await _seen(client, key)
    assert seen["v1"] == seen["v4"] == [catalogue.other]
    assert seen["v4 deployments"] == seen["deployments"] == [chosen]
    assert seen["v4 counts"] == [1]


async def test_clearing_the_list_gives_the_key_every_model_again_and_listings_show_the_lists(
    client: httpx.AsyncClient, catalogue: Catalogue
) -> None:
    created = await _key(client, models=[catalogue.allowed], deployments=[catalogue.embedding_deployment])
    key, key_id = created["key"], created["id"]
    listed = [item for item in (await client.get("/v4/api-keys")).json() if item["id"] == key_id]
    assert [(item["models"], item["deployments"]) for item in listed] == [
        ([catalogue.allowed], [catalogue.embedding_deployment])
    ]
    assert (await _v1_chat(client, key, catalogue.other)).status_code == 404

    # A PATCH that leaves the lists out keeps them.
    renamed = await client.patch(f"/v4/api-keys/{key_id}", json={"name": "renamed"})
    assert (renamed.json()["models"], renamed.json()["deployments"]) == (
        [catalogue.allowed],
        [catalogue.embedding_deployment],
    )
    cleared = await client.patch(f"/v4/api-keys/{key_id}", json={"models": None, "deployments": None})
    assert cleared.status_code == 200, cleared.text
    assert (cleared.json()["models"], cleared.json()["deployments"]) == (None, None)
    assert (await _v1_chat(client, key, catalogue.other)).status_code == 200  # the cache saw the change at once
    seen = await _seen(client, key)
    assert {catalogue.allowed, catalogue.other, catalogue.embedding} <= set(seen["v1"])
    assert catalogue.deployments <= set(seen["deployments"])

    limited = await client.patch(f"/v4/api-keys/{key_id}", json={"deployments": [catalogue.allowed_deployment]})
    assert limited.status_code == 200, limited.text
    assert (await _v1_chat(client, key, catalogue.other)).status_code == 404
    assert (await _v1_chat(client, key, catalogue.allowed)).status_code == 200


@pytest.mark.parametrize(
    ("lists", "field"),
    [
        ({"models": "one"}, "models"),
        ({"models": [1]}, "models"),
        ({"deployments": [""]}, "deployments"),
        ({"models": ["x" * 201]}, "models"),
        ({"deployments": [f"d{n}" for n in range(1001)]}, "deployments"),
        ({"models": [f"missing-{uuid.uuid4().hex[:8]}"]}, "models"),
        ({"models": ["OTHER/{allowed}"]}, "models"),  # vendors are lower-case, as /v1/models shows them
        ({"deployments": [str(uuid.uuid4())]}, "deployments"),
    ],
)
async def test_malformed_or_unknown_lists_are_a_422_naming_the_field(
    client: httpx.AsyncClient, catalogue: Catalogue, lists: dict[str, Any], field: str
) -> None:
    lists = json.loads(json.dumps(lists).replace("{allowed}", catalogue.allowed))
    created = await client.post("/v4/api-keys", json={"role": "member", **lists})
    assert created.status_code == 422, created.text
    assert [error["loc"][1] for error in created.json()["errors"]][:1] == [field], created.text

    key_id = (await _key(client))["id"]
    updated = await client.patch(f"/v4/api-keys/{key_id}", json=lists)
    assert updated.status_code == 422, updated.text
    assert [error["loc"][1] for error in updated.json()["errors"]][:1] == [field], updated.text
    [after] = [item for item in (await client.get("/v4/api-keys")).json() if item["id"] == key_id]
    assert (after["models"], after["deployments"]) == (None, None)  # nothing stored


async def test_another_accounts_model_is_unknown_to_a_list(client: httpx.AsyncClient, catalogue: Catalogue) -> None:
    account = await client.post("/accounts", json={"account_name": f"elsewhere-{uuid.uuid4().hex[:8]}"})
    assert account.status_code == 200, account.text
    elsewhere = {"x-selected-account-id": account.json()["account_id"]}
    made = await client.post("/v4/api-keys", json={"models": [catalogue.allowed]}, headers=elsewhere)
    assert made.status_code == 422 and made.json()["errors"][0]["loc"][1] == "models", made.text


async def test_the_cli_sets_and_clears_the_lists(
    client: httpx.AsyncClient, catalogue: Catalogue, database_url: str
) -> None:
    account = (await client.get("/user-info")).json()["access_profiles"][0]["account"]["id"]
    name = f"cli-{uuid.uuid4().hex[:8]}"
    created = await asyncio.to_thread(
        modelport, database_url, "keys", "create", "--account", account, "--name", name,
        "--model", catalogue.allowed, "--deployment", catalogue.embedding_deployment,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    [row] = [item for item in (await client.get("/v4/api-keys")).json() if item["name"] == name]
    assert (row["models"], row["deployments"]) == ([catalogue.allowed], [catalogue.embedding_deployment])
    assert (await _v1_chat(client, key, catalogue.allowed)).status_code == 200
    assert (await _v1_chat(client, key, catalogue.other)).status_code == 404

    unknown = await asyncio.to_thread(modelport, database_url, "keys", "update", name, "--model", "no-such-model")
    assert unknown.returncode == 1 and "--model" in unknown.stderr and "no-such-model" in unknown.stderr

    cleared = await asyncio.to_thread(
        modelport, database_url, "keys", "update", name, "--clear", "models", "--clear", "deployments"
    )
    assert cleared.returncode == 0, cleared.stderr
    deadline = asyncio.get_running_loop().time() + 30  # the app sees the command's change at its cache refresh
    while (await _v1_chat(client, key, catalogue.other)).status_code != 200:
        assert asyncio.get_running_loop().time() < deadline, "the cleared list still limits the key"
        await asyncio.sleep(0.1)
    [row] = [item for item in (await client.get("/v4/api-keys")).json() if item["name"] == name]
    assert (row["models"], row["deployments"]) == (None, None)


async def test_a_groups_usage_shows_a_limited_key_only_the_models_it_may_use(
    client: httpx.AsyncClient, catalogue: Catalogue
) -> None:
    """A model group holding an allowed and a hidden model: the limited key's group usage
    is the allowed model's alone, however much the hidden one was used."""
    group = await client.post("/v4/model-groups", json={"name": f"g-{uuid.uuid4().hex[:8]}"})
    assert group.status_code == 200, group.text
    ids = {
        model["name"]: model["id"] for model in (await client.get("/v4/models", params={"limit": 1000})).json()["items"]
    }
    for name in (catalogue.allowed, catalogue.other):
        added = await client.post(f"/v4/model-groups/{group.json()['id']}/models/{ids[name]}")
        assert added.status_code == 200, added.text
    path = f"/v4/model-groups/{group.json()['id']}/usage-statistics?{USAGE_QUERY}"

    async def tokens(url: str, key: str = ADMIN_KEY) -> int:
        answer = await client.get(url, headers={"x-api-key": key})
        assert answer.status_code == 200, answer.text
        return sum(point["summary_tokens"] for point in answer.json()["data"])

    before = await tokens(path)
    assert (await _v4_chat(client, ADMIN_KEY, catalogue.other_deployments[0])).status_code == 200
    for _ in range(200):  # usage is written in batches: poll until this call's is in
        if await tokens(path) >= before + 15:
            break
        await asyncio.sleep(0.05)
    everything = await tokens(path)
    assert everything >= before + 15
    key = (await _key(client, models=[catalogue.allowed]))["key"]
    allowed_alone = await tokens(f"/v4/models/{catalogue.allowed}/usage-statistics?{USAGE_QUERY}")
    assert await tokens(path, key) == allowed_alone <= everything - 15
