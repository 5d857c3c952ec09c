"""The audit log (issue 24, 4; SPEC 10): every route that changes the catalogue writes
events naming who (key, identity, role), the request id, what, before and after, with
no secret in them; `GET /v4/audit-events` shows an account's events to its admins,
every account's to operators, none to members; nothing changes or deletes them. Through
the real application, on SQLite and PostgreSQL, and the `modelport audit` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from fastapi import FastAPI

from modelport.api.app import create_app
from modelport.catalogue.keys import hash_key
from modelport.config import Settings
from modelport.schemas.audit import ObjectType
from modelport.store.audit import AUDITED
from modelport.store.tables import Base
from tests.conftest import ADMIN_KEY

SECRET_VALUE = "sk-audit-" + uuid.uuid4().hex
TEMPLATE = {"name": "t", "model_type": "CHAT_COMPLETION", "endpoint_type": "SYNC",
            "vendor_configuration": {"bundle_config": {"image": "i", "registry": "r", "tag": "1"}}}  # fmt: skip
# The operations that write no catalogue object, and why.
NOT_CATALOGUE = {
    "POST /v4/models/{model_deployment_id}/chat-completions": "inference",
    "POST /v4/models/{model_deployment_id}/completions": "inference",
    "POST /v4/models/{model_deployment_id}/embeddings": "inference",
    "POST /v4/models/{model_deployment_id}/rerankings": "inference",
    "POST /v4/beta/chat/completions": "inference",
    "POST /v4/beta/completions": "inference",
    "POST /v4/chat-completions": "inference",
    "POST /v4/completions": "inference",
    "POST /v4/models/{model_instance_id}/deployments/{deployment_id}/execute": "inference",
    "POST /v1/chat/completions": "inference",
    "POST /v1/completions": "inference",
    "POST /v1/embeddings": "inference",
    "POST /v1/messages": "inference",
    "POST /v1/messages/count_tokens": "inference",
    "POST /v1/responses": "inference (a stored response is the answer, not the catalogue)",
    "DELETE /v1/responses/{response_id}": "a stored answer, not the catalogue",
    "POST /v1/responses/{response_id}/cancel": "a stored answer, not the catalogue",
    "POST /v1/files": "a file of requests or answers, not the catalogue",
    "DELETE /v1/files/{file_id}": "a file of requests or answers, not the catalogue",
    "POST /v4/beta/files": "a file of the SGP SDK's (kept as /v1/files' are), not the catalogue",
    "DELETE /v4/beta/files/{file_id}": "a file of the SGP SDK's, not the catalogue",
    "POST /v1/batches": "inference in the background (each line is recorded as usage)",
    "POST /v1/batches/{batch_id}/cancel": "inference in the background, not the catalogue",
    "POST /v1/messages/batches": "inference in the background (each request is recorded as usage)",
    "POST /v1/messages/batches/{message_batch_id}/cancel": "inference in the background, not the catalogue",
    "DELETE /v1/messages/batches/{message_batch_id}": "a batch's answers, not the catalogue",
}
# The tables that are not the catalogue, and why they are not audited.
NOT_AUDITED = {
    "usage_records": "what requests used, written per request",
    "stored_responses": "answers kept for /v1/responses",
    "batch_files": "files of requests and answers (/v1/files), and the SGP SDK's (/v4/beta/files)",
    "batch_file_chunks": "the bytes of those files",
    "batches": "batches of requests run in the background, with their leases",
    "batch_lines": "what each line of a batch came to",
    "registry_generation": "the caches' change counter",
    "audit_events": "the log itself",
}


@pytest.fixture(scope="module")
async def served(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    settings = Settings(
        database_url=database_url, api_key=ADMIN_KEY, embedded_engine=False, secret_key="audit-" + "s" * 40
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="module")
async def client(served: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=served)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://modelport.test", headers={"x-api-key": ADMIN_KEY}
    ) as http:
        yield http


async def _events(client: httpx.AsyncClient, **query: Any) -> list[dict[str, Any]]:
    answer = await client.get("/v4/audit-events", params={"limit": 1000, **query})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


def _ok(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code < 300, f"{answer.request.method} {answer.request.url}: {answer.text}"
    return answer.json() if answer.content else {}


async def test_every_route_that_changes_the_catalogue_writes_its_events(
    served: FastAPI, client: httpx.AsyncClient
) -> None:
    """Each catalogue-changing operation of the OpenAPI document is called once; the
    events of its request id say who did what. A new such route fails this test until it
    is listed here, and fails it again if it writes no event."""
    me = _ok(await client.get("/user-info"))
    admin_keys = {key["id"] for key in _ok(await client.get("/v4/api-keys")) if key["identity_id"] == me["id"]}
    ids: dict[str, str] = {}

    async def account() -> httpx.Response:
        answer = await client.post("/accounts", json={"account_name": f"a-{uuid.uuid4().hex[:6]}"})
        ids["account"] = _ok(answer)["account_id"]
        return answer

    async def model() -> httpx.Response:
        answer = await client.post(
            "/v4/models",
            json={"name": f"m-{uuid.uuid4().hex[:6]}", "model_type": "CHAT_COMPLETION", "model_vendor": "OTHER",
                  "model_creation_parameters": {"base_url": "http://upstream.test/v1", "model": "up"}},
        )  # fmt: skip
        ids["model"] = _ok(answer)["id"]
        return answer

    async def deployment() -> httpx.Response:
        answer = await client.post(f"/v4/models/{ids['model']}/deployments", json={"name": "d"})
        ids["deployment"] = _ok(answer)["id"]
        return answer

    async def key() -> httpx.Response:
        answer = await client.post("/v4/api-keys", json={"role": "member", "name": "audited"})
        ids["key"], ids["key_secret"] = _ok(answer)["id"], answer.json()["key"]
        return answer

    async def rotation() -> httpx.Response:
        answer = await client.post(f"/v4/api-keys/{ids['key']}/rotate", json={"grace_seconds": 60})
        ids["rotated_secret"] = _ok(answer)["key"]
        return answer

    async def group() -> httpx.Response:
        answer = await client.post("/v4/model-groups", json={"name": f"g-{uuid.uuid4().hex[:6]}"})
        ids["group"] = _ok(answer)["id"]
        return answer

    async def template() -> httpx.Response:
        answer = await client.post("/v4/model-templates", json=TEMPLATE)
        ids["template"] = _ok(answer)["id"]
        return answer

    deployment_path = "/v4/models/{model_instance_id}/deployments/{deployment_id}"
    calls: dict[str, tuple[Callable[[], Awaitable[httpx.Response]], str]] = {
        "POST /accounts": (account, "account"),
        "PATCH /v4/accounts/{account_id}/limits": (lambda: client.patch(
            f"/v4/accounts/{ids['account']}/limits", json={"max_budget": 50, "budget_duration": "30d"}), "account"),
        "POST /v4/models": (model, "model"),
        "PATCH /v4/models/{model_id}": (lambda: client.patch(f"/v4/models/{ids['model']}",
                                                             json={"description": "audited"}), "model"),
        "POST /v4/models/{model_instance_id}/deployments": (deployment, "deployment"),
        f"PATCH {deployment_path}": (lambda: client.patch(
            f"/v4/models/{ids['model']}/deployments/{ids['deployment']}", json={"name": "renamed"}), "deployment"),
        "POST /v4/api-keys": (key, "api_key"),
        "PATCH /v4/api-keys/{key_id}": (lambda: client.patch(f"/v4/api-keys/{ids['key']}", json={"rpm_limit": 5}),
                                        "api_key"),
        "POST /v4/api-keys/{key_id}/rotate": (rotation, "api_key"),
        "PUT /v4/secrets/{name}": (lambda: client.put("/v4/secrets/vendor", json={"value": SECRET_VALUE}), "secret"),
        "POST /v4/model-groups": (group, "model_group"),
        "PATCH /v4/model-groups/{model_group_id}": (lambda: client.patch(f"/v4/model-groups/{ids['group']}",
                                                                         json={"description": "x"}), "model_group"),
        "POST /v4/model-groups/{model_group_id}/models/{model_instance_id}": (lambda: client.post(
            f"/v4/model-groups/{ids['group']}/models/{ids['model']}"), "model"),
        "POST /v4/model-templates": (template, "model_template"),
        # Deletions last, each of what the calls above made.
        "DELETE /v4/secrets/{name}": (lambda: client.delete("/v4/secrets/vendor"), "secret"),
        "DELETE /v4/api-keys/{key_id}": (lambda: client.delete(f"/v4/api-keys/{ids['key']}"), "api_key"),
        f"DELETE {deployment_path}": (lambda: client.delete(
            f"/v4/models/{ids['model']}/deployments/{ids['deployment']}"), "deployment"),
        "DELETE /v4/models/{model_id}": (lambda: client.delete(f"/v4/models/{ids['model']}"), "model"),
        "DELETE /v4/model-groups/{model_group_id}": (lambda: client.delete(f"/v4/model-groups/{ids['group']}"),
                                                     "model_group"),
        "DELETE /v4/model-templates/{model_template_id}": (lambda: client.delete(
            f"/v4/model-templates/{ids['template']}"), "model_template"),
    }  # fmt: skip
    document = served.openapi()
    mutating = {
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method in operations
        if method in ("post", "put", "patch", "delete")
    }
    assert mutating - set(NOT_CATALOGUE) == set(calls), "a route that changes the catalogue is not audited here"

    mine: set[str] = set()  # the request ids of the calls below
    for operation, (call, object_type) in calls.items():
        answer = await call()
        _ok(answer)
        request_id = answer.headers["x-request-id"]
        mine.add(request_id)
        events = [event for event in await _events(client, all_accounts="true") if event["request_id"] == request_id]
        assert object_type in {event["object_type"] for event in events}, f"{operation} wrote no {object_type} event"
        for event in events:
            actor = event["actor"]
            assert (actor["kind"], actor["identity_id"], actor["role"]) == ("key", me["id"], "operator")
            assert actor["key_id"] in admin_keys

    every = await _events(client, all_accounts="true")
    dumped = json.dumps(every)
    assert SECRET_VALUE not in dumped and ids["key_secret"] not in dumped and "key_hash" not in dumped
    assert "ciphertext" not in dumped
    # A rotation is the key's update: neither secret nor either hash is in it.
    rotated = ids["rotated_secret"]
    assert rotated not in dumped and hash_key(rotated) not in dumped and hash_key(ids["key_secret"]) not in dumped
    [rotation_event] = [e for e in every if e["object_type"] == "api_key" and e["action"] == "update" and
                        e["object_id"] == ids["key"] and "previous_key_retired_at" in (e["after"] or {})]  # fmt: skip
    assert rotation_event["after"]["display_prefix"] == rotated[:10]
    [patched] = [e for e in every if e["object_type"] == "api_key" and e["action"] == "update" and
                 e["object_id"] == ids["key"] and "rpm_limit" in (e["after"] or {})]  # fmt: skip
    assert (patched["before"]["rpm_limit"], patched["after"]["rpm_limit"]) == (None, 5)
    limited = [e for e in every if e["object_type"] == "account" and e["action"] == "update" and
               e["object_id"] == ids["account"]]  # fmt: skip
    assert [(e["before"], e["after"]) for e in limited] == [
        ({"max_budget": None, "budget_duration": None, "budget_started_at": None},
         {"max_budget": 50.0, "budget_duration": "30d", "budget_started_at": limited[0]["after"]["budget_started_at"]})
    ], limited  # fmt: skip
    # This test's own events only: other modules on a shared database write theirs.
    [renamed] = [e for e in every if e["object_type"] == "deployment" and e["action"] == "update" and
                 e["object_id"] == ids["deployment"]]  # fmt: skip
    assert (renamed["before"], renamed["after"]) == ({"name": "d"}, {"name": "renamed"})
    secrets = [e for e in every if e["object_type"] == "secret" and e["request_id"] in mine]
    assert [(e["action"], e["object_id"]) for e in secrets] == [("delete", "vendor"), ("create", "vendor")]


async def test_admins_read_their_accounts_events_operators_every_accounts_members_none(
    client: httpx.AsyncClient,
) -> None:
    account = _ok(await client.post("/accounts", json={"account_name": f"b-{uuid.uuid4().hex[:6]}"}))["account_id"]
    there = {"x-selected-account-id": account}
    admin = _ok(await client.post("/v4/api-keys", json={"role": "admin", "name": "b-admin"}, headers=there))["key"]
    member = _ok(await client.post("/v4/api-keys", json={"role": "member", "name": "b-member"}, headers=there))["key"]
    _ok(await client.post("/v4/model-groups", json={"name": "b-group"}, headers={"x-api-key": admin}))
    seen = await client.get("/v4/audit-events", headers={"x-api-key": admin})
    assert seen.status_code == 200
    assert seen.json()["items"] and {event["account_id"] for event in seen.json()["items"]} == {account}
    # Even asking for every account, an admin gets their own.
    asked = await client.get("/v4/audit-events", params={"all_accounts": "true"}, headers={"x-api-key": admin})
    assert {event["account_id"] for event in asked.json()["items"]} == {account}
    assert (await client.get("/v4/audit-events", headers={"x-api-key": member})).status_code == 403
    everywhere = {event["account_id"] for event in await _events(client, all_accounts="true")}
    assert account in everywhere and len(everywhere) > 1
    groups = await _events(client, all_accounts="true", object_type="model_group", actor=seen.json()["items"][0]
                           ["actor"]["key_id"])  # fmt: skip
    assert [event["after"]["name"] for event in groups] == ["b-group"]


async def test_no_route_changes_or_deletes_an_event(served: FastAPI, client: httpx.AsyncClient) -> None:
    methods = set(served.openapi()["paths"]["/v4/audit-events"])
    assert methods == {"get"}
    for method in ("PUT", "PATCH", "DELETE", "POST"):
        assert (await client.request(method, "/v4/audit-events")).status_code == 405


def test_every_table_is_audited_or_says_why_not() -> None:
    audited = {table.__tablename__ for table in AUDITED}
    assert set(Base.metadata.tables) == audited | set(NOT_AUDITED)
    assert set(get_args(ObjectType)) == set(AUDITED.values())


def test_the_cli_writes_as_its_user_and_lists_the_changes(tmp_path: Path) -> None:
    env = {**os.environ, "MODELPORT_DATABASE_URL": f"sqlite:///{tmp_path / 'modelport.db'}"}
    modelport = str(Path(sys.executable).parent / "modelport")

    def run(*args: str) -> str:
        done = subprocess.run([modelport, *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    account = run("accounts", "create", "audited-team").strip()
    events = json.loads(run("audit", "--json"))
    [created] = [event for event in events if event["object_type"] == "account"]
    assert created["object_id"] == account and created["actor"]["kind"] == "cli" and created["actor"]["name"]
    assert created["after"]["name"] == "audited-team"


async def test_a_large_value_is_not_copied_into_the_log(client: httpx.AsyncClient) -> None:
    """A 4 MiB body would otherwise be written twice (before and after) per change, and
    kept for a year: a value over 16 KiB is named by its size instead."""
    body = {"name": f"big-{uuid.uuid4().hex[:6]}", "model_type": "CHAT_COMPLETION", "model_vendor": "OTHER"}
    model = _ok(await client.post("/v4/models", json=body))
    card = "x" * 100_000
    answer = await client.patch(f"/v4/models/{model['id']}", json={"model_card": card})
    _ok(answer)
    [event] = [e for e in await _events(client, object_id=model["id"]) if e["action"] == "update"]
    assert event["after"]["model_card"] == {
        "omitted": "100002 bytes, more than the 16384 an audit event keeps of a value"
    }
    assert card not in json.dumps(event)
