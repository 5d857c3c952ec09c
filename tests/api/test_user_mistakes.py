"""A caller's mistake is a 4xx that says what was wrong, never a 500: pagination past
any real page, nulls in required fields, NUL characters, unbounded numbers, non-JSON
bodies. Runs on SQLite and on PostgreSQL (which is the stricter of the two)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from modelport.schemas.catalogue import MAX_PAGE_NUMBER


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def refused(response: httpx.Response, *loc: str) -> dict[str, Any]:
    """A 422 in modelport's shape whose errors name `loc` (a prefix of one error's loc)."""
    assert response.status_code == 422, response.text
    body: dict[str, Any] = response.json()
    assert isinstance(body["detail"], str) and body["detail"].startswith("invalid request")
    assert any(error["loc"][: len(loc)] == list(loc) for error in body["errors"]), body
    return body


@pytest.fixture(scope="module")
async def place(client: httpx.AsyncClient) -> dict[str, Any]:
    """An account of its own, with a model and an upstream (not embedded) deployment."""
    account = await ok(await client.post("/accounts", json={"account_name": f"mistakes-{uuid.uuid4().hex[:8]}"}))
    headers = {"x-selected-account-id": account["account_id"]}
    model = await ok(
        await client.post(
            "/v4/models",
            json={
                "name": "m",
                "model_type": "CHAT_COMPLETION",
                "model_vendor": "LLMENGINE",
                # Nothing listens there: these tests are refused before any call.
                "model_creation_parameters": {"model": "m", "base_url": "http://127.0.0.1:9/v1"},
            },
            headers=headers,
        )
    )
    deployment = await ok(
        await client.post(
            f"/v4/models/{model['id']}/deployments",
            json={"name": "d", "vendor_configuration": {"vendor": "LLMENGINE"}},
            headers=headers,
        )
    )
    return {"headers": headers, "model": model["id"], "deployment": deployment["id"]}


# --- 1. pagination -----------------------------------------------------------------------

LISTS = ["/v4/models", "/v4/models/{model}/deployments", "/v4/model-deployments"]


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page=100000000000000000000", "page"),
        (f"page={MAX_PAGE_NUMBER + 1}", "page"),
        ("page=0", "page"),
        ("limit=10001", "limit"),
        ("limit=100000000000000000000", "limit"),
    ],
)
async def test_pages_past_the_bounds_are_422(
    client: httpx.AsyncClient, place: dict[str, Any], path: str, query: str, field: str
) -> None:
    response = await client.get(f"{path.format(model=place['model'])}?{query}", headers=place["headers"])
    refused(response, "query", field)


@pytest.mark.parametrize("path", LISTS)
async def test_the_last_allowed_page_with_the_largest_limit_is_empty(
    client: httpx.AsyncClient, place: dict[str, Any], path: str
) -> None:
    url = f"{path.format(model=place['model'])}?page={MAX_PAGE_NUMBER}&limit=10000"
    page = await ok(await client.get(url, headers=place["headers"]))
    assert page["items"] == [] and page["current_page"] == MAX_PAGE_NUMBER


# --- 2. nulls in fields that cannot be cleared --------------------------------------------


@pytest.mark.parametrize("field", ["name", "model_type"])
async def test_a_null_required_model_field_is_422_naming_it(
    client: httpx.AsyncClient, place: dict[str, Any], field: str
) -> None:
    url = f"/v4/models/{place['model']}"
    body = refused(await client.patch(url, json={field: None}, headers=place["headers"]), "body", field)
    assert f"{field} cannot be null" in body["detail"]
    model = await ok(await client.get(url, headers=place["headers"]))
    assert (model["name"], model["model_type"]) == ("m", "CHAT_COMPLETION")


async def test_nullable_model_fields_can_still_be_cleared(client: httpx.AsyncClient, place: dict[str, Any]) -> None:
    url = f"/v4/models/{place['model']}"
    await ok(await client.patch(url, json={"description": "temporary"}, headers=place["headers"]))
    cleared = await ok(await client.patch(url, json={"description": None}, headers=place["headers"]))
    assert "description" not in cleared and cleared["name"] == "m"


async def test_a_null_deployment_name_is_422_naming_it(client: httpx.AsyncClient, place: dict[str, Any]) -> None:
    url = f"/v4/models/{place['model']}/deployments/{place['deployment']}"
    refused(await client.patch(url, json={"name": None}, headers=place["headers"]), "body", "name")
    refused(await client.patch(url, json={"wait_for_ready": None}, headers=place["headers"]), "body", "wait_for_ready")
    deployment = await ok(await client.patch(url, json={"deployment_metadata": None}, headers=place["headers"]))
    assert deployment["name"] == "d"


async def test_the_openapi_document_does_not_offer_null_for_them(client: httpx.AsyncClient) -> None:
    schemas = (await ok(await client.get("/openapi.json")))["components"]["schemas"]
    for model, field in [("ModelUpdate", "name"), ("ModelUpdate", "model_type"), ("DeploymentUpdate", "name")]:
        declared = schemas[model]["properties"][field]
        assert "anyOf" not in declared and "default" not in declared, declared


# --- 3. NUL characters --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "loc"),
    [
        ("POST", "/v4/models/a%00b/chat-completions", "path"),
        ("POST", "/v4/models/a%00b/completions", "path"),
        ("GET", "/v4/models/a%00b", "path"),
        ("GET", "/v4/models/{model}/deployments/a%00b", "path"),
        ("DELETE", "/v4/api-keys/a%00b", "path"),
        ("PUT", "/v4/secrets/a%00b", "path"),
        ("GET", "/v4/models?model_type=a%00b", "query"),
        ("GET", "/v4/models?sort_by=name%00:asc", "query"),
    ],
)
async def test_a_nul_in_the_path_or_query_is_422(
    client: httpx.AsyncClient, place: dict[str, Any], method: str, path: str, loc: str
) -> None:
    body = {"chat_history": [], "prompt": "hi"} if method == "POST" else {"value": "v"} if method == "PUT" else None
    response = await client.request(method, path.format(model=place["model"]), json=body, headers=place["headers"])
    assert "NUL" in refused(response, loc)["detail"]


async def test_a_nul_in_a_header_is_422(app: FastAPI) -> None:
    # No HTTP server lets one through; an ASGI caller could.
    scope_headers = [(b"x-api-key", b"k"), (b"x-selected-account-id", b"a\x00b")]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v4/models",
        "raw_path": b"/v4/models",
        "query_string": b"",
        "root_path": "",
        "headers": scope_headers,
        "server": ("modelport.test", 80),
        "client": ("127.0.0.1", 1),
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 422


@pytest.mark.parametrize(
    ("method", "path", "body", "loc"),
    [
        ("POST", "/accounts", {"account_name": "a\u0000"}, ["body", "account_name"]),
        ("POST", "/v4/models", {"name": "n\u0000", "model_type": "COMPLETION"}, ["body", "name"]),
        ("PATCH", "/v4/models/{model}", {"description": "\u0000"}, ["body", "description"]),
        (
            "PATCH",
            "/v4/models/{model}/deployments/{deployment}",
            {"vendor_configuration": {"k\u0000": 1}},
            ["body", "vendor_configuration", "k\\u0000"],
        ),
        (
            "POST",
            "/v4/models/{deployment}/chat-completions",
            {"chat_history": [{"role": "user", "content": "x\u0000"}], "prompt": "hi"},
            ["body", "chat_history", "0", "content"],
        ),
        ("POST", "/v4/models/{deployment}/completions", {"prompt": "\u0000"}, ["body", "prompt"]),
        ("PUT", "/v4/secrets/s", {"value": "\u0000"}, ["body", "value"]),
        ("POST", "/v4/api-keys", {"name": "\u0000"}, ["body", "name"]),
    ],
)
async def test_a_nul_in_a_json_string_is_422_naming_the_field(
    client: httpx.AsyncClient, place: dict[str, Any], method: str, path: str, body: dict[str, Any], loc: list[str]
) -> None:
    url = path.format(model=place["model"], deployment=place["deployment"])
    response = await client.request(method, url, json=body, headers=place["headers"])
    assert "NUL" in refused(response, *loc)["detail"]


async def test_an_escaped_backslash_before_u0000_is_not_a_nul(client: httpx.AsyncClient) -> None:
    # The JSON text "a\\u0000" is the seven characters a\u0000: allowed.
    response = await client.post(
        "/accounts", content=b'{"account_name": "a\\\\u0000"}', headers={"content-type": "application/json"}
    )
    await ok(response)


# --- 4. numbers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ('"top_k": 1e30', "top_k"),
        ('"max_tokens": 100000000000000000000', "max_tokens"),
        ('"temperature": NaN', "temperature"),
        ('"top_k": 1000001', "top_k"),
        ('"max_tokens": 1000001', "max_tokens"),
        ('"top_p": Infinity', "top_p"),
        ('"chat_template_kwargs": {"x": Infinity}', "chat_template_kwargs"),
    ],
)
async def test_out_of_range_sampling_numbers_are_422(
    client: httpx.AsyncClient, place: dict[str, Any], extra: str, field: str
) -> None:
    response = await client.post(
        f"/v4/models/{place['deployment']}/chat-completions",
        content=('{"chat_history": [], "prompt": "hi", ' + extra + "}").encode(),
        headers={**place["headers"], "content-type": "application/json"},
    )
    refused(response, "body", field)


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/v4/models/{model}", b'{"model_creation_parameters": {"x": NaN}}', ["body", "model_creation_parameters"]),
        ("/v4/models/{model}", b'{"model_creation_parameters": {"x": 1e400}}', ["body", "model_creation_parameters"]),
        ("/v4/models/{model}", b'{"display_name": "' + b"x" * 201 + b'"}', ["body", "display_name"]),
        (
            "/v4/models/{model}",
            b'{"base_model_metadata": {"modelDetails": {"token_context_window": 100000000000000000000}}}',
            ["body", "base_model_metadata"],
        ),
        (
            "/v4/models/{model}/deployments/{deployment}",
            b'{"deployment_metadata": {"n": 100000000000000000000000}}',
            ["body", "deployment_metadata"],
        ),
        (
            "/v4/models/{model}/deployments/{deployment}",
            b'{"deployment_metadata": ' + b'{"a": ' * 100 + b"1" + b"}" * 100 + b"}",
            ["body", "deployment_metadata"],
        ),
    ],
)
async def test_values_no_database_or_encoder_takes_back_are_422(
    client: httpx.AsyncClient, place: dict[str, Any], path: str, body: bytes, loc: list[str]
) -> None:
    url = path.format(model=place["model"], deployment=place["deployment"])
    response = await client.patch(url, content=body, headers={**place["headers"], "content-type": "application/json"})
    refused(response, *loc)


# --- 5. content types -------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None])
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/accounts", '{"account_name": "x"}'),
        ("POST", "/v4/models/{deployment}/chat-completions", '{"chat_history": [], "prompt": "hi"}'),
        ("PATCH", "/v4/models/{model}", '{"description": "x"}'),
        ("PUT", "/v4/secrets/s", '{"value": "v"}'),
    ],
)
async def test_a_body_that_is_not_json_is_415(
    client: httpx.AsyncClient, place: dict[str, Any], method: str, path: str, body: str, content_type: str | None
) -> None:
    url = path.format(model=place["model"], deployment=place["deployment"])
    request = client.build_request(method, url, content=body.encode(), headers=place["headers"])
    assert "content-type" not in request.headers  # httpx sets none for raw content
    if content_type is not None:
        request.headers["content-type"] = content_type
    response = await client.send(request)
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["detail"]


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"]
)
async def test_json_content_types_are_accepted(
    client: httpx.AsyncClient, place: dict[str, Any], content_type: str
) -> None:
    response = await client.patch(
        f"/v4/models/{place['model']}",
        content=b'{"description": "typed"}',
        headers={**place["headers"], "content-type": content_type},
    )
    assert (await ok(response))["description"] == "typed"


async def test_a_structured_json_suffix_is_accepted_and_a_foreign_charset_is_not(
    client: httpx.AsyncClient, place: dict[str, Any]
) -> None:
    url = f"/v4/models/{place['deployment']}/chat-completions"
    content = b'{"chat_history": [], "prompt": "hi", "top_k": 1e30}'
    # Accepted as JSON: the 422 is about top_k, not about the content type.
    response = await client.post(
        url, content=content, headers={**place["headers"], "content-type": "application/vnd.modelport+json"}
    )
    refused(response, "body", "top_k")
    latin = await client.post(
        url, content=content, headers={**place["headers"], "content-type": "application/json; charset=latin-1"}
    )
    assert latin.status_code == 415


async def test_requests_without_a_body_need_no_content_type(client: httpx.AsyncClient, place: dict[str, Any]) -> None:
    account = place["headers"]
    await ok(await client.get("/v4/models", headers=account))
    await ok(await client.get("/health"))
    model = await ok(
        await client.post("/v4/models", json={"name": "gone", "model_type": "COMPLETION"}, headers=account)
    )
    request = client.build_request("DELETE", f"/v4/models/{model['id']}", headers=account)
    assert "content-type" not in request.headers
    await ok(await client.send(request))
    # A POST with no body at all is the route's own 422 (the body is missing), not a 415.
    empty = await client.post("/accounts", headers=account)
    refused(empty, "body")


# --- 6. the OpenAPI document says what is sent and answered -----------------------------


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [ref for key, inner in value.items() for ref in ([inner] if key == "$ref" else _refs(inner))]
    if isinstance(value, list):
        return [ref for inner in value for ref in _refs(inner)]
    return []


async def test_openapi_declares_the_inference_bodies_and_the_real_422(client: httpx.AsyncClient) -> None:
    document = await ok(await client.get("/openapi.json"))
    schemas = document["components"]["schemas"]
    for route, model in [("chat-completions", "ChatCompletionRequest"), ("completions", "CompletionRequest")]:
        operation = document["paths"][f"/v4/models/{{model_deployment_id}}/{route}"]["post"]
        body = operation["requestBody"]
        assert body["required"] is True
        assert body["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model}"}
        assert "prompt" in schemas[model]["required"]
        assert schemas[model]["properties"]["top_k"]["anyOf"][0]["maximum"] == 1_000_000
        assert "415" in operation["responses"]
    assert "chat_history" in schemas["ChatCompletionRequest"]["required"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if "422" in operation["responses"]:
                shape = operation["responses"]["422"]["content"]["application/json"]["schema"]
                assert shape == {"$ref": "#/components/schemas/ValidationErrorResponse"}, (method, path)
    assert set(schemas["ValidationErrorResponse"]["properties"]) == {"detail", "errors"}
    assert set(schemas["FieldError"]["properties"]) == {"loc", "msg", "type"}
    # Every reference resolves.
    for ref in _refs(document):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


async def test_the_hand_parsed_body_still_wins_over_the_declared_one(
    client: httpx.AsyncClient, place: dict[str, Any]
) -> None:
    # The route reads its body itself: a declared body does not make FastAPI parse it too.
    response = await client.post(
        f"/v4/models/{place['deployment']}/chat-completions",
        content=b'{"prompt": "hi", "chat_history": [',
        headers={**place["headers"], "content-type": "application/json"},
    )
    body = refused(response, "body")
    assert "json" in body["detail"].lower()


# --- found by schemathesis ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        ("0001-01-01T00:00:00+01:00", "2020-01-01T00:00:00Z", "start_date"),  # before year 1 in UTC
        ("2020-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00", "end_date"),  # after year 9999 in UTC
    ],
)
async def test_usage_times_without_a_utc_equivalent_are_422(
    client: httpx.AsyncClient, place: dict[str, Any], start: str, end: str, field: str
) -> None:
    response = await client.get(
        f"/v4/model-deployments/{place['deployment']}/usage-statistics",
        params={"start_date": start, "end_date": end, "chunks": 2},
        headers=place["headers"],
    )
    refused(response, "query", field)


async def test_usage_over_the_whole_range_of_times_is_fine(client: httpx.AsyncClient, place: dict[str, Any]) -> None:
    usage = await ok(
        await client.get(
            f"/v4/model-deployments/{place['deployment']}/usage-statistics",
            params={"start_date": "0001-01-01T00:00:00Z", "end_date": "9999-12-31T23:59:59Z", "chunks": 10_000},
            headers=place["headers"],
        )
    )
    assert len(usage["data"]) == 10_000
    # One more than the bound: 422 naming it.
    over = await client.get(
        f"/v4/model-deployments/{place['deployment']}/usage-statistics",
        params={"start_date": "2026-01-01T00:00:00Z", "end_date": "2026-01-02T00:00:00Z", "chunks": 10_001},
        headers=place["headers"],
    )
    assert over.status_code == 422 and "10000" in over.text and "chunks" in over.text


async def test_an_oversized_body_sent_without_a_length_is_still_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"account_name": "'
        for _ in range(40):
            yield b"x" * 10_000  # 400 kB, over the test app's 256 KiB
        yield b'"}'

    response = await client.post("/accounts", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text


async def test_a_model_name_on_the_deployment_route_says_where_ids_are_and_where_names_go(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v4/models/smollm2-135m-instruct/chat-completions", json={"chat_history": [], "prompt": "Hi"}
    )
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "smollm2-135m-instruct" in detail and "GET /v4/model-deployments" in detail
    assert "/v1/chat/completions" in detail
