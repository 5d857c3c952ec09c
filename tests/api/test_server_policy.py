"""What an account admin may not do with the server's own powers: create accounts,
read the server's environment through api_key_env, reach link-local upstreams, or
revoke keys that are not theirs to manage. One role-by-route matrix, then one test per
finding of the security review (issue 10)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from modelport.api.app import create_app
from modelport.config import Settings
from tests.conftest import ADMIN_KEY
from tests.servers import free_port


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


@pytest.fixture(scope="module")
async def tenant(client: httpx.AsyncClient) -> dict[str, str]:
    """Account B, created by the operator (who is then a member of it too), with a
    service-account admin and member; account A is the operator's default account."""
    account = await ok(await client.post("/accounts", json={"account_name": f"policy-b-{uuid.uuid4().hex[:8]}"}))
    in_b = {"x-selected-account-id": account["account_id"]}
    admin = await ok(await client.post("/v4/api-keys", json={"role": "admin", "name": "b-admin"}, headers=in_b), 201)
    member = await ok(await client.post("/v4/api-keys", json={"role": "member", "name": "b-member"}, headers=in_b), 201)
    a_model = await ok(
        await client.post(
            "/v4/models", json={"name": "a-private", "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI"}
        )
    )
    a_deployment = await ok(
        await client.post(
            f"/v4/models/{a_model['id']}/deployments",
            json={"name": "a-d", "model_creation_parameters": {"model": "gpt-x"}},
        )
    )
    # A file and a batch of account A (the operator's default account).
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "a-private", "messages": [{"role": "user", "content": "hi"}]}}  # fmt: skip
    a_file = await ok(await client.post("/v1/files", files={"file": ("a.jsonl", json.dumps(line))}, data=BATCH_PURPOSE))
    a_sgp_file = await ok(await client.post("/v4/beta/files", files={"file": ("a.txt", b"account A's")}))
    a_batch = await ok(
        await client.post(
            "/v1/batches",
            json={"input_file_id": a_file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        )
    )
    # Only its existence is probed. Cancelled at once: on the session's database, any
    # test's app could otherwise run its line, against that test's own upstream.
    await ok(await client.post(f"/v1/batches/{a_batch['id']}/cancel"))
    return {
        "a_file": a_file["id"],
        "a_sgp_file": a_sgp_file["id"],
        "a_batch": a_batch["id"],
        "a_deployment": a_deployment["id"],
        "account": account["account_id"],
        "admin": admin["key"],
        "member": member["key"],
        "member_key_id": member["id"],
        "member_identity": member["identity_id"],
        "a_model": a_model["id"],
        "a_account": a_model["account_id"],
    }


BATCH_PURPOSE = {"purpose": "batch"}


def openai_model(name: str, **parameters: Any) -> dict[str, Any]:
    return {
        "name": name,
        "model_type": "CHAT_COMPLETION",
        "model_vendor": "OPENAI",
        "model_creation_parameters": {"model": "gpt-x", **parameters},
    }


# --- the matrix --------------------------------------------------------------------------

ROLES = ("operator", "admin", "member")


def key_of(role: str, tenant: dict[str, str]) -> str:
    return ADMIN_KEY if role == "operator" else tenant[role]


@pytest.mark.parametrize("role", ROLES)
async def test_role_by_route_matrix(client: httpx.AsyncClient, tenant: dict[str, str], role: str) -> None:
    """Each role, acting in account B; 'A' is an account the admin and member are not in."""
    headers = {"x-api-key": key_of(role, tenant), "x-selected-account-id": tenant["account"]}
    expected = {
        # route: (operator, admin, member)
        "create account": (200, 403, 403),
        "create key": (201, 201, 403),
        "list models": (200, 200, 200),
        # A server credential is the operator's (MODELPORT_UPSTREAM_KEYS_FOR_ADMINS is off).
        "create model with an allowed api_key_env": (200, 403, 403),
        "create model naming MODELPORT_SECRET_KEY": (422, 422, 403),
        "read account A's model": (404, 404, 404),
        "who am I": (200, 200, 200),
        "create model group": (200, 200, 403),
        "create model template": (200, 200, 403),
        "account spend": (200, 200, 403),
        "change a key's limits": (200, 200, 403),
        "rotate a key": (200, 200, 403),
        "list models, OpenAI's way": (200, 200, 200),
        "chat with account A's model by name": (404, 404, 404),
        "Anthropic messages with account A's model": (404, 404, 404),
        "count tokens with account A's model": (404, 404, 404),
        "Responses with account A's model": (404, 404, 404),
        "SGP top-level chat with account A's model": (404, 404, 404),
        "SGP top-level completion with account A's model": (404, 404, 404),
        # The body's account_id is where the call is metered: only the selected account.
        "SGP top-level chat metered to account A": (403, 403, 403),
        "execute account A's deployment": (404, 404, 404),
        "usage summary": (200, 200, 403),
        "read B's member": (200, 200, 404),
        "audit log": (200, 200, 403),
        "audit log of every account": (200, 200, 403),  # an admin still reads only B's
        # An account's own limits bound what its admins hand out: the operator's to set.
        "read B's own limits": (200, 200, 403),
        "set B's own limits": (200, 403, 403),
        "read account A's limits": (200, 404, 404),
        # Files and batches are the account's: every role uses its own, none sees A's.
        "upload a batch file": (200, 200, 200),
        "list batches": (200, 200, 200),
        "Anthropic batch": (200, 200, 200),
        "read account A's file": (404, 404, 404),
        "read account A's file content": (404, 404, 404),
        "delete account A's file": (404, 404, 404),
        "upload an SGP file": (200, 200, 200),
        "list SGP files": (200, 200, 200),
        "read account A's SGP file": (404, 404, 404),
        "read account A's SGP file content": (404, 404, 404),
        "delete account A's SGP file": (404, 404, 404),
        "batch account A's file": (404, 404, 404),
        "read account A's batch": (404, 404, 404),
        "cancel account A's batch": (404, 404, 404),
    }
    index = ROLES.index(role)
    got = {
        "create account": (
            await client.post("/accounts", json={"account_name": f"by-{role}-{uuid.uuid4().hex[:8]}"}, headers=headers)
        ),
        "create key": await client.post("/v4/api-keys", json={"role": "member", "name": role}, headers=headers),
        "list models": await client.get("/v4/models", headers=headers),
        "create model with an allowed api_key_env": await client.post(
            "/v4/models", json=openai_model(f"env-{role}", api_key_env="OPENAI_API_KEY"), headers=headers
        ),
        "create model naming MODELPORT_SECRET_KEY": await client.post(
            "/v4/models", json=openai_model(f"steal-{role}", api_key_env="MODELPORT_SECRET_KEY"), headers=headers
        ),
        "read account A's model": await client.get(f"/v4/models/{tenant['a_model']}", headers=headers),
        "who am I": await client.get("/user-info", headers=headers),
        "create model group": await client.post("/v4/model-groups", json={"name": f"g-{role}"}, headers=headers),
        "create model template": await client.post(
            "/v4/model-templates",
            json={
                "name": f"t-{role}",
                "model_type": "CHAT_COMPLETION",
                "endpoint_type": "SYNC",
                "vendor_configuration": {"bundle_config": {"image": "i", "registry": "r", "tag": "1"}},
            },
            headers=headers,
        ),
        "account spend": await client.get("/v4/spend", headers=headers),
        "change a key's limits": await client.patch(
            f"/v4/api-keys/{tenant['member_key_id']}", json={"rpm_limit": 1000}, headers=headers
        ),
        "list models, OpenAI's way": await client.get("/v1/models", headers=headers),
        "chat with account A's model by name": await client.post(
            "/v1/chat/completions",
            json={"model": "a-private", "messages": [{"role": "user", "content": "hi"}]},
            headers=headers,
        ),
        "Anthropic messages with account A's model": await client.post(
            "/v1/messages",
            json={"model": "a-private", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
            headers=headers,
        ),
        "count tokens with account A's model": await client.post(
            "/v1/messages/count_tokens",
            json={"model": "a-private", "messages": [{"role": "user", "content": "hi"}]},
            headers=headers,
        ),
        "Responses with account A's model": await client.post(
            "/v1/responses", json={"model": "a-private", "input": "hi"}, headers=headers
        ),
        "SGP top-level chat with account A's model": await client.post(
            "/v4/chat-completions",
            json={"model": "a-private", "messages": [{"role": "user", "content": "hi"}]},
            headers=headers,
        ),
        "SGP top-level completion with account A's model": await client.post(
            "/v4/completions", json={"model": "a-private", "prompt": "hi"}, headers=headers
        ),
        "SGP top-level chat metered to account A": await client.post(
            "/v4/chat-completions",
            json={
                "model": "a-private",
                "messages": [{"role": "user", "content": "hi"}],
                "account_id": tenant["a_account"],
            },
            headers=headers,
        ),
        "execute account A's deployment": await client.post(
            f"/v4/models/{tenant['a_model']}/deployments/{tenant['a_deployment']}/execute", json={}, headers=headers
        ),
        "usage summary": await client.get(
            "/v4/usage-summary?start_date=2026-01-01T00:00:00Z&end_date=2026-01-02T00:00:00Z", headers=headers
        ),
        "read B's member": await client.get(f"/users/{tenant['member_identity']}", headers=headers),
        "audit log": await client.get("/v4/audit-events", headers=headers),
        "audit log of every account": await client.get("/v4/audit-events?all_accounts=true", headers=headers),
        "read B's own limits": await client.get(f"/v4/accounts/{tenant['account']}/limits", headers=headers),
        "set B's own limits": await client.patch(
            f"/v4/accounts/{tenant['account']}/limits", json={"max_budget": 1e9}, headers=headers
        ),
        "read account A's limits": await client.get(f"/v4/accounts/{tenant['a_account']}/limits", headers=headers),
        "upload a batch file": await client.post(
            "/v1/files", files={"file": ("b.jsonl", b"{}")}, data=BATCH_PURPOSE, headers=headers
        ),
        "list batches": await client.get("/v1/batches", headers=headers),
        "Anthropic batch": await client.post(
            "/v1/messages/batches",
            json={"requests": [{"custom_id": "b", "params": {"model": "none", "max_tokens": 1, "messages": []}}]},
            headers=headers,
        ),
        "read account A's file": await client.get(f"/v1/files/{tenant['a_file']}", headers=headers),
        "read account A's file content": await client.get(f"/v1/files/{tenant['a_file']}/content", headers=headers),
        "delete account A's file": await client.delete(f"/v1/files/{tenant['a_file']}", headers=headers),
        "upload an SGP file": await client.post("/v4/beta/files", files={"file": ("b.txt", b"B's")}, headers=headers),
        "list SGP files": await client.get("/v4/beta/files", headers=headers),
        "read account A's SGP file": await client.get(f"/v4/beta/files/{tenant['a_sgp_file']}", headers=headers),
        "read account A's SGP file content": await client.get(
            f"/v4/beta/files/{tenant['a_sgp_file']}/content", headers=headers
        ),
        "delete account A's SGP file": await client.delete(f"/v4/beta/files/{tenant['a_sgp_file']}", headers=headers),
        "batch account A's file": await client.post(
            "/v1/batches",
            json={"input_file_id": tenant["a_file"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
            headers=headers,
        ),
        "read account A's batch": await client.get(f"/v1/batches/{tenant['a_batch']}", headers=headers),
        "cancel account A's batch": await client.post(f"/v1/batches/{tenant['a_batch']}/cancel", headers=headers),
    }
    # A key of the role's own making to rotate, so that the keys of the matrix keep
    # working; a member may make none, and is refused before any key is looked at.
    made = got["create key"]
    rotated = made.json()["id"] if made.status_code == 201 else tenant["member_key_id"]
    got["rotate a key"] = await client.post(f"/v4/api-keys/{rotated}/rotate", headers=headers)
    assert {route: response.status_code for route, response in got.items()} == {
        route: statuses[index] for route, statuses in expected.items()
    }
    if role == "admin":  # B's admin: B's events only, even asking for every account's
        events = got["audit log of every account"].json()["items"]
        assert events and {event["account_id"] for event in events} == {tenant["account"]}


# --- one test per finding ----------------------------------------------------------------


@pytest.mark.parametrize("variable", ["MODELPORT_SECRET_KEY", "MODELPORT_API_KEY", "modelport_secret_key", "HOME"])
async def test_api_key_env_names_only_what_the_operator_allows(
    client: httpx.AsyncClient, tenant: dict[str, str], variable: str
) -> None:
    response = await client.post(
        "/v4/models",
        json=openai_model(f"probe-{variable}", api_key_env=variable),
        headers={"x-api-key": tenant["admin"]},
    )
    assert response.status_code == 422
    assert "api_key_secret" in response.json()["detail"] or "modelport's own" in response.json()["detail"]


@pytest.mark.parametrize(
    "base_url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/v1",
        "http://metadata.google.internal/computeMetadata/v1",
        "http://[::ffff:169.254.169.254]/v1",
    ],
)
async def test_cloud_metadata_upstreams_are_refused(
    client: httpx.AsyncClient, tenant: dict[str, str], base_url: str
) -> None:
    response = await client.post(
        "/v4/models", json=openai_model("metadata", base_url=base_url), headers={"x-api-key": tenant["admin"]}
    )
    assert response.status_code == 422 and "denied" in response.json()["detail"]


async def test_an_account_admin_cannot_see_or_revoke_the_operators_key(
    client: httpx.AsyncClient, tenant: dict[str, str]
) -> None:
    as_b_admin = {"x-api-key": tenant["admin"]}
    everyone = await ok(await client.get("/v4/api-keys", headers={"x-selected-account-id": tenant["account"]}))
    [operator_key] = [key for key in everyone if key["name"] == "first admin key"]
    visible = await ok(await client.get("/v4/api-keys", headers=as_b_admin))
    assert operator_key["id"] not in {key["id"] for key in visible}
    assert {"b-admin", "b-member"} <= {key["name"] for key in visible}
    assert (await client.delete(f"/v4/api-keys/{operator_key['id']}", headers=as_b_admin)).status_code == 404
    assert (await client.get("/v4/models")).status_code == 200  # the operator's key still works


async def test_an_account_admin_revokes_the_accounts_service_account_keys(
    client: httpx.AsyncClient, tenant: dict[str, str]
) -> None:
    in_b = {"x-selected-account-id": tenant["account"]}
    spare = await ok(await client.post("/v4/api-keys", json={"role": "member", "name": "spare"}, headers=in_b), 201)
    await ok(await client.delete(f"/v4/api-keys/{spare['id']}", headers={"x-api-key": tenant["admin"]}))
    assert (await client.get("/v4/models", headers={"x-api-key": spare["key"]})).status_code == 401


# --- an operator's settings: upstream deny list, self-service accounts -----------------


@pytest.fixture(scope="module")
async def guarded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    data: Path = tmp_path_factory.mktemp("guarded")
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{data / 'g.db'}",
        api_key=ADMIN_KEY,
        embedded_engine=False,
        upstream_deny=["127.0.0.0/8", "::1/128"],
        upstream_attempts=1,
        account_self_service=True,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://modelport.test", headers={"x-api-key": ADMIN_KEY}, timeout=30
        ) as http:
            yield application, http


async def test_a_name_that_resolves_to_a_denied_address_is_never_connected_to(
    guarded: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _app, client = guarded
    # A name passes at creation (addresses are checked after DNS, on every connection).
    model = await ok(
        await client.post("/v4/models", json=openai_model("local", base_url=f"http://localhost:{free_port()}/v1"))
    )
    deployment = await ok(await client.post(f"/v4/models/{model['id']}/deployments", json={"name": "d"}))
    response = await client.post(
        f"/v4/models/{deployment['id']}/chat-completions", json={"chat_history": [], "prompt": "hi"}
    )
    assert response.status_code == 400
    assert "denied" in response.json()["detail"]
    # A literal address in the deny list is refused at creation.
    literal = await client.post("/v4/models", json=openai_model("literal", base_url="http://127.0.0.1:9/v1"))
    assert literal.status_code == 422 and "denied" in literal.json()["detail"]


@pytest.mark.parametrize("host", ["[::]", "[0:0:0:0:0:0:0:0]", "[::ffff:127.0.0.1]", "[::ffff:0.0.0.0]", "[::1]"])
async def test_this_host_in_every_spelling_is_denied_with_loopback(
    guarded: tuple[FastAPI, httpx.AsyncClient], host: str
) -> None:
    """Issue 21, finding 9: `[::]` reached loopback although 127.0.0.0/8 and ::1 were denied."""
    _app, client = guarded
    response = await client.post(
        "/v4/models", json=openai_model("this-host", base_url=f"http://{host}:{free_port()}/v1")
    )
    assert response.status_code == 422 and "denied" in response.json()["detail"]


async def test_with_self_service_on_any_key_holder_creates_accounts(
    guarded: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _app, client = guarded
    member = await ok(await client.post("/v4/api-keys", json={"role": "member", "name": "m"}), 201)
    created = await client.post(
        "/accounts", json={"account_name": f"mine-{uuid.uuid4().hex[:8]}"}, headers={"x-api-key": member["key"]}
    )
    assert created.status_code == 200


async def test_credentials_stored_before_the_rule_are_redacted_at_any_depth(
    app: FastAPI, client: httpx.AsyncClient, tenant: dict[str, str]
) -> None:
    from modelport.store import repo

    secret = "sk-stored-long-ago-123456"
    async with app.state.sessions() as session, session.begin():
        model = await repo.create_model(
            session,
            account_id=tenant["account"],
            name="legacy",
            model_type="CHAT_COMPLETION",
            model_vendor="OPENAI",
            model_creation_parameters={
                "model": "gpt-x",
                "openai_api_key": secret,
                "headers": {"Authorization": f"Bearer {secret}", "x-trace": "kept"},
                "extra_body": {"auth": [{"password": secret}]},
                "api_key_env": "OPENAI_API_KEY",
            },
            created_by_user_id="legacy",
            created_by_identity_type="user",
        )
    shown = await ok(await client.get(f"/v4/models/{model.id}", headers={"x-api-key": tenant["member"]}))
    assert secret not in str(shown)
    parameters = shown["model_creation_parameters"]
    assert parameters["headers"] == {"Authorization": "<redacted>", "x-trace": "kept"}
    assert parameters["api_key_env"] == "OPENAI_API_KEY"  # a reference, not a secret
